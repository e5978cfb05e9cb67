"""``consistency``: temporal consistency of a processed video against its source.

Flow (forward and backward) and the occlusion / motion-boundary masks are computed on the
*source*; the same flow warps frame ``t + 1`` of both videos onto frame ``t``, so the source's
own warping error is the baseline a processed copy (stylised, denoised, generated...) is judged
against. Outputs in ``OUT``:

- ``consistency_summary.csv``: one row per (source, processed) pair evaluated into ``OUT``
  (updated in place): ``source`` and ``processed`` relative to ``OUT`` (the summary still
  points at the videos when ``OUT`` and the videos move together), ``source_absolute`` and
  ``processed_absolute`` (it still points at them when ``OUT`` alone moves),
  ``e_warp_source``, ``e_warp_processed``, their ratio, photometric errors, occluded
  fraction, frames, pairs, model, ``config_hash``, and ``details``, the pair's folder
  relative to ``OUT``;
- ``<details>/consistency_frames.csv`` and ``.parquet``: one row per frame pair;
- ``<details>/consistency.png``: both per-pair errors over time, worst pairs marked;
- ``<details>/config.yaml``: the resolved configuration (its hash is the row's
  ``config_hash``).

The details folder mirrors the processed file's path without its extension, as ``run`` names
its outputs: relative to the current folder when the file lies below it (``a/proc.mkv`` ->
``OUT/a/proc/``), else its absolute path without the root. So ``a/proc.mkv`` and
``b/proc.mkv`` never share a folder; a folder already used by another pair of the summary
gets the extension (``proc_mkv``), then a counter, and so does an existing folder that holds
anything else: nothing but these files is ever replaced. It is written whole or not at all
(staged in a hidden folder beside it), so a full disk leaves the earlier result, never a part.
A pair whose files now fail (sizes or frame counts differ, a decoding error) loses its earlier
row and files. Runs into one ``OUT`` may overlap: each files its result under an ``flock`` on
``OUT/.consistency.lock``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import click
import pandas as pd
from tqdm import tqdm

from models import CheckpointError
from models.atomic_files import atomic_path, write_bytes_atomic
from stages.consistency import plot_error_over_time, summarize_video
from stages.decode import DecodeError, VideoInfo, iter_chunks, open_video
from stages.warp_stage import pair_products

from .cli_common import merge_overrides
from .config import (
    FLOW_MODELS,
    ConfigError,
    RunConfig,
    WarpConfig,
    config_hash,
    dump_config,
    load_config,
)
from .config_cmd import preset_path
from .progress import ShowProgress, progress_bar, progress_option
from .runner import FlowSession, advance, build_flow_session, complete

logger = logging.getLogger(__name__)

SUMMARY_FILE = "consistency_summary.csv"
LOCK_FILE = ".consistency.lock"
DETAIL_FILES = frozenset(
    {"consistency_frames.csv", "consistency_frames.parquet", "consistency.png", "config.yaml"}
)
"""What a pair's details folder holds: all that :func:`_staged_folder` may replace."""


class ConsistencyInputError(ValueError):
    """The two videos cannot be compared (different sizes or frame counts)."""


@dataclass(frozen=True)
class Comparison:
    """What :func:`evaluate_consistency` measured: one row per frame pair (``table``), the
    frames of each video and the seconds it took."""

    source: Path
    processed: Path
    table: pd.DataFrame
    frames: int
    seconds: float


def evaluate_consistency(
    source: Path,
    processed: Path,
    config: RunConfig,
    session: FlowSession,
    *,
    progress: ShowProgress = False,
) -> Comparison:
    """Per-pair warping errors of ``source`` and ``processed``, both with ``source``'s flow.

    Raises :class:`ConsistencyInputError` for mismatched inputs. ``progress``: a bar over the
    source's frames on stderr. :func:`write_report` files the result.
    """
    started = time.perf_counter()
    options = config.decode
    with open_video(source, options) as src_reader, open_video(processed, options) as proc_reader:
        _check_same_frames(src_reader.info, proc_reader.info, source, processed)
        size, gap = config.decode.chunk_size, config.flow.gap
        src_chunks = iter_chunks(src_reader, "source", size, overlap=gap)
        proc_chunks = iter_chunks(proc_reader, "processed", size, overlap=gap)
        bar = progress_bar(
            show=progress,
            total=src_reader.expected_frames(),
            desc="consistency",
            unit="frame",
            dynamic_ncols=True,
        )
        with bar:
            rows, src_frames, proc_frames = _compare_chunks(
                src_chunks, proc_chunks, session, config.warp, bar
            )
            complete(bar)
        if src_frames != proc_frames:
            raise ConsistencyInputError(
                f"frame counts differ: source {source} has {src_frames} frames, "
                f"processed {processed} has {proc_frames}"
            )
    if not rows:
        raise ConsistencyInputError(f"{source} has fewer than {config.flow.gap + 1} frames")
    seconds = time.perf_counter() - started
    return Comparison(source, processed, pd.DataFrame(rows), src_frames, seconds)


def _check_same_frames(source: VideoInfo, processed: VideoInfo, *paths: Path) -> None:
    """Refuses frames of different sizes; warns when the rotation tags differ (a copy that
    lost its tag holds frames turned against the source's: all error, no flicker)."""
    turned = ""
    if source.rotation != processed.rotation:
        turned = (
            f"rotation tags differ: source {source.rotation} degrees, processed "
            f"{processed.rotation} degrees (frames are compared as displayed)"
        )
    if (source.width, source.height) != (processed.width, processed.height):
        raise ConsistencyInputError(
            f"frame sizes differ: source {paths[0]} is {source.width}x{source.height}, "
            f"processed {paths[1]} is {processed.width}x{processed.height}"
            + (f"; {turned}" if turned else "")
        )
    if turned:
        logger.warning("%s vs %s: %s", paths[0], paths[1], turned)


def _compare_chunks(src_chunks, proc_chunks, session: FlowSession, warp: WarpConfig, bar: tqdm):
    """Flow on each source chunk and the metrics of both videos with it; returns the per-pair
    rows and the frames of each video (after a length mismatch the rest is only counted)."""
    rows: list[dict[str, float]] = []
    src_frames = proc_frames = 0
    for src_chunk in src_chunks:
        proc_chunk = next(proc_chunks, None)
        src_frames += src_chunk.num_frames - src_chunk.overlap
        if proc_chunk is not None:
            proc_frames += proc_chunk.num_frames - proc_chunk.overlap
        if proc_chunk is None or proc_chunk.num_frames != src_chunk.num_frames:
            proc_frames += sum(c.num_frames - c.overlap for c in proc_chunks)
            src_frames += sum(c.num_frames - c.overlap for c in src_chunks)
            return rows, src_frames, proc_frames
        session.stage.process(src_chunk)
        source = list(pair_products(src_chunk, src_chunk.frames, warp))
        masks = [products.masks for products in source]  # the flow's, the same for both videos
        processed = pair_products(src_chunk, proc_chunk.frames, warp, masks)
        for ours, theirs in zip(
            (products.row for products in source),
            (products.row for products in processed),
            strict=True,
        ):
            row = {k: ours[k] for k in ("frame_t", "frame_t_k", "pts_t")}
            for key in ("e_warp", "photometric_error"):
                row[f"{key}_source"] = ours[key]
                row[f"{key}_processed"] = theirs[key]
            for key in ("occluded_fraction", "counted_fraction", "flow_mag_mean"):
                row[key] = ours[key]
            rows.append(row)
        advance(bar, src_chunk.num_frames - src_chunk.overlap)
    proc_frames += sum(c.num_frames - c.overlap for c in proc_chunks)
    return rows, src_frames, proc_frames


def write_report(
    out_root: Path, comparison: Comparison, config: RunConfig, session: FlowSession
) -> tuple[dict[str, object], Path]:
    """Writes the pair's details folder and its row of the summary; returns the row and the
    summary's path. Runs into one ``out_root`` may overlap: each files its result under a lock
    (choosing the folder, writing it, updating the summary)."""
    with _report_lock(out_root):
        details = details_folder(out_root, comparison.source, comparison.processed)
        row = _write_results(comparison, out_root / details, config, session)
        return row, update_summary(out_root, {**row, "details": details})


def forget_pair(out_root: Path, source: Path, processed: Path) -> bool:
    """Removes an earlier result of (``source``, ``processed``) from ``out_root``: its summary
    row and its files (the folder too when nothing else is left in it). True if there was
    one. For a pair that now fails, whose earlier numbers no longer describe the files."""
    if not (out_root / SUMMARY_FILE).is_file():
        return False
    with _report_lock(out_root):
        summary = _read_summary(out_root)
        pair = (os.path.abspath(source), os.path.abspath(processed))
        keep = [p != pair for p in _absolute_pairs(summary)]
        if all(keep):
            return False
        folders = summary["details"] if "details" in summary.columns else []
        for folder in [f for f, k in zip(folders, keep, strict=False) if not k]:
            target = out_root / str(folder)
            for name in DETAIL_FILES:
                (target / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: other pairs' folders inside
                target.rmdir()
        write_bytes_atomic(out_root / SUMMARY_FILE, summary[keep].to_csv(index=False).encode())
        return True


@contextlib.contextmanager
def _report_lock(out_root: Path) -> Iterator[None]:
    """An exclusive POSIX ``flock`` on ``OUT/.consistency.lock``, waited for."""
    out_root.mkdir(parents=True, exist_ok=True)
    with open(out_root / LOCK_FILE, "a") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: runs into one folder must not overlap
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_results(
    comparison: Comparison, out_dir: Path, config: RunConfig, session: FlowSession
) -> dict[str, object]:
    """Writes the pair's tables, plot and resolved configuration; returns its summary row."""
    table, source, processed = comparison.table, comparison.source, comparison.processed
    with _staged_folder(out_dir) as staging:
        dump_config(config, staging / "config.yaml")
        write_bytes_atomic(
            staging / "consistency_frames.csv", table.to_csv(index=False).encode(), durable=False
        )
        with atomic_path(staging / "consistency_frames.parquet", durable=False) as temporary:
            table.to_parquet(temporary, index=False)
        plot_error_over_time(
            table,
            ["e_warp_source", "e_warp_processed"],
            staging / "consistency.png",
            x="frame_t",
            title=f"Warping error: {processed.name} vs its source",
            labels={"e_warp_source": "source (baseline)", "e_warp_processed": "processed"},
        )
    stats = summarize_video(
        table, columns=[c for c in table.columns if not c.startswith(("frame_", "pts_"))]
    )
    e_src, e_proc = stats["e_warp_source"], stats["e_warp_processed"]
    return {
        "source_absolute": os.path.abspath(source),
        "processed_absolute": os.path.abspath(processed),
        "frames": comparison.frames,
        "pairs": len(table),
        "e_warp_source": e_src,
        "e_warp_processed": e_proc,
        "e_warp_ratio": _ratio(e_proc, e_src),
        "photometric_error_source": stats["photometric_error_source"],
        "photometric_error_processed": stats["photometric_error_processed"],
        "occluded_fraction": stats["occluded_fraction"],
        "model": session.stage.config.model,
        "config_hash": config_hash(config),
        "seconds": round(comparison.seconds, 2),
    }


def _ratio(processed: float, source: float) -> float:
    """``processed / source``; 1 when both are 0 (a still shot and its exact copy are equally
    stable), infinite when only the source's is 0."""
    if source > 0:
        return processed / source
    return 1.0 if processed == 0 else math.inf


def _read_summary(out_root: Path) -> pd.DataFrame | None:
    path = out_root / SUMMARY_FILE
    return pd.read_csv(path, keep_default_na=False) if path.is_file() else None


def _absolute_pairs(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """``(source, processed)`` absolute paths of each summary row (summaries written before
    the ``*_absolute`` columns held absolute paths in ``source`` and ``processed``)."""
    pairs = []
    for _, row in summary.iterrows():
        source = str(row.get("source_absolute", "") or row["source"])
        processed = str(row.get("processed_absolute", "") or row["processed"])
        pairs.append((source, processed))
    return pairs


@contextlib.contextmanager
def _staged_folder(target: Path) -> Iterator[Path]:
    """A hidden sibling folder to write into, moved over ``target`` when the block succeeds and
    removed when it fails (disk full): ``target`` holds a whole result or the earlier one."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if _foreign(target):
        # other things live there (another pair's nested details folder, a user's files):
        # replace only this command's files, never remove anything else
        if target.is_symlink() or not target.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
            raise ConsistencyInputError(f"{target} exists and is not a folder")
        for name in DETAIL_FILES:
            (target / name).unlink(missing_ok=True)
        for entry in staging.iterdir():
            os.replace(entry, target / entry.name)
        staging.rmdir()
        return
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _foreign(folder: Path) -> bool:
    """Whether ``folder`` exists and is anything but a details folder of this command (a
    file, a link, or a folder holding other entries than :data:`DETAIL_FILES`)."""
    if not os.path.lexists(folder):
        return False
    if folder.is_symlink() or not folder.is_dir():
        return True
    return any(e.name not in DETAIL_FILES or not e.is_file() for e in folder.iterdir())


def details_folder(out_root: Path, source: Path, processed: Path) -> str:
    """The pair's folder relative to ``out_root`` (see the module docstring)."""
    source_key, processed_key = os.path.abspath(source), os.path.abspath(processed)
    relative = os.path.relpath(processed_key, os.getcwd())
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        relative = os.path.relpath(processed_key, Path(processed_key).anchor)
    base = PurePosixPath(Path(relative).with_suffix("").as_posix())
    taken: set[str] = set()
    summary = _read_summary(out_root)
    if summary is not None and "details" in summary.columns:
        for folder, pair in zip(summary["details"], _absolute_pairs(summary), strict=True):
            if pair == (source_key, processed_key):
                return str(folder)  # the same pair again: its own folder
            taken.add(str(folder))
    extension = Path(processed_key).suffix.lstrip(".").lower() or "video"
    numbered = (f"{base}_{extension}_{n}" for n in itertools.count(2))
    candidates = itertools.chain([str(base), f"{base}_{extension}"], numbered)
    return next(c for c in candidates if c not in taken and not _foreign(out_root / c))


def _relative_to(path: str, root: Path) -> str:
    """``path`` relative to ``root``, POSIX separators (``../videos/a.mp4``)."""
    return os.path.relpath(path, os.path.abspath(root)).replace(os.sep, "/")


def update_summary(out_root: Path, row: dict[str, object]) -> Path:
    """Adds or replaces the (source, processed) row of ``consistency_summary.csv``.

    ``row`` holds ``source_absolute`` and ``processed_absolute``; ``source`` and ``processed``
    relative to ``out_root`` are added in front.
    """
    path = out_root / SUMMARY_FILE
    pair = (str(row["source_absolute"]), str(row["processed_absolute"]))
    paths = {
        "source": _relative_to(pair[0], out_root),
        "processed": _relative_to(pair[1], out_root),
    }
    table = pd.DataFrame([{**paths, **row}])
    previous = _read_summary(out_root)
    if previous is not None:
        pairs = _absolute_pairs(previous)
        keep = [p != pair for p in pairs]
        kept = previous[keep].copy()
        kept_pairs = [p for p, k in zip(pairs, keep, strict=True) if k]
        # rows of summaries written before the absolute columns existed get them
        kept["source_absolute"] = [a for a, _ in kept_pairs]
        kept["processed_absolute"] = [b for _, b in kept_pairs]
        kept["source"] = [_relative_to(a, out_root) for a, _ in kept_pairs]
        kept["processed"] = [_relative_to(b, out_root) for _, b in kept_pairs]
        table = pd.concat([kept, table], ignore_index=True)
    write_bytes_atomic(path, table.to_csv(index=False).encode())
    return path


@click.command("consistency")
@click.option("--source", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--processed", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", type=click.Choice(FLOW_MODELS))
@click.option("--checkpoint", help="Checkpoint file or registry name.")
@click.option("--iters", type=click.IntRange(min=1))
@click.option("--device", help="auto, cpu, cuda, cuda:1, mps")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE")
@progress_option
def consistency_command(
    source: Path,
    processed: Path,
    output: Path,
    config_path: Path | None,
    model: str | None,
    checkpoint: str | None,
    iters: int | None,
    device: str | None,
    settings: tuple[str, ...],
    progress: ShowProgress,
) -> None:
    """Warping error (E_warp) of PROCESSED against SOURCE, with SOURCE's own as the baseline."""
    overrides: dict[str, object] = merge_overrides(
        {"flow.model": model, "flow.checkpoint": checkpoint, "flow.iters": iters,
         "flow.device": device},
        settings,
    )  # fmt: skip
    # the occlusion test needs backward flow whatever flow.backward says (as in `run`), and
    # the measurement is the warp stage's: the recorded configuration says what ran
    overrides.update({"flow.backward": True, "warp.enabled": True})
    try:
        preset = None if config_path is None else preset_path(str(config_path))
        config = load_config(preset, overrides)
        session = build_flow_session(config)
    except (CheckpointError, ConfigError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        comparison = evaluate_consistency(source, processed, config, session, progress=progress)
        row, summary = write_report(output, comparison, config, session)
    except (ConsistencyInputError, DecodeError) as exc:  # the pair's files as they are now
        message = str(exc)
        with contextlib.suppress(OSError):
            if forget_pair(output, source, processed):
                message += f" (its earlier result in {output} was removed)"
        raise click.ClickException(message) from None
    except (ValueError, OSError) as exc:  # e.g. a full disk: an earlier result stays whole
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"E_warp source {row['e_warp_source']:.6f}  processed {row['e_warp_processed']:.6f}  "
        f"(x{row['e_warp_ratio']:.2f}) over {row['pairs']} pairs; summary: {summary}"
    )
