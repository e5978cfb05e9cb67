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
  fraction, frames, pairs, model, and ``details``, the pair's folder relative to ``OUT``;
- ``<details>/consistency_frames.csv`` and ``.parquet``: one row per frame pair;
- ``<details>/consistency.png``: both per-pair errors over time, worst pairs marked.

The details folder mirrors the processed file's path without its extension, as ``run`` names
its outputs: relative to the current folder when the file lies below it (``a/proc.mkv`` ->
``OUT/a/proc/``), else its absolute path without the root. So ``a/proc.mkv`` and
``b/proc.mkv`` never share a folder; a folder already used by another pair of the summary
gets the extension (``proc_mkv``), then a counter. It is written whole or not at all (staged
in a hidden folder beside it), so a full disk leaves the earlier result, never a part.
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
from pathlib import Path, PurePosixPath

import click
import pandas as pd
from tqdm import tqdm

from models.atomic_files import atomic_path, write_bytes_atomic
from stages.consistency import plot_error_over_time, summarize_video
from stages.decode import DecodeError, iter_chunks, open_video
from stages.warp_stage import pair_products

from .cli_common import parse_set_options
from .config import FLOW_MODELS, ConfigError, RunConfig, WarpConfig, load_config
from .progress import ShowProgress, progress_bar, progress_option
from .runner import FlowSession, advance, build_flow_session, complete

logger = logging.getLogger(__name__)

SUMMARY_FILE = "consistency_summary.csv"


class ConsistencyInputError(ValueError):
    """The two videos cannot be compared (different sizes or frame counts)."""


def evaluate_consistency(
    source: Path,
    processed: Path,
    out_dir: Path,
    config: RunConfig,
    session: FlowSession,
    *,
    progress: ShowProgress = False,
) -> dict[str, object]:
    """Per-pair and per-video warping errors of ``processed`` using ``source``'s flow.

    Returns the summary row, with ``source_absolute`` and ``processed_absolute`` (absolute
    paths; :func:`update_summary` adds the paths relative to the output folder). Raises
    :class:`ConsistencyInputError` for mismatched inputs. ``progress``: a bar over the source's
    frames on stderr.
    """
    started = time.perf_counter()
    options = config.decode
    with open_video(source, options) as src_reader, open_video(processed, options) as proc_reader:
        src_size = (src_reader.info.width, src_reader.info.height)
        proc_size = (proc_reader.info.width, proc_reader.info.height)
        if src_size != proc_size:
            raise ConsistencyInputError(
                f"frame sizes differ: source {source} is {src_size[0]}x{src_size[1]}, "
                f"processed {processed} is {proc_size[0]}x{proc_size[1]}"
            )
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
    return _write_results(rows, src_frames, source, processed, out_dir, session, started)


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


def _write_results(
    rows, frames: int, source: Path, processed: Path, out_dir: Path, session, started: float
) -> dict[str, object]:
    """Writes the pair's tables and plot; returns its summary row."""
    table = pd.DataFrame(rows)
    with _staged_folder(out_dir) as staging:
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
        "frames": frames,
        "pairs": len(table),
        "e_warp_source": e_src,
        "e_warp_processed": e_proc,
        "e_warp_ratio": _ratio(e_proc, e_src),
        "photometric_error_source": stats["photometric_error_source"],
        "photometric_error_processed": stats["photometric_error_processed"],
        "occluded_fraction": stats["occluded_fraction"],
        "model": session.stage.config.model,
        "seconds": round(time.perf_counter() - started, 2),
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
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


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
    return next(c for c in candidates if c not in taken)


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
    overrides: dict[str, object] = {
        "flow.model": model, "flow.checkpoint": checkpoint, "flow.iters": iters,
        "flow.device": device, "flow.backward": True,
    }  # fmt: skip
    overrides.update(parse_set_options(settings))
    try:
        config = load_config(config_path, overrides)
        session = build_flow_session(config)
        details = details_folder(output, source, processed)
        row = evaluate_consistency(
            source, processed, output / details, config, session, progress=progress
        )
        summary = update_summary(output, {**row, "details": details})
    except (ConfigError, ConsistencyInputError, DecodeError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"E_warp source {row['e_warp_source']:.6f}  processed {row['e_warp_processed']:.6f}  "
        f"(x{row['e_warp_ratio']:.2f}) over {row['pairs']} pairs; summary: {summary}"
    )
