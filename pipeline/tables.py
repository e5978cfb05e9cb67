"""Run-level tables gathered from the per-video outputs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from stages.feature_io import read_table, write_table

from .progress import ShowProgress, progress_bar

logger = logging.getLogger(__name__)

#: The run-level features tables, one per ``features.table_format``.
FEATURE_TABLES = ("features.parquet", "features.csv")


def collect_feature_tables(
    out_root: Path,
    video_ids: Iterable[str],
    *,
    table_format: str = "parquet",
    progress: ShowProgress = False,
) -> Path | None:
    """Concatenates the ``clips.*`` tables of ``video_ids`` into ``OUT/features.parquet``
    (or ``.csv``): one row per clip of every video, ready for ``pandas.read_parquet``.

    ``progress``: a bar over the videos on stderr. Returns the path, or ``None`` when no video
    has a table. The table of an earlier run is replaced, or removed when there is nothing to
    collect or the new one cannot be written (disk full: the ``OSError`` is raised), so it never
    lists videos this run did not finish; one in the other format is removed.
    """
    suffix = "csv" if table_format == "csv" else "parquet"
    target = out_root / f"features.{suffix}"
    remove_feature_tables(out_root, keep=target)  # an earlier run's table in the other format
    tables = []
    video_ids = list(video_ids)
    bar = progress_bar(video_ids, show=progress, desc="features table", unit="video")
    for video_id in bar:
        path = out_root / video_id / f"clips.{suffix}"
        if path.is_file():
            tables.append(read_table(path))
    if not tables:
        target.unlink(missing_ok=True)
        return None
    try:
        write_table(pd.concat(tables, ignore_index=True), target)
    except OSError:
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)
        raise
    logger.info("features table: %s (%d clips)", target, sum(len(t) for t in tables))
    return target


def remove_feature_tables(out_root: Path, *, keep: Path | None = None) -> None:
    """Removes the run-level features tables (``features.parquet`` / ``.csv``) but ``keep``:
    what a run that writes no table (or the other format) must not leave behind."""
    for name in FEATURE_TABLES:
        if out_root / name != keep:
            (out_root / name).unlink(missing_ok=True)
