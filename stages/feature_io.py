"""Files of the motion-feature stage: per-clip MotionSqueeze maps (``.npz``) and the
feature table (Parquet or CSV), each written atomically.

The table has one row per clip, :data:`LEADING_COLUMNS` first (meanings of all columns:
:mod:`stages.motion_features`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
from torch import Tensor

from models.atomic_files import atomic_open, atomic_path

from .motionsqueeze_maps import as_float32_array, check_maps

PathLike = str | os.PathLike[str]

LEADING_COLUMNS: tuple[str, ...] = (
    "video",
    "clip_index",
    "start_frame",
    "end_frame",
    "start_time",
    "end_time",
)
"""The first columns of every feature table, in this order."""

_LEADING_DTYPES: dict[str, str] = {
    "video": "str",
    "clip_index": "int64",
    "start_frame": "int64",
    "end_frame": "int64",
    "start_time": "float64",
    "end_time": "float64",
}

_MAP_KEYS: tuple[str, ...] = ("displacement", "confidence")
_CSV_SUFFIX = ".csv"


class ClipMaps(NamedTuple):
    """What :func:`read_clip_maps` returns.

    Attributes:
        displacement: ``(N, 2, h, w)`` float32, window-radius units.
        confidence: ``(N, 1, h, w)`` float32, ``[0, 1]``.
        extra: the other arrays of the file, as stored.
    """

    displacement: np.ndarray
    confidence: np.ndarray
    extra: dict[str, np.ndarray]


def write_clip_maps(
    path: PathLike,
    *,
    displacement: Tensor | npt.ArrayLike,
    confidence: Tensor | npt.ArrayLike,
    dtype: npt.DTypeLike = np.float16,
    **extra: Tensor | npt.ArrayLike,
) -> None:
    """Write one clip's MotionSqueeze maps to a compressed ``.npz``, atomically.

    ``displacement`` and ``confidence`` are stored under those keys in ``dtype`` (float16 by
    default: both lie in ``[-1, 1]``, where float16 keeps ~3 significant digits, half the
    bytes of float32); ``extra`` arrays (e.g. ``frame_indices``, ``patch_size``) are stored
    as given. The file is zip-deflated (``numpy.savez_compressed``) and written under a
    temporary name in the same folder, then moved over ``path``.

    Args:
        path: destination (``.npz`` by convention; the name is used as given).
        displacement: ``(N, 2, h, w)`` float.
        confidence: ``(N, 1, h, w)`` float.
        dtype: floating dtype of the two maps on disk.
        **extra: more arrays (numeric or string, not object), keyed by name.
    """
    disk_dtype = np.dtype(dtype)
    if disk_dtype.kind != "f":
        raise ValueError(f"dtype must be a floating dtype, got {disk_dtype}")
    disp = as_float32_array(displacement)
    conf = as_float32_array(confidence)
    check_maps(disp, conf)
    arrays: dict[str, np.ndarray] = {}
    for key, value in (("displacement", disp), ("confidence", conf)):
        with np.errstate(over="ignore"):
            stored = value.astype(disk_dtype)
        if not np.isfinite(stored).all():
            raise ValueError(f"{key} has NaN/inf values, or values beyond {disk_dtype} range")
        arrays[key] = stored
    for key, value in extra.items():
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        if array.dtype == object:
            raise ValueError(f"extra array {key!r} has dtype object (not storable without pickle)")
        arrays[key] = array
    with atomic_open(path, durable=False) as handle:
        np.savez_compressed(handle, **arrays)


def read_clip_maps(path: PathLike) -> ClipMaps:
    """Read a file of :func:`write_clip_maps`: maps as float32, extras as stored."""
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in _MAP_KEYS if key not in archive.files]
        if missing:
            raise ValueError(f"{path} lacks {missing}; keys: {archive.files}")
        arrays = {key: archive[key] for key in archive.files}
    displacement = arrays.pop("displacement").astype(np.float32)
    confidence = arrays.pop("confidence").astype(np.float32)
    return ClipMaps(displacement, confidence, arrays)


def features_table(
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per clip: :data:`LEADING_COLUMNS`, then the feature columns in a stable order.

    Without ``columns`` the feature columns appear in the order they are first met across the
    rows; rows built by :func:`~stages.motion_features.clip_key` +
    :func:`~stages.flow_statistics.flow_statistics` /
    :func:`~stages.motionsqueeze_maps.motionsqueeze_statistics` therefore follow
    :func:`~stages.flow_statistics.flow_feature_columns` then
    :func:`~stages.motionsqueeze_maps.motionsqueeze_feature_columns`. A column missing from a row is NaN there. Leading
    columns are typed (``video`` str, indices int64, times float64); rows keep their order.

    Args:
        rows: one mapping per clip, each with every leading column.
        columns: the feature columns to keep, in order (others are dropped), or None.

    Returns:
        A DataFrame with a fresh ``RangeIndex``.
    """
    for number, row in enumerate(rows):
        missing = [name for name in LEADING_COLUMNS if name not in row]
        if missing:
            raise ValueError(f"row {number} lacks the leading columns {missing}")
    if columns is None:
        ordered = dict.fromkeys(key for row in rows for key in row if key not in LEADING_COLUMNS)
        feature_names = list(ordered)
    else:
        feature_names = [name for name in columns if name not in LEADING_COLUMNS]
    frame = pd.DataFrame.from_records(
        [dict(row) for row in rows], columns=[*LEADING_COLUMNS, *feature_names]
    )
    return frame.astype(_LEADING_DTYPES).reset_index(drop=True)


def _is_csv(path: PathLike) -> bool:
    return Path(path).name.lower().endswith(_CSV_SUFFIX)


def write_table(frame: pd.DataFrame, path: PathLike) -> None:
    """Write a feature table atomically: CSV when the name ends in ``.csv``, else Parquet.

    Parquet goes through pyarrow (snappy-compressed, dtypes kept); CSV has a header row, no
    index, and floats written with full round-trip precision. Both are written under a
    temporary name in the destination folder and moved over ``path``.
    """
    with atomic_path(path, durable=False) as temporary:
        if _is_csv(path):
            frame.to_csv(temporary, index=False)
        else:
            frame.to_parquet(temporary, engine="pyarrow", index=False)


def read_table(path: PathLike) -> pd.DataFrame:
    """Read a table of :func:`write_table` (``video`` stays a string even if numeric, or a
    word pandas would read as missing: a video named ``NA``, ``null`` or ``nan``)."""
    if _is_csv(path):
        # write_table leaves missing numbers empty (to_csv's na_rep), so the empty cell is the
        # only missing marker; pandas' other NA words are names
        frame = pd.read_csv(path, dtype={"video": str}, keep_default_na=False, na_values=[""])
        leading = {key: value for key, value in _LEADING_DTYPES.items() if key in frame.columns}
        return frame.astype(leading)
    return pd.read_parquet(path, engine="pyarrow")
