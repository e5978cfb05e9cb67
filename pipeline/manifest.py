"""The run manifest: one row per input, written as ``manifest.parquet`` and ``manifest.csv``.

Both files are rewritten atomically (temporary file, fsync, rename) every time a video finishes,
so a run that is killed leaves a manifest of what had finished; inputs not finished yet are
``pending`` there. Columns, in order:

| column | meaning |
|---|---|
| ``path`` | the input, relative to the input root |
| ``video_id`` | its output folder, relative to the output root |
| ``status`` | ``ok``, ``failed``, ``skipped`` (not attempted: ``--fail-fast`` stopped the run) or ``pending`` (only in the manifest of a run that did not finish) |
| ``reused`` | ``True`` when ``--resume`` found the outputs complete and did not recompute them |
| ``error_type`` | exception class name for a failed or skipped row (``DecodeError``, ``WorkerCrash``, ``TimeoutError`` ...) |
| ``error`` | the reason in words |
| ``frames`` / ``pairs`` | frames decoded and flow pairs written |
| ``seconds_<stage>`` | time spent per stage and ``seconds_total`` (empty when not run) |
| ``outputs`` | JSON object: output name -> path relative to the output root |
| ``config_hash`` | hash of the run's configuration (see ``config.yaml``) |
| ``warnings`` | JSON list of the problems met while decoding |
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from models.atomic_files import atomic_path

MANIFEST_CSV = "manifest.csv"
MANIFEST_PARQUET = "manifest.parquet"
_FIRST_STAGES = ("decode", "flow", "writers", "write")


@dataclass
class Outcome:
    """What happened to one input: the fields a run's result and its manifest row share (see
    the module docstring for each)."""

    path: str
    video_id: str
    status: str = "pending"
    error_type: str = ""
    error: str = ""
    frames: int = 0
    pairs: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def outcome(self) -> dict[str, Any]:
        """The :class:`Outcome` fields by name, containers copied."""
        return {f.name: copy.copy(getattr(self, f.name)) for f in dataclasses.fields(Outcome)}


@dataclass
class ManifestRow(Outcome):
    """One input's row: its :class:`Outcome`, whether it was reused, and the config's hash."""

    reused: bool = False
    config_hash: str = ""


def relative_outputs(outputs: dict[str, str], out_root: Path) -> dict[str, str]:
    """Output paths relative to the output root (POSIX separators) where they lie below it."""
    root = os.path.abspath(out_root)
    relative = {}
    for name, value in outputs.items():
        absolute = os.path.abspath(value)
        if os.path.commonpath([root, absolute]) == root:
            value = os.path.relpath(absolute, root).replace(os.sep, "/")
        relative[name] = value
    return relative


def _seconds_columns(rows: Sequence[ManifestRow]) -> list[str]:
    names = {name for row in rows for name in row.seconds}
    first = [name for name in _FIRST_STAGES if name in names]
    rest = sorted(names - set(first) - {"total"})
    return first + rest + (["total"] if "total" in names else [])


def to_frame(rows: Sequence[ManifestRow]) -> pd.DataFrame:
    """The manifest as a table (columns as in the module docstring)."""
    stages = _seconds_columns(rows)
    columns: dict[str, list] = {
        "path": [r.path for r in rows],
        "video_id": [r.video_id for r in rows],
        "status": [r.status for r in rows],
        "reused": [bool(r.reused) for r in rows],
        "error_type": [r.error_type for r in rows],
        "error": [r.error for r in rows],
        "frames": [int(r.frames) for r in rows],
        "pairs": [int(r.pairs) for r in rows],
    }
    for stage in stages:
        columns[f"seconds_{stage}"] = [r.seconds.get(stage) for r in rows]
    columns["outputs"] = [json.dumps(r.outputs, sort_keys=True, ensure_ascii=False) for r in rows]
    columns["config_hash"] = [r.config_hash for r in rows]
    columns["warnings"] = [json.dumps(r.warnings, ensure_ascii=False) for r in rows]
    frame = pd.DataFrame(columns)
    for stage in stages:
        frame[f"seconds_{stage}"] = frame[f"seconds_{stage}"].astype("float64")
    return frame.astype({"frames": "int64", "pairs": "int64", "reused": "bool"})


def write_manifest(rows: Sequence[ManifestRow], out_root: str | Path) -> tuple[Path, Path]:
    """Writes ``manifest.parquet`` and ``manifest.csv`` (UTF-8) atomically; returns both paths.

    Output paths below ``out_root`` are stored relative to it.
    """
    root = Path(out_root)
    rows = [dataclasses.replace(r, outputs=relative_outputs(r.outputs, root)) for r in rows]
    frame = to_frame(rows)
    parquet, csv = root / MANIFEST_PARQUET, root / MANIFEST_CSV
    with atomic_path(parquet) as temporary:
        frame.to_parquet(temporary, index=False)
    with atomic_path(csv) as temporary:
        frame.to_csv(temporary, index=False, encoding="utf-8", lineterminator="\n")
    return parquet, csv


def read_manifest(out_root: str | Path) -> pd.DataFrame:
    """The manifest of an output folder (from the Parquet file)."""
    return pd.read_parquet(Path(out_root) / MANIFEST_PARQUET)


def has_manifest(out_root: str | Path) -> bool:
    root = Path(out_root)
    return (root / MANIFEST_PARQUET).exists() or (root / MANIFEST_CSV).exists()
