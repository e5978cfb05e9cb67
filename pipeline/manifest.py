"""The run manifest: one row per input, written as ``manifest.parquet`` and ``manifest.csv``.

Both files are rewritten atomically (temporary file, fsync, rename) as videos finish, so a run
that is killed leaves a manifest of what had finished; inputs not finished yet are ``pending``
there. A run rewrites them after every video unless the writing would take more than
:data:`MAX_WRITE_SHARE` of its time (a folder of thousands of short videos: each rewrite grows
with the row count); then a video that finished since the last write stays ``pending`` in a
killed run's manifest until ``--resume``, which trusts only ``meta.json``, finds it complete. The
manifest is always written when the run ends or is interrupted. Columns, in order:

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
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.atomic_files import atomic_path

logger = logging.getLogger(__name__)

MANIFEST_CSV = "manifest.csv"
MANIFEST_PARQUET = "manifest.parquet"
MAX_WRITE_SHARE = 0.05
"""A run keeps the time spent rewriting its manifest under this share of its time (see above)."""
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


def utf8_text(text: str) -> str:
    """``text`` as valid UTF-8 text: a file name that is not UTF-8 (Python holds its bytes as
    lone surrogates) gets its undecodable bytes written ``\\xe9``, which the manifest files,
    the logs and the terminal can all hold (Arrow and the CSV writer refuse lone surrogates)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def relative_outputs(outputs: dict[str, str], out_root: str | Path) -> dict[str, str]:
    """Output paths relative to the output root (POSIX separators) where they lie below it."""
    root = os.path.abspath(out_root)
    cwd = os.getcwd()
    relative = {}
    for name, value in outputs.items():
        absolute = os.path.normpath(os.path.join(cwd, value))
        if os.path.commonpath([root, absolute]) == root:
            value = os.path.relpath(absolute, root).replace(os.sep, "/")
        relative[name] = value
    return relative


def _cells(row: ManifestRow, out_root: str | Path | None) -> dict[str, Any]:
    """A row's table cells; ``seconds`` stays a dict until the table knows every stage."""
    outputs = row.outputs if out_root is None else relative_outputs(row.outputs, out_root)
    return {
        "path": utf8_text(row.path),
        "video_id": utf8_text(row.video_id),
        "status": row.status,
        "reused": bool(row.reused),
        "error_type": row.error_type,
        "error": utf8_text(row.error),
        "frames": int(row.frames),
        "pairs": int(row.pairs),
        "seconds": row.seconds,
        "outputs": utf8_text(json.dumps(outputs, sort_keys=True, ensure_ascii=False)),
        "config_hash": row.config_hash,
        "warnings": utf8_text(json.dumps(row.warnings, ensure_ascii=False)),
    }


def _seconds_columns(cells: Sequence[dict[str, Any]]) -> list[str]:
    names = {name for c in cells for name in c["seconds"]}
    first = [name for name in _FIRST_STAGES if name in names]
    rest = sorted(names - set(first) - {"total"})
    return first + rest + (["total"] if "total" in names else [])


def _table(cells: Sequence[dict[str, Any]]) -> pd.DataFrame:
    stages = _seconds_columns(cells)
    columns: dict[str, Any] = {
        name: [c[name] for c in cells] for name in ("path", "video_id", "status")
    }
    columns["reused"] = np.array([c["reused"] for c in cells], dtype=bool)
    columns["error_type"] = [c["error_type"] for c in cells]
    columns["error"] = [c["error"] for c in cells]
    columns["frames"] = np.array([c["frames"] for c in cells], dtype=np.int64)
    columns["pairs"] = np.array([c["pairs"] for c in cells], dtype=np.int64)
    for stage in stages:
        seconds = [c["seconds"].get(stage) for c in cells]
        columns[f"seconds_{stage}"] = np.array(seconds, dtype=np.float64)  # None -> NaN
    for name in ("outputs", "config_hash", "warnings"):
        columns[name] = [c[name] for c in cells]
    return pd.DataFrame(columns)


def to_frame(rows: Sequence[ManifestRow]) -> pd.DataFrame:
    """The manifest as a table (columns as in the module docstring), outputs as given."""
    return _table([_cells(r, None) for r in rows])


def _write_table(frame: pd.DataFrame, root: Path) -> tuple[Path, Path]:
    parquet, csv = root / MANIFEST_PARQUET, root / MANIFEST_CSV
    with atomic_path(parquet) as temporary:
        frame.to_parquet(temporary, index=False)
    with atomic_path(csv) as temporary:
        frame.to_csv(temporary, index=False, encoding="utf-8", lineterminator="\n")
    return parquet, csv


def write_manifest(rows: Sequence[ManifestRow], out_root: str | Path) -> tuple[Path, Path]:
    """Writes ``manifest.parquet`` and ``manifest.csv`` (UTF-8) atomically; returns both paths.

    Output paths below ``out_root`` are stored relative to it.
    """
    return _write_table(_table([_cells(r, out_root) for r in rows]), Path(out_root))


class RunManifest:
    """The manifest of a run in progress: rows change one at a time, the files follow.

    A row is turned into table cells once, when it is set (relative paths, JSON), so a rewrite
    costs a table of ready cells, not a pass over every row's outputs. :meth:`save` rewrites
    both files unless the rewrites so far would then exceed :data:`MAX_WRITE_SHARE` of the time
    since the manifest was created; ``force=True`` always writes.
    """

    def __init__(self, rows: Sequence[ManifestRow], out_root: str | Path) -> None:
        self.out_root = Path(out_root)
        self._cells = [_cells(r, self.out_root) for r in rows]
        self._unsaved = True
        self._started = time.perf_counter()
        self._writing = 0.0  # seconds spent writing so far
        self.error: OSError | None = None  # why the last write failed; None once one succeeds

    def set(self, index: int, row: ManifestRow) -> None:
        self._cells[index] = _cells(row, self.out_root)
        self._unsaved = True

    def save(self, *, force: bool = False) -> bool:
        """Writes the manifest if it changed and the time budget allows; True if it wrote.

        Never raises for a failed write (disk full, folder made read-only): the error is kept
        in :attr:`error` (logged the first time) and the rows stay unsaved, so the next call
        tries again.
        """
        if not self._unsaved:
            return False
        start = time.perf_counter()
        if not force and self._writing > MAX_WRITE_SHARE * (start - self._started):
            return False
        try:
            _write_table(_table(self._cells), self.out_root)
        except OSError as exc:
            if self.error is None:
                logger.error("could not write the manifest (tried again later): %s", exc)
            self.error = exc
            return False
        finally:
            self._writing += time.perf_counter() - start
        self.error = None
        self._unsaved = False
        return True


def read_manifest(out_root: str | Path) -> pd.DataFrame:
    """The manifest of an output folder (from the Parquet file)."""
    return pd.read_parquet(Path(out_root) / MANIFEST_PARQUET)


def read_manifest_csv(out_root: str | Path) -> pd.DataFrame:
    """The manifest of an output folder from its CSV twin, ``path``, ``video_id`` and
    ``status`` as written: text, so that the ids of a flat folder of ``001.mp4``,
    ``002.mp4`` stay ``001``, ``002`` (pandas would read an all-digit column as the integers
    1, 2, which name no output folder)."""
    text = {"path": str, "video_id": str, "status": str}
    return pd.read_csv(Path(out_root) / MANIFEST_CSV, dtype=text, keep_default_na=False)


def has_manifest(out_root: str | Path) -> bool:
    root = Path(out_root)
    return (root / MANIFEST_PARQUET).exists() or (root / MANIFEST_CSV).exists()
