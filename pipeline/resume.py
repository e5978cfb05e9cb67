"""What ``--resume`` keeps and what it redoes, and which folders a run may not leave behind.

A finished video (its ``meta.json`` says ``"status": "ok"`` under its own id) is kept when its
results hash equals the run's (:func:`pipeline.run_start.results_hash`) and its input has the
size and modification time its ``meta.json`` recorded and its output files are all there with
the sizes recorded (none deleted or cut short since); every other finished video is redone,
and the reasons are counted in words for the run to report before it starts.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .discovery import VideoJob
from .manifest import has_manifest, read_manifest, read_manifest_csv
from .run_start import (
    LATER_SETTINGS,
    Estimator,
    RunStartError,
    describe_estimator,
    key_differences,
)
from .runner import input_fingerprint


def finished_meta(out_dir: Path, video_id: str) -> dict | None:
    """``meta.json`` of a complete video with this id (any configuration), else ``None``."""
    try:
        meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    return meta if meta.get("status") == "ok" and meta.get("video_id") == video_id else None


def _why_redone(meta: dict, key: dict) -> str:
    """Why a finished video does not match the run's results key, in words."""
    old = meta.get("results_key")
    if not isinstance(old, dict):
        return "made by an earlier motionpipe version (its meta.json has no results_key)"
    old, key = _with_later_defaults(old), _with_later_defaults(key)
    return ", ".join(key_differences(old, key)) or "its meta.json records another results hash"


def _with_later_defaults(key: dict) -> dict:
    """``key`` with the :data:`LATER_SETTINGS` a results key leaves out at their default filled
    in, so that a change reads ``False -> True``, not ``None -> True``."""
    filled = {
        name: dict(value) if isinstance(value, dict) else value for name, value in key.items()
    }
    for section, name, default in LATER_SETTINGS:
        if isinstance(filled.get(section), dict):
            filled[section].setdefault(name, default)
    return filled


def plan_resume(
    jobs: list[VideoJob], out_root: Path, key: dict, expected: str
) -> tuple[dict[int, dict], Counter]:
    """Finished videos to keep (job index -> meta) and why the other finished ones are redone
    (reason -> number of videos)."""
    kept: dict[int, dict] = {}
    redone: Counter = Counter()
    for n, job in enumerate(jobs):
        meta = finished_meta(out_root / job.video_id, job.video_id)
        if meta is None:
            continue
        if meta.get("config_hash") != expected:
            redone[_why_redone(meta, key)] += 1
        elif _input_changed(job, meta):
            redone["the input changed since (size or modification time)"] += 1
        elif _outputs_changed(out_root, meta):
            redone["its output files were deleted or changed since"] += 1
        else:
            kept[n] = meta
    return kept, redone


def _input_changed(job: VideoJob, meta: dict) -> bool:
    """Whether the input differs from the one the outputs were made from (a meta.json from
    before inputs were recorded is taken as unchanged)."""
    recorded = meta.get("input")
    if not isinstance(recorded, dict):
        return False
    try:
        return input_fingerprint(job.path) != recorded
    except OSError:
        return True


def _outputs_changed(out_root: Path, meta: dict) -> bool:
    """Whether an output that ``meta.json`` lists is gone or, for a file whose size it recorded,
    has another size (deleted or cut short after the video finished). A ``meta.json`` whose
    output paths are not relative to the output root (an older version's) is not checked."""
    outputs = meta.get("outputs")
    if "video_absolute" not in meta or not isinstance(outputs, dict):
        return False
    sizes = meta.get("output_sizes")
    sizes = sizes if isinstance(sizes, dict) else {}
    for name, path in outputs.items():
        target = out_root / str(path)
        try:
            size = target.stat().st_size
        except OSError:
            return True
        if name in sizes and (not target.is_file() or size != sizes[name]):
            return True
    return False


def _meta_estimator(meta: dict) -> tuple[tuple[str | None, str | None], str]:
    """``((model, checkpoint sha256), description)`` of the estimator a meta.json records."""
    checkpoint = meta.get("checkpoint") if isinstance(meta.get("checkpoint"), dict) else {}
    model, sha256 = meta.get("model"), checkpoint.get("sha256")
    return (model, sha256), describe_estimator(str(model), checkpoint.get("source"), sha256)


def _previous_rows(out_root: Path) -> list[dict]:
    """Rows of the folder's manifest (empty when there is none or it cannot be read)."""
    if not has_manifest(out_root):
        return []
    try:
        return read_manifest(out_root).to_dict("records")
    except Exception:  # a damaged Parquet file: try the CSV twin
        try:
            return read_manifest_csv(out_root).to_dict("records")
        except Exception:
            return []


def check_left_behind(out_root: Path, jobs: list[VideoJob], estimator: Estimator) -> None:
    """Refuses a run whose estimator differs from that of finished videos it leaves behind.

    Those are the ``ok`` rows of the folder's manifest that are not inputs of this run: they
    would stay in the folder next to this run's videos, made with another model or checkpoint.

    Raises:
        RunStartError: naming both estimators and the videos left behind.
    """
    current = {job.video_id for job in jobs}
    ours = (estimator.model, estimator.sha256)
    left: list[str] = []
    theirs = ""
    for row in _previous_rows(out_root):
        video_id = str(row.get("video_id", ""))
        if row.get("status") != "ok" or not video_id or video_id in current:
            continue
        meta = finished_meta(out_root / video_id, video_id)
        if meta is None:
            continue
        identity, description = _meta_estimator(meta)
        if identity != ours:
            left.append(video_id)
            theirs = theirs or description
    if not left:
        return
    raise RunStartError(
        f"{out_root} holds {len(left)} finished video(s) this run does not include "
        f"({', '.join(left[:3])}{', ...' if len(left) > 3 else ''}) made with {theirs}; this "
        f"run would use {estimator.describe()}, and a folder holds the flow of one estimator. "
        "Include those inputs, delete their folders, or choose another output folder."
    )
