"""Per-clip motion features: flow statistics (HOF, MBH, magnitudes) and MotionSqueeze maps.

The pure computations of the motion-feature stage. A stage buffers the frames, per-frame
feature maps and per-pair flows of one clip (see :func:`clip_windows`) and calls, per clip:

- :func:`flow_statistics` on the clip's ``T - 1`` flow fields: magnitude statistics, a
  histogram of oriented flow (HOF) and motion boundary histograms (MBH);
- :func:`motionsqueeze_maps` on the clip's ``T`` per-frame feature maps (RAFT's feature-encoder
  output, or :func:`frame_descriptor` with the classical backend), then
  :func:`motionsqueeze_statistics` on the maps;
- :func:`clip_key` for the leading columns, and at the end of the video
  :func:`features_table` / :func:`write_table` (one row per clip) and :func:`write_clip_maps`
  (the spatial maps of one clip). :func:`clip_features` bundles the per-clip calls.

Conventions
-----------
Flow
    numpy ``(N, H, W, 2)`` (``N = T - 1`` pairs; one ``(H, W, 2)`` field is accepted too),
    float, pixels of the frame the flow was computed at, per step of the decoded sequence
    (``t -> t + 1``); channel 0 = x (right), channel 1 = y (down). The on-disk layout of
    :mod:`stages.flow_io`; :func:`flow_stack_to_numpy` converts the flow stage's torch
    ``(N, 2, H, W)``.
Orientation bins (HOF, MBH, MotionSqueeze directions)
    ``theta = atan2(-y, x)`` in ``[0, 360)`` degrees: 0 = right, measured counter-clockwise
    *as seen on screen* (image y points down, hence the minus sign), so 90 = up. Bin ``k`` of
    ``n`` is centred on ``k * 360 / n`` degrees, and a vector splits its weight linearly between
    the two nearest bin centres (no hard bin edges, so a direction near a boundary does not
    flicker between bins). With ``n = 8``: ``00`` right, ``01`` up-right, ``02`` up, ``03``
    up-left, ``04`` left, ``05`` down-left, ``06`` down, ``07`` down-right. The dense
    trajectories code (Wang et al. 2013) measures ``atan2(y, x)`` (clockwise on screen); its
    bin ``k`` is our bin ``(n - k) % n``.
Spatial derivatives
    :func:`numpy.gradient` with unit spacing: centred differences ``(f[i+1] - f[i-1]) / 2`` in
    the interior, one-sided differences on the first/last row and column. Units: pixels of
    flow per pixel of image, per frame step (``1/frame``).

Columns (``n_bins = 8``; names are stable, see :func:`flow_feature_columns` and
:func:`motionsqueeze_feature_columns`)
-----------------------------------------------------------------------------------------------
==========================  =====================================================================
column                      meaning
==========================  =====================================================================
``video``                   video identifier (path relative to the input root)
``clip_index``              0-based index of the clip in the video
``start_frame``             first frame of the clip (index in the decoded sequence)
``end_frame``               one past the last frame of the clip (exclusive)
``start_time``              presentation time of the first frame, seconds
``end_time``                presentation time of the *last* frame (``end_frame - 1``), seconds
``flow_mag_mean``           mean flow magnitude over all pixels of all pairs, px/frame
``flow_mag_std``            standard deviation of the magnitude, px/frame
``flow_mag_p10`` .. p99     10th, 50th, 90th, 99th percentiles of the magnitude, px/frame
``flow_mag_max``            largest magnitude, px/frame
``moving_fraction``         fraction of pixels with magnitude ``> static_threshold``
``flow_mean_x``             mean x component (+ = right), px/frame; global/camera pan
``flow_mean_y``             mean y component (+ = down), px/frame
``flow_coherence``          ``|mean flow vector| / flow_mag_mean`` in ``[0, 1]``: 1 = everything
                            moves the same way (pan), 0 = motions cancel (zoom, rotation,
                            opposite movers) or nothing moves
``flow_div_mean``           mean divergence ``du/dx + dv/dy``, 1/frame; > 0 expansion (zoom in)
``flow_curl_mean``          mean curl ``dv/dx - du/dy``, 1/frame; > 0 clockwise on screen
``hof_00`` .. ``hof_07``    HOF orientation bins: moving pixels vote with their magnitude (px)
``hof_static``              HOF "no motion" bin: static pixels vote 1 each; HOF bins sum to 1
``mbhx_00`` .. ``mbhx_07``  orientation histogram of the gradient of u (magnitude-weighted);
                            sums to ~1 with motion boundaries, ~0 without
``mbhx_mag_mean``           mean ``|grad u|``, 1/frame (how much horizontal-motion boundary)
``mbhy_00`` .. ``mbhy_07``  orientation histogram of the gradient of v
``mbhy_mag_mean``           mean ``|grad v|``, 1/frame
``ms_disp_mean_x``          mean MotionSqueeze x displacement, window-radius units (``[-1, 1]``)
``ms_disp_mean_y``          mean y displacement (+ = down), window-radius units
``ms_disp_mag_mean``        mean displacement length, window-radius units (``[0, sqrt 2]``)
``ms_disp_mean_x_px``       ``ms_disp_mean_x * radius * dilation``: feature-grid cells per frame
``ms_disp_mean_y_px``       ``ms_disp_mean_y * radius * dilation``: feature-grid cells per frame
``ms_disp_mag_mean_px``     mean displacement length in feature-grid cells per frame
``ms_conf_mean``            mean matching confidence (best cosine similarity, ``[0, 1]``)
``ms_conf_p10``             10th percentile of the confidence
``ms_conf_p50``             median confidence
``ms_dir_00`` .. ``07``     orientation histogram of the displacement, weighted by confidence
``ms_dir_static``           confidence mass of cells moving ``<= ms_static_threshold`` cells;
                            the ``ms_dir`` bins sum to 1 (0 when all confidences are 0)
==========================  =====================================================================

One feature-grid cell is ``stride`` frame pixels (8 for RAFT's encoder and the default
:func:`frame_descriptor`), so ``*_px`` columns times 8 are frame pixels per frame.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from models.motionsqueeze import local_correlation, soft_argmax_displacement

from .flow_io import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CLIP_LEN",
    "DEFAULT_MBH_EPS",
    "DEFAULT_MS_STATIC_THRESHOLD",
    "DEFAULT_N_BINS",
    "DEFAULT_STATIC_THRESHOLD",
    "LEADING_COLUMNS",
    "ClipMaps",
    "MotionFeatureConfig",
    "MotionMaps",
    "clip_features",
    "clip_key",
    "clip_windows",
    "features_table",
    "flow_feature_columns",
    "flow_stack_to_numpy",
    "flow_statistics",
    "frame_descriptor",
    "hof_histogram",
    "mbh_histograms",
    "motion_boundaries",
    "motionsqueeze_feature_columns",
    "motionsqueeze_maps",
    "motionsqueeze_statistics",
    "read_clip_maps",
    "read_table",
    "write_clip_maps",
    "write_table",
]

PathLike = str | os.PathLike[str]

DEFAULT_CLIP_LEN = 8
"""Frames per clip: the ``T = 8`` frames per clip of TSN/TSM/MotionSqueeze and 8x8 SlowFast."""

DEFAULT_N_BINS = 8
"""Orientation bins of HOF, MBH and the MotionSqueeze direction histogram (45 degrees each)."""

DEFAULT_STATIC_THRESHOLD = 0.4
"""Flow magnitude (px/frame) at or below which a pixel is "not moving": ``min_flow`` of the
dense trajectories code (Wang et al.); sub-half-pixel flow is at the level of estimation noise
in static regions."""

DEFAULT_MBH_EPS = 1e-3
"""Floor of the MBH normalisation, per pixel, in 1/frame (see :func:`mbh_histograms`)."""

DEFAULT_MS_STATIC_THRESHOLD = 0.5
"""MotionSqueeze displacement (feature-grid cells/frame) at or below which a cell is static:
features are sampled once per cell, so the direction of a sub-half-cell soft-argmax is noise."""

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

_PERCENTILES: tuple[int, ...] = (10, 50, 90, 99)
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
_DESCRIPTOR_STD_FLOOR = 1e-4
_MAP_KEYS: tuple[str, ...] = ("displacement", "confidence")
_CSV_SUFFIX = ".csv"


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------


def clip_windows(
    num_frames: int,
    clip_len: int = DEFAULT_CLIP_LEN,
    stride: int | None = None,
    *,
    drop_tail: bool = False,
) -> list[tuple[int, int]]:
    """Split a video of ``num_frames`` decoded frames into clips ``[start, end)``.

    A clip of ``T`` frames holds the ``T - 1`` consecutive pairs ``(t, t + 1)``,
    ``start <= t < end - 1``. Windows start at ``0, stride, 2 * stride, ...`` while a full clip
    fits. The default stride is ``clip_len - 1``: consecutive clips share one frame, so their
    pairs partition the pairs of the video (every flow field is counted in exactly one clip;
    with ``stride = clip_len`` the pair joining two clips would belong to neither, 1 pair in
    ``clip_len``).

    Why 8: TSN/TSM, and MotionSqueeze (built on TSM), feed ``T = 8`` frames per clip, and so
    does the 8x8 SlowFast recipe; one row per 8 frames lines up with what those networks see.
    Those models space their frames (one per segment, or every 8th frame); here spacing is the
    decoder's frame stride, because flow and MotionSqueeze pairs are always consecutive
    *decoded* frames: decode every 8th frame and keep ``clip_len=8`` for the 8x8 layout.
    I3D-style clips are ``clip_len=16`` or ``32`` (with ``stride`` 15 / 31, or 16 / 32 for
    non-overlapping clips).

    Edge cases: fewer than 2 frames give no clip (no pair); a video shorter than ``clip_len``
    gives one clip of all its frames (even with ``drop_tail``); frames left after the last full
    clip form a final shorter clip when it holds at least one pair and ``drop_tail`` is False
    (set ``drop_tail`` when every clip must have exactly ``clip_len`` frames).

    Args:
        num_frames: frames in the decoded sequence (>= 0).
        clip_len: frames per clip ``T`` (>= 2).
        stride: frames between clip starts (>= 1); None for ``clip_len - 1``.
        drop_tail: drop the final shorter clip.

    Returns:
        ``(start, end)`` frame indices, ``end`` exclusive, in increasing ``start`` order.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if clip_len < 2:
        raise ValueError(f"clip_len must be >= 2 (a clip needs one pair), got {clip_len}")
    step = clip_len - 1 if stride is None else stride
    if step < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if num_frames < 2:
        return []
    if num_frames <= clip_len:
        return [(0, num_frames)]
    windows: list[tuple[int, int]] = []
    start = 0
    while start + clip_len <= num_frames:
        windows.append((start, start + clip_len))
        start += step
    if not drop_tail and windows[-1][1] < num_frames and num_frames - start >= 2:
        windows.append((start, num_frames))
    return windows


def clip_key(
    video: str,
    clip_index: int,
    start_frame: int,
    end_frame: int,
    clip_pts: npt.ArrayLike,
) -> dict[str, str | int | float]:
    """The leading columns of one clip's row (:data:`LEADING_COLUMNS`, in order).

    Args:
        video: video identifier.
        clip_index: 0-based clip number within the video.
        start_frame: first frame (decoded-sequence index).
        end_frame: one past the last frame.
        clip_pts: ``(end_frame - start_frame,)`` presentation times of the clip's frames, s.

    Returns:
        ``{"video", "clip_index", "start_frame", "end_frame", "start_time", "end_time"}`` with
        ``start_time = clip_pts[0]`` and ``end_time = clip_pts[-1]`` (the last frame's time).
    """
    pts = np.asarray(clip_pts, dtype=np.float64).reshape(-1)
    if end_frame - start_frame < 1 or len(pts) != end_frame - start_frame:
        raise ValueError(
            f"clip [{start_frame}, {end_frame}) needs {end_frame - start_frame} timestamps, "
            f"got {len(pts)}"
        )
    return {
        "video": str(video),
        "clip_index": int(clip_index),
        "start_frame": int(start_frame),
        "end_frame": int(end_frame),
        "start_time": float(pts[0]),
        "end_time": float(pts[-1]),
    }


# --------------------------------------------------------------------------------------------
# Flow statistics
# --------------------------------------------------------------------------------------------


def flow_stack_to_numpy(flow: Tensor | npt.ArrayLike) -> np.ndarray:
    """Convert the flow stage's torch ``(N, 2, H, W)`` to numpy ``(N, H, W, 2)`` float32.

    numpy input is taken as ``(N, H, W, 2)`` or ``(H, W, 2)`` already and only cast.
    """
    if isinstance(flow, Tensor):
        if flow.dim() != 4 or flow.shape[1] != 2:
            raise ValueError(f"expected torch flow (N, 2, H, W), got {tuple(flow.shape)}")
        return flow.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
    return np.asarray(flow, dtype=np.float32)


def _check_flow_stack(flows: npt.ArrayLike) -> np.ndarray:
    """Return ``flows`` as a real ``(N, H, W, 2)`` array (a single field gets ``N = 1``)."""
    array = np.asarray(flows)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 2 or array.shape[0] < 1:
        raise ValueError(f"flows must be (N, H, W, 2) or (H, W, 2), got shape {array.shape}")
    if array.shape[1] < 2 or array.shape[2] < 2:
        raise ValueError(f"flow fields must be at least 2x2 (gradients), got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"flows must be floating point, got dtype {array.dtype}")
    return array


def _check_bins(n_bins: int) -> None:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")


def _orientation_histogram(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, n_bins: int
) -> np.ndarray:
    """Weighted histogram of the orientation of vectors ``(x, y)`` in image coordinates.

    The angle is ``atan2(-y, x)`` in ``[0, 2 pi)`` (0 = right, counter-clockwise on screen),
    computed with :func:`cv2.phase` (float32, max error about 0.01 degrees, exact on the axes;
    several times faster than :func:`numpy.arctan2`). Bin ``k`` is centred on
    ``k * 2 pi / n_bins`` and each weight is split linearly between the two nearest bin
    centres.

    Args:
        x, y: vector components (any shape, same size), y pointing down.
        weights: non-negative weight of each vector (same size; 0 = no vote).
        n_bins: number of bins.

    Returns:
        ``(n_bins,)`` float64 sums of weights (not normalised).
    """
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    y = np.ascontiguousarray(y, dtype=np.float32).reshape(-1)
    weights = np.ascontiguousarray(weights, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return np.zeros(n_bins, dtype=np.float64)
    position = cv2.phase(x, np.negative(y)).reshape(-1)  # (M,) radians in [0, 2 pi)
    position *= np.float32(n_bins / (2.0 * math.pi))  # (M,) bins in [0, n_bins]
    lower = np.floor(position)
    upper_weight = weights * (position - lower)  # (M,) share of the next bin centre
    lower_weight = weights - upper_weight
    lower_bin = lower.astype(np.intp)  # (M,) in [0, n_bins]
    # unrolled bins 0..n_bins+1 (bin n_bins is bin 0 again after a full turn), folded below
    unrolled = np.zeros(n_bins + 2, dtype=np.float64)
    unrolled[: n_bins + 1] += np.bincount(lower_bin, lower_weight, minlength=n_bins + 1)
    unrolled[1:] += np.bincount(lower_bin, upper_weight, minlength=n_bins + 1)
    return np.bincount(np.arange(n_bins + 2) % n_bins, unrolled, minlength=n_bins)


def _hof_counts(
    u: np.ndarray, v: np.ndarray, magnitude: np.ndarray, n_bins: int, threshold: float
) -> np.ndarray:
    """Un-normalised HOF of one field: ``(n_bins + 1,)`` float64, the static bin last.

    Moving pixels (``magnitude > threshold``) add their magnitude to the orientation bins;
    static pixels add 1 each to the static bin (as in the dense trajectories code).
    """
    moving = magnitude > threshold
    counts = np.zeros(n_bins + 1, dtype=np.float64)
    counts[:n_bins] = _orientation_histogram(u, v, np.where(moving, magnitude, 0), n_bins)
    counts[n_bins] = float(moving.size - np.count_nonzero(moving))
    return counts


class _FieldGradients(NamedTuple):
    """Spatial derivatives of one flow field, each ``(H, W)`` float32, 1/frame."""

    du_dx: np.ndarray
    du_dy: np.ndarray
    dv_dx: np.ndarray
    dv_dy: np.ndarray


def _field_gradients(u: np.ndarray, v: np.ndarray) -> _FieldGradients:
    """Centred-difference derivatives of ``u`` and ``v`` (``(H, W)`` each, H, W >= 2)."""
    du_dy, du_dx = np.gradient(u)  # axis 0 = y (down), axis 1 = x (right)
    dv_dy, dv_dx = np.gradient(v)
    return _FieldGradients(du_dx, du_dy, dv_dx, dv_dy)


def _mbh_counts(grads: _FieldGradients, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised MBHx and MBHy of one field, ``(n_bins,)`` float64 each."""
    mag_u = np.hypot(grads.du_dx, grads.du_dy)
    mag_v = np.hypot(grads.dv_dx, grads.dv_dy)
    mbhx = _orientation_histogram(grads.du_dx, grads.du_dy, mag_u, n_bins)
    mbhy = _orientation_histogram(grads.dv_dx, grads.dv_dy, mag_v, n_bins)
    return mbhx, mbhy


def _field_components(stack: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """``u, v`` of field ``index`` as contiguous float32 ``(H, W)``; raises on NaN/inf."""
    u = np.ascontiguousarray(stack[index, :, :, 0], dtype=np.float32)
    v = np.ascontiguousarray(stack[index, :, :, 1], dtype=np.float32)
    if not (np.isfinite(u).all() and np.isfinite(v).all()):
        raise ValueError(f"flow field {index} holds NaN or infinite values")
    return u, v


def _normalise_l1(hist: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """``hist / (sum(hist) + floor)``; all zeros when that denominator is 0."""
    total = float(hist.sum()) + floor
    return hist / total if total > 0.0 else np.zeros_like(hist)


def _bin_columns(prefix: str, hist: np.ndarray) -> dict[str, float]:
    return {f"{prefix}_{k:02d}": float(value) for k, value in enumerate(hist)}


def hof_histogram(
    flows: npt.ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    static_threshold: float = DEFAULT_STATIC_THRESHOLD,
) -> np.ndarray:
    """Histogram of oriented flow (Laptev et al. 2008; Dalal et al. 2006), whole-frame pooled.

    Every pixel of every field votes: a pixel moving more than ``static_threshold`` px adds its
    magnitude (px) to the orientation bins (module convention, linear interpolation between the
    two nearest bins); a pixel at or below it adds 1 to the "no motion" bin (so a static pixel
    weighs as much as one moving 1 px, as in the dense trajectories code).

    Args:
        flows: ``(N, H, W, 2)`` or ``(H, W, 2)`` float flow, px/frame (x right, y down).
        n_bins: orientation bins.
        static_threshold: magnitude in px/frame at or below which a pixel is static.

    Returns:
        ``(n_bins + 1,)`` float64, L1-normalised (sums to 1): bins ``0..n_bins-1`` then the
        static bin.
    """
    _check_bins(n_bins)
    stack = _check_flow_stack(flows)
    counts = np.zeros(n_bins + 1, dtype=np.float64)
    for index in range(stack.shape[0]):
        u, v = _field_components(stack, index)
        counts += _hof_counts(u, v, np.hypot(u, v), n_bins, static_threshold)
    return _normalise_l1(counts)


def mbh_histograms(
    flows: npt.ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    eps: float = DEFAULT_MBH_EPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Motion boundary histograms (Dalal, Triggs and Schmid 2006), whole-frame pooled.

    MBHx is the orientation histogram of the spatial gradient ``(du/dx, du/dy)`` of the x flow
    component, each pixel weighted by the gradient magnitude; MBHy the same for ``v``. Constant
    motion (camera pan) has no gradient, so MBH responds only to relative motion, i.e. motion
    boundaries. Gradients: :func:`numpy.gradient` (centred differences). Orientation: module
    convention (bin 0 = the component grows to the right, bin 2 = it grows upward).

    Normalisation: ``hist / (sum(hist) + eps * P)`` with ``P`` the number of pixels (all
    fields). With clear boundaries (mean gradient magnitude ``>> eps``) the bins sum to ~1;
    a flow without boundaries gives ~0 instead of amplifying noise to a unit histogram.

    Args:
        flows: ``(N, H, W, 2)`` or ``(H, W, 2)`` float flow, px/frame, fields at least 2x2.
        n_bins: orientation bins.
        eps: per-pixel floor of the normalisation, 1/frame (>= 0).

    Returns:
        ``(mbhx, mbhy)``, ``(n_bins,)`` float64 each, entries in ``[0, 1]``.
    """
    _check_bins(n_bins)
    stack = _check_flow_stack(flows)
    mbhx = np.zeros(n_bins, dtype=np.float64)
    mbhy = np.zeros(n_bins, dtype=np.float64)
    for index in range(stack.shape[0]):
        field_x, field_y = _mbh_counts(_field_gradients(*_field_components(stack, index)), n_bins)
        mbhx += field_x
        mbhy += field_y
    floor = eps * stack.shape[0] * stack.shape[1] * stack.shape[2]
    return _normalise_l1(mbhx, floor), _normalise_l1(mbhy, floor)


def motion_boundaries(flows: npt.ArrayLike) -> np.ndarray:
    """Per-pixel motion-boundary strength ``(|grad u|, |grad v|)``.

    Args:
        flows: ``(N, H, W, 2)`` or ``(H, W, 2)`` float flow, px/frame, fields at least 2x2.

    Returns:
        ``(N, H, W, 2)`` float32, 1/frame: channel 0 = ``|grad u|``, 1 = ``|grad v|``
        (:func:`numpy.gradient`), non-negative; the maps MBH is accumulated from.
    """
    stack = _check_flow_stack(flows)
    out = np.empty(stack.shape, dtype=np.float32)
    for index in range(stack.shape[0]):
        grads = _field_gradients(*_field_components(stack, index))
        out[index, :, :, 0] = np.hypot(grads.du_dx, grads.du_dy)
        out[index, :, :, 1] = np.hypot(grads.dv_dx, grads.dv_dy)
    return out


def flow_feature_columns(n_bins: int = DEFAULT_N_BINS) -> tuple[str, ...]:
    """Column names of :func:`flow_statistics`, in order (see the module table)."""
    _check_bins(n_bins)
    bins = [f"{k:02d}" for k in range(n_bins)]
    return (
        "flow_mag_mean",
        "flow_mag_std",
        *(f"flow_mag_p{q}" for q in _PERCENTILES),
        "flow_mag_max",
        "moving_fraction",
        "flow_mean_x",
        "flow_mean_y",
        "flow_coherence",
        "flow_div_mean",
        "flow_curl_mean",
        *(f"hof_{b}" for b in bins),
        "hof_static",
        *(f"mbhx_{b}" for b in bins),
        "mbhx_mag_mean",
        *(f"mbhy_{b}" for b in bins),
        "mbhy_mag_mean",
    )


class _FlowSums(NamedTuple):
    """Running sums over the fields of a clip (float64 except the magnitudes)."""

    magnitudes: np.ndarray  # (N * H * W,) float32, px/frame
    hof: np.ndarray  # (n_bins + 1,)
    mbhx: np.ndarray  # (n_bins,)
    mbhy: np.ndarray  # (n_bins,)
    vector: np.ndarray  # (4,): sum u, sum v, sum divergence, sum curl


def _accumulate_flow(stack: np.ndarray, n_bins: int, threshold: float) -> _FlowSums:
    """One pass over the fields, keeping memory at one field of temporaries."""
    fields, height, width, _ = stack.shape
    pixels = height * width
    sums = _FlowSums(
        magnitudes=np.empty(fields * pixels, dtype=np.float32),
        hof=np.zeros(n_bins + 1),
        mbhx=np.zeros(n_bins),
        mbhy=np.zeros(n_bins),
        vector=np.zeros(4),
    )
    for index in range(fields):
        u, v = _field_components(stack, index)
        magnitude = np.hypot(u, v)  # (H, W) float32
        sums.magnitudes[index * pixels : (index + 1) * pixels] = magnitude.ravel()
        sums.hof[:] += _hof_counts(u, v, magnitude, n_bins, threshold)
        grads = _field_gradients(u, v)
        field_x, field_y = _mbh_counts(grads, n_bins)
        sums.mbhx[:] += field_x
        sums.mbhy[:] += field_y
        sums.vector[:] += (
            u.sum(dtype=np.float64),
            v.sum(dtype=np.float64),
            grads.du_dx.sum(dtype=np.float64) + grads.dv_dy.sum(dtype=np.float64),
            grads.dv_dx.sum(dtype=np.float64) - grads.du_dy.sum(dtype=np.float64),
        )
    return sums


def _magnitude_columns(magnitudes: np.ndarray, threshold: float) -> dict[str, float]:
    """Mean, std, percentiles, max and moving fraction of ``(P,)`` float32 magnitudes."""
    percentiles = np.percentile(magnitudes, _PERCENTILES)
    columns = {
        "flow_mag_mean": float(magnitudes.mean(dtype=np.float64)),
        "flow_mag_std": float(magnitudes.std(dtype=np.float64)),
    }
    columns.update(
        {f"flow_mag_p{q}": float(p) for q, p in zip(_PERCENTILES, percentiles, strict=True)}
    )
    columns["flow_mag_max"] = float(magnitudes.max())
    columns["moving_fraction"] = float(np.count_nonzero(magnitudes > threshold)) / magnitudes.size
    return columns


def flow_statistics(
    flows: npt.ArrayLike,
    *,
    n_bins: int = DEFAULT_N_BINS,
    static_threshold: float = DEFAULT_STATIC_THRESHOLD,
    mbh_eps: float = DEFAULT_MBH_EPS,
) -> dict[str, float]:
    """All flow columns of one clip, pooled over every pixel of every field.

    Args:
        flows: ``(N, H, W, 2)`` (``N = T - 1`` pairs of the clip) or ``(H, W, 2)`` float flow,
            px/frame at the frame's resolution, x right, y down; fields at least 2x2, finite.
        n_bins: orientation bins of HOF and MBH.
        static_threshold: px/frame at or below which a pixel is static (HOF static bin and
            ``moving_fraction``).
        mbh_eps: per-pixel floor of the MBH normalisation (:func:`mbh_histograms`).

    Returns:
        Ordered ``{column: value}`` with the keys of :func:`flow_feature_columns` (see the
        module table for meanings and units). Memory: one float32 magnitude per pixel plus
        one field's temporaries.
    """
    _check_bins(n_bins)
    stack = _check_flow_stack(flows)
    sums = _accumulate_flow(stack, n_bins, static_threshold)
    pixels = sums.magnitudes.size
    mean_x, mean_y, divergence, curl = (float(s) / pixels for s in sums.vector)

    columns = _magnitude_columns(sums.magnitudes, static_threshold)
    mean_magnitude = columns["flow_mag_mean"]
    coherence = math.hypot(mean_x, mean_y) / mean_magnitude if mean_magnitude > 0.0 else 0.0
    columns.update(
        {
            "flow_mean_x": mean_x,
            "flow_mean_y": mean_y,
            "flow_coherence": min(coherence, 1.0),
            "flow_div_mean": divergence,
            "flow_curl_mean": curl,
        }
    )
    hof = _normalise_l1(sums.hof)
    columns.update(_bin_columns("hof", hof[:n_bins]))
    columns["hof_static"] = float(hof[n_bins])
    for name, counts in (("mbhx", sums.mbhx), ("mbhy", sums.mbhy)):
        columns.update(_bin_columns(name, _normalise_l1(counts, mbh_eps * pixels)))
        columns[f"{name}_mag_mean"] = float(counts.sum()) / pixels
    return columns


# --------------------------------------------------------------------------------------------
# MotionSqueeze features
# --------------------------------------------------------------------------------------------


class MotionMaps(NamedTuple):
    """Spatial MotionSqueeze outputs of one clip of ``T`` frames.

    Attributes:
        displacement: ``(T-1, 2, h, w)`` float32 soft-argmax displacement from frame ``t`` to
            ``t + 1`` at every feature-grid cell of frame ``t``; channel 0 = x (right), 1 = y
            (down), in window-radius units (``[-1, 1]``; times ``radius * dilation`` =
            feature-grid cells, times the grid stride = frame pixels).
        confidence: ``(T-1, 1, h, w)`` float32 best matching score (ReLU'd cosine similarity,
            ``[0, 1]``).
    """

    displacement: Tensor
    confidence: Tensor


def motionsqueeze_maps(
    features: Tensor,
    *,
    patch_size: int = 15,
    dilation: int = 1,
    sigma: float = 5.0,
    temperature: float = 100.0,
    pairs_per_batch: int = 4,
) -> MotionMaps:
    """Parameter-free MotionSqueeze motion maps of consecutive per-frame feature maps.

    For each pair ``(t, t + 1)``: :func:`models.motionsqueeze.local_correlation` (cosine
    similarity over a ``patch_size`` window) then :func:`models.motionsqueeze.
    soft_argmax_displacement` (kernel soft-argmax). The defaults are the official
    MotionSqueeze ones (patch 15, sigma 5, temperature 100, no dilation): displacements up to
    7 cells per frame. Unlike the trained module there is no learned 1x1 channel reduction:
    the maps are matched as given. The confidence is the best cosine similarity: it is high
    for a textureless region too (everything matches), so it measures how well the best match
    fits, not how unique it is. Runs without autograd on the device of ``features``; pairs
    are processed ``pairs_per_batch`` at a time (the correlation volume of one pair is
    ``patch_size**2 * h * w`` floats).

    Args:
        features: ``(T, C, h, w)`` float per-frame feature maps of one clip, ``T >= 2``
            (RAFT's feature encoder: ``C = 256`` or ``128`` at 1/8 resolution; or
            :func:`frame_descriptor`).
        patch_size: odd window side ``P >= 3`` in cells.
        dilation: window spacing in cells.
        sigma: Gaussian width around the arg-max, in window cells.
        temperature: softmax inverse temperature.
        pairs_per_batch: pairs per correlation call (>= 1).

    Returns:
        :class:`MotionMaps` with float32 tensors on the device of ``features``.
    """
    if features.dim() != 4 or features.shape[0] < 2:
        raise ValueError(f"expected features (T >= 2, C, h, w), got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"features must be floating point, got {features.dtype}")
    if pairs_per_batch < 1:
        raise ValueError(f"pairs_per_batch must be >= 1, got {pairs_per_batch}")
    pairs = features.shape[0] - 1
    displacements: list[Tensor] = []
    confidences: list[Tensor] = []
    with torch.no_grad():
        for first in range(0, pairs, pairs_per_batch):
            last = min(first + pairs_per_batch, pairs)
            corr = local_correlation(
                features[first:last], features[first + 1 : last + 1], patch_size, dilation
            )  # (b, P*P, h, w)
            displacement, confidence = soft_argmax_displacement(
                corr, patch_size, dilation, sigma, temperature
            )  # (b, 2, h, w), (b, 1, h, w)
            displacements.append(displacement.float())
            confidences.append(confidence.float())
    return MotionMaps(torch.cat(displacements), torch.cat(confidences))


def motionsqueeze_feature_columns(n_bins: int = DEFAULT_N_BINS) -> tuple[str, ...]:
    """Column names of :func:`motionsqueeze_statistics`, in order (see the module table)."""
    _check_bins(n_bins)
    return (
        "ms_disp_mean_x",
        "ms_disp_mean_y",
        "ms_disp_mag_mean",
        "ms_disp_mean_x_px",
        "ms_disp_mean_y_px",
        "ms_disp_mag_mean_px",
        "ms_conf_mean",
        "ms_conf_p10",
        "ms_conf_p50",
        *(f"ms_dir_{k:02d}" for k in range(n_bins)),
        "ms_dir_static",
    )


def _as_numpy_f32(array: Tensor | npt.ArrayLike) -> np.ndarray:
    if isinstance(array, Tensor):
        return array.detach().to("cpu", torch.float32).numpy()
    return np.asarray(array, dtype=np.float32)


def _check_maps(displacement: np.ndarray, confidence: np.ndarray) -> None:
    """Raise unless displacement is ``(N, 2, h, w)``, N >= 1, and confidence ``(N, 1, h, w)``."""
    if displacement.ndim != 4 or displacement.shape[0] < 1 or displacement.shape[1] != 2:
        raise ValueError(f"displacement must be (N, 2, h, w), got {displacement.shape}")
    n, _, h, w = displacement.shape
    if confidence.shape != (n, 1, h, w):
        raise ValueError(
            f"confidence must be ({n}, 1, {h}, {w}) to match displacement "
            f"{displacement.shape}, got {confidence.shape}"
        )


def motionsqueeze_statistics(
    displacement: Tensor | npt.ArrayLike,
    confidence: Tensor | npt.ArrayLike,
    *,
    patch_size: int = 15,
    dilation: int = 1,
    n_bins: int = DEFAULT_N_BINS,
    static_threshold: float = DEFAULT_MS_STATIC_THRESHOLD,
) -> dict[str, float]:
    """Pooled MotionSqueeze columns of one clip (over all cells of all pairs).

    Args:
        displacement: ``(N, 2, h, w)`` window-radius units (:class:`MotionMaps`).
        confidence: ``(N, 1, h, w)`` in ``[0, 1]``.
        patch_size: the window side the maps were computed with (sets the radius).
        dilation: the window dilation the maps were computed with.
        n_bins: orientation bins of the direction histogram.
        static_threshold: displacement length in feature-grid cells at or below which a cell
            votes for ``ms_dir_static`` instead of a direction.

    Returns:
        Ordered ``{column: value}`` with the keys of :func:`motionsqueeze_feature_columns`:
        means of ``x``, ``y`` and the length in window-radius units and in feature-grid cells
        (``x radius * dilation``), confidence mean/p10/p50, and the confidence-weighted
        direction histogram (module orientation convention), L1-normalised.
    """
    _check_bins(n_bins)
    disp = _as_numpy_f32(displacement)
    conf = _as_numpy_f32(confidence)
    _check_maps(disp, conf)
    cells_per_unit = (patch_size - 1) / 2 * dilation
    dx, dy = disp[:, 0].ravel(), disp[:, 1].ravel()
    weights = conf.ravel()
    length = np.hypot(dx, dy)
    moving = length * cells_per_unit > static_threshold

    hist = np.zeros(n_bins + 1, dtype=np.float64)
    hist[:n_bins] = _orientation_histogram(dx, dy, np.where(moving, weights, 0), n_bins)
    hist[n_bins] = float(weights[~moving].sum(dtype=np.float64))
    hist = _normalise_l1(hist)

    mean_x, mean_y = float(dx.mean(dtype=np.float64)), float(dy.mean(dtype=np.float64))
    mean_length = float(length.mean(dtype=np.float64))
    conf_p10, conf_p50 = np.percentile(weights, (10, 50))
    columns = {
        "ms_disp_mean_x": mean_x,
        "ms_disp_mean_y": mean_y,
        "ms_disp_mag_mean": mean_length,
        "ms_disp_mean_x_px": mean_x * cells_per_unit,
        "ms_disp_mean_y_px": mean_y * cells_per_unit,
        "ms_disp_mag_mean_px": mean_length * cells_per_unit,
        "ms_conf_mean": float(weights.mean(dtype=np.float64)),
        "ms_conf_p10": float(conf_p10),
        "ms_conf_p50": float(conf_p50),
    }
    columns.update(_bin_columns("ms_dir", hist[:n_bins]))
    columns["ms_dir_static"] = float(hist[n_bins])
    return columns


# --------------------------------------------------------------------------------------------
# Classical-backend descriptor
# --------------------------------------------------------------------------------------------


def _frame_base_channels(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(5, height, width)`` float32 standardised R, G, B, d(luma)/dx, d(luma)/dy of a frame.

    The frame is area-averaged to ``height x width`` (values in ``[0, 1]``); luminance is
    BT.601 of the averaged RGB; derivatives are 3x3 Sobel / 8 (per grid cell, mirrored
    border); every channel is then shifted to zero mean and divided by its standard deviation
    (floored at 1e-4) over the frame.
    """
    small = cv2.resize(
        frame.astype(np.float32) * np.float32(1.0 / 255.0),
        (width, height),
        interpolation=cv2.INTER_AREA,
    ).reshape(height, width, 3)  # (h, w, 3) in [0, 1]
    luma = np.ascontiguousarray(small @ _LUMA_WEIGHTS)  # (h, w)
    grad_x = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT_101) / 8
    grad_y = cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT_101) / 8
    channels = np.stack([small[..., 0], small[..., 1], small[..., 2], grad_x, grad_y])
    mean = channels.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(channels.std(axis=(1, 2), keepdims=True), _DESCRIPTOR_STD_FLOOR)
    return ((channels - mean) / std).astype(np.float32)  # (5, h, w)


def frame_descriptor(
    frames: npt.NDArray[np.uint8],
    stride: int = 8,
    context: int = 3,
) -> Tensor:
    """Per-frame feature maps for MotionSqueeze when no network features exist (DIS backend).

    Per frame: the RGB frame is area-averaged onto a grid of ``ceil(H / stride) x
    ceil(W / stride)`` cells (the shape of RAFT's encoder map for ``stride = 8``; a cell is
    ``H / h`` by ``W / w`` frame pixels, exactly ``stride`` when it divides the size); five
    base channels are formed: R, G, B and the horizontal and vertical luminance derivatives
    (3x3 Sobel on the grid), each standardised over the frame (zero mean, unit variance: a
    global brightness change does not move the descriptor, and cosine similarity, which
    :func:`motionsqueeze_maps` uses, becomes a normalised cross-correlation). Then the
    ``context x context`` neighbourhood of every cell is stacked (zero outside the frame), so a
    cell is matched by its local pattern, not by five numbers alone.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        stride: frame pixels per grid cell (>= 1).
        context: odd neighbourhood side in cells (1 = no neighbourhood).

    Returns:
        ``(T, 5 * context**2, ceil(H / stride), ceil(W / stride))`` float32 CPU tensor. Channel
        ``c * context**2 + i * context + j`` is base channel ``c`` (R, G, B, dx, dy) at offset
        ``(i - context // 2, j - context // 2)`` (rows, columns); values are unitless
        (standard deviations), roughly in ``[-5, 5]``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if context < 1 or context % 2 == 0:
        raise ValueError(f"context must be a positive odd integer, got {context}")
    count, height, width, _ = frames.shape
    grid_h, grid_w = math.ceil(height / stride), math.ceil(width / stride)
    base = np.empty((count, 5, grid_h, grid_w), dtype=np.float32)
    for index in range(count):
        base[index] = _frame_base_channels(frames[index], grid_h, grid_w)
    descriptor = torch.from_numpy(base)  # (T, 5, h, w)
    if context > 1:
        stacked = F.unfold(descriptor, context, padding=context // 2)  # (T, 5*k*k, h*w)
        descriptor = stacked.view(count, 5 * context * context, grid_h, grid_w)
    return descriptor.contiguous()


# --------------------------------------------------------------------------------------------
# Per-clip bundle
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotionFeatureConfig:
    """Every knob of the motion-feature computations (defaults documented in the module).

    Attributes:
        clip_len: frames per clip (:func:`clip_windows`).
        clip_stride: frames between clip starts; None = ``clip_len - 1`` (shared frame).
        drop_tail: drop a final clip shorter than ``clip_len``.
        n_bins: orientation bins of HOF, MBH and the MotionSqueeze direction histogram.
        static_threshold: px/frame at or below which a flow pixel is static.
        mbh_eps: per-pixel floor of the MBH normalisation, 1/frame.
        patch_size, dilation, sigma, temperature: MotionSqueeze soft-argmax parameters.
        ms_static_threshold: feature-grid cells/frame at or below which a cell is static.
        pairs_per_batch: pairs per correlation call.
        descriptor_stride, descriptor_context: :func:`frame_descriptor` parameters.
    """

    clip_len: int = DEFAULT_CLIP_LEN
    clip_stride: int | None = None
    drop_tail: bool = False
    n_bins: int = DEFAULT_N_BINS
    static_threshold: float = DEFAULT_STATIC_THRESHOLD
    mbh_eps: float = DEFAULT_MBH_EPS
    patch_size: int = 15
    dilation: int = 1
    sigma: float = 5.0
    temperature: float = 100.0
    ms_static_threshold: float = DEFAULT_MS_STATIC_THRESHOLD
    pairs_per_batch: int = 4
    descriptor_stride: int = 8
    descriptor_context: int = 3

    def __post_init__(self) -> None:
        clip_windows(0, self.clip_len, self.clip_stride)  # validates clip_len and stride
        _check_bins(self.n_bins)
        if self.patch_size < 3 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be an odd integer >= 3, got {self.patch_size}")
        if self.dilation < 1 or self.pairs_per_batch < 1:
            raise ValueError("dilation and pairs_per_batch must be >= 1")
        if min(self.static_threshold, self.mbh_eps, self.ms_static_threshold) < 0:
            raise ValueError("thresholds and mbh_eps must be >= 0")


def clip_features(
    config: MotionFeatureConfig,
    *,
    flows: npt.ArrayLike | None = None,
    features: Tensor | None = None,
) -> tuple[dict[str, float], MotionMaps | None]:
    """Feature columns (and MotionSqueeze maps) of one clip.

    Args:
        config: parameters.
        flows: ``(T-1, H, W, 2)`` flow of the clip, or None to skip the flow columns.
        features: ``(T, C, h, w)`` feature maps of the clip (encoder or
            :func:`frame_descriptor`), or None to skip the MotionSqueeze columns.

    Returns:
        Ordered columns (flow columns then MotionSqueeze columns) and the maps (None without
        ``features``).
    """
    columns: dict[str, float] = {}
    if flows is not None:
        columns.update(
            flow_statistics(
                flows,
                n_bins=config.n_bins,
                static_threshold=config.static_threshold,
                mbh_eps=config.mbh_eps,
            )
        )
    maps = None
    if features is not None:
        maps = motionsqueeze_maps(
            features,
            patch_size=config.patch_size,
            dilation=config.dilation,
            sigma=config.sigma,
            temperature=config.temperature,
            pairs_per_batch=config.pairs_per_batch,
        )
        columns.update(
            motionsqueeze_statistics(
                maps.displacement,
                maps.confidence,
                patch_size=config.patch_size,
                dilation=config.dilation,
                n_bins=config.n_bins,
                static_threshold=config.ms_static_threshold,
            )
        )
    return columns, maps


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


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
    disp = _as_numpy_f32(displacement)
    conf = _as_numpy_f32(confidence)
    _check_maps(disp, conf)
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
    with atomic_path(path) as temporary, temporary.open("wb") as handle:
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
    rows; rows built by :func:`clip_key` + :func:`flow_statistics` /
    :func:`motionsqueeze_statistics` therefore follow :func:`flow_feature_columns` then
    :func:`motionsqueeze_feature_columns`. A column missing from a row is NaN there. Leading
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
    with atomic_path(path) as temporary:
        if _is_csv(path):
            frame.to_csv(temporary, index=False)
        else:
            frame.to_parquet(temporary, engine="pyarrow", index=False)


def read_table(path: PathLike) -> pd.DataFrame:
    """Read a table of :func:`write_table` (``video`` stays a string even if numeric)."""
    if _is_csv(path):
        frame = pd.read_csv(path, dtype={"video": str})
        leading = {key: value for key, value in _LEADING_DTYPES.items() if key in frame.columns}
        return frame.astype(leading)
    return pd.read_parquet(path, engine="pyarrow")
