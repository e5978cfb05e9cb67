"""Flow statistics of a clip: magnitudes, mean motion, HOF and MBH, pooled over all pixels.

:func:`flow_statistics` turns the ``T - 1`` flow fields of one clip into the ``flow_*``,
``hof_*`` and ``mbh*`` columns of the motion-feature table (meanings and units:
:mod:`stages.motion_features`). The orientation histogram here (:func:`orientation_histogram`)
also bins the MotionSqueeze directions (:mod:`stages.motionsqueeze_maps`).

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
    the interior, one-sided differences on the first/last row and column, 0 across a side of
    a single pixel. Units: pixels of flow per pixel of image, per frame step (``1/frame``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

DEFAULT_N_BINS = 8
"""Orientation bins of HOF, MBH and the MotionSqueeze direction histogram (45 degrees each)."""

DEFAULT_STATIC_THRESHOLD = 0.4
"""Flow magnitude (px/frame) at or below which a pixel is "not moving": ``min_flow`` of the
dense trajectories code (Wang et al.); sub-half-pixel flow is at the level of estimation noise
in static regions."""

DEFAULT_MBH_EPS = 1e-3
"""Floor of the MBH normalisation, per pixel, in 1/frame (see :func:`flow_statistics`)."""

_PERCENTILES: tuple[int, ...] = (10, 50, 90, 99)


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
    if array.shape[1] < 1 or array.shape[2] < 1:
        raise ValueError(f"flow fields must not be empty, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"flows must be floating point, got dtype {array.dtype}")
    return array


def check_bins(n_bins: int) -> None:
    """Raise ``ValueError`` unless there is at least one orientation bin."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")


def orientation_histogram(
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
    counts[:n_bins] = orientation_histogram(u, v, np.where(moving, magnitude, 0), n_bins)
    counts[n_bins] = float(moving.size - np.count_nonzero(moving))
    return counts


class _FieldGradients(NamedTuple):
    """Spatial derivatives of one flow field, each ``(H, W)`` float32, 1/frame."""

    du_dx: np.ndarray
    du_dy: np.ndarray
    dv_dx: np.ndarray
    dv_dy: np.ndarray


def _derivatives(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(d/dy, d/dx)`` of an ``(H, W)`` field; 0 along a side of one pixel (no neighbour)."""
    return tuple(
        np.gradient(field, axis=axis) if field.shape[axis] > 1 else np.zeros_like(field)
        for axis in (0, 1)  # axis 0 = y (down), axis 1 = x (right)
    )


def _field_gradients(u: np.ndarray, v: np.ndarray) -> _FieldGradients:
    """Centred-difference derivatives of ``u`` and ``v`` (``(H, W)`` each)."""
    du_dy, du_dx = _derivatives(u)
    dv_dy, dv_dx = _derivatives(v)
    return _FieldGradients(du_dx, du_dy, dv_dx, dv_dy)


def _magnitude(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``sqrt(x^2 + y^2)`` of float32 ``(H, W)`` arrays with OpenCV's vectorised
    :func:`cv2.magnitude` (within an ulp of :func:`numpy.hypot`, which took 10x as long and a
    third of a field's statistics)."""
    return cv2.magnitude(x, y)


def _mbh_counts(grads: _FieldGradients, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised MBHx and MBHy of one field, ``(n_bins,)`` float64 each."""
    mag_u = _magnitude(grads.du_dx, grads.du_dy)
    mag_v = _magnitude(grads.dv_dx, grads.dv_dy)
    mbhx = orientation_histogram(grads.du_dx, grads.du_dy, mag_u, n_bins)
    mbhy = orientation_histogram(grads.dv_dx, grads.dv_dy, mag_v, n_bins)
    return mbhx, mbhy


def _field_components(stack: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """``u, v`` of field ``index`` as contiguous float32 ``(H, W)``; raises on NaN/inf."""
    u = np.ascontiguousarray(stack[index, :, :, 0], dtype=np.float32)
    v = np.ascontiguousarray(stack[index, :, :, 1], dtype=np.float32)
    if not (np.isfinite(u).all() and np.isfinite(v).all()):
        raise ValueError(f"flow field {index} holds NaN or infinite values")
    return u, v


def normalise_l1(hist: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """``hist / (sum(hist) + floor)``; all zeros when that denominator is 0."""
    total = float(hist.sum()) + floor
    return hist / total if total > 0.0 else np.zeros_like(hist)


def bin_columns(prefix: str, hist: np.ndarray) -> dict[str, float]:
    """``{"<prefix>_00": hist[0], ...}``: one column per orientation bin."""
    return {f"{prefix}_{k:02d}": float(value) for k, value in enumerate(hist)}


def flow_feature_columns(n_bins: int = DEFAULT_N_BINS) -> tuple[str, ...]:
    """Column names of :func:`flow_statistics`, in order (meanings: the table in
    :mod:`stages.motion_features`)."""
    check_bins(n_bins)
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
        magnitude = _magnitude(u, v)  # (H, W) float32
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

    HOF, the histogram of oriented flow (Laptev et al. 2008; Dalal et al. 2006): a pixel
    moving more than ``static_threshold`` px adds its magnitude (px) to the orientation bins
    (module convention: linear interpolation between the two nearest bins); a pixel at or
    below it adds 1 to the "no motion" bin (so a static pixel weighs as much as one moving
    1 px, as in the dense trajectories code); the bins are L1-normalised.

    MBH, the motion boundary histograms (Dalal, Triggs and Schmid 2006): MBHx is the
    orientation histogram of the spatial gradient ``(du/dx, du/dy)`` of the x component, each
    pixel weighted by the gradient magnitude (bin 0 = u grows to the right, bin 2 = it grows
    upward); MBHy the same for ``v``. Constant motion (a camera pan) has no gradient, so MBH
    responds only to relative motion, i.e. motion boundaries. Normalisation:
    ``hist / (sum(hist) + mbh_eps * P)`` with ``P`` the pixels of all fields: with clear
    boundaries (mean gradient magnitude ``>> mbh_eps``) the bins sum to ~1; a flow without
    boundaries gives ~0 instead of noise amplified to a unit histogram.

    Args:
        flows: ``(N, H, W, 2)`` (``N = T - 1`` pairs of the clip) or ``(H, W, 2)`` float flow,
            px/frame at the frame's resolution, x right, y down; fields of any size, finite.
        n_bins: orientation bins of HOF and MBH.
        static_threshold: px/frame at or below which a pixel is static (HOF static bin and
            ``moving_fraction``).
        mbh_eps: per-pixel floor of the MBH normalisation, 1/frame (>= 0).

    Returns:
        Ordered ``{column: value}`` with the keys of :func:`flow_feature_columns` (meanings
        and units: the table in :mod:`stages.motion_features`). Memory: one float32
        magnitude per pixel plus one field's temporaries.
    """
    check_bins(n_bins)
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
    hof = normalise_l1(sums.hof)
    columns.update(bin_columns("hof", hof[:n_bins]))
    columns["hof_static"] = float(hof[n_bins])
    for name, counts in (("mbhx", sums.mbhx), ("mbhy", sums.mbhy)):
        columns.update(bin_columns(name, normalise_l1(counts, mbh_eps * pixels)))
        columns[f"{name}_mag_mean"] = float(counts.sum()) / pixels
    return columns
