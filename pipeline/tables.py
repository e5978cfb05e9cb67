"""Run-level tables gathered from the per-video outputs."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from stages.feature_io import read_table, write_table

logger = logging.getLogger(__name__)


def collect_feature_tables(
    out_root: Path, video_ids: Iterable[str], *, table_format: str = "parquet"
) -> Path | None:
    """Concatenates the ``clips.*`` tables of ``video_ids`` into ``OUT/features.parquet``
    (or ``.csv``): one row per clip of every video, ready for ``pandas.read_parquet``.

    Returns the path, or ``None`` when no video has a table.
    """
    suffix = "csv" if table_format == "csv" else "parquet"
    tables = []
    for video_id in video_ids:
        path = out_root / video_id / f"clips.{suffix}"
        if path.is_file():
            tables.append(read_table(path))
    if not tables:
        return None
    target = out_root / f"features.{suffix}"
    write_table(pd.concat(tables, ignore_index=True), target)
    logger.info("features table: %s (%d clips)", target, sum(len(t) for t in tables))
    return target
