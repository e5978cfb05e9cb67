"""MotionSqueeze maps of a clip and their pooled columns (the ``ms_*`` columns).

:func:`motionsqueeze_maps` runs the parameter-free part of MotionSqueeze (local correlation,
then kernel soft-argmax, :mod:`models.motionsqueeze`) on consecutive per-frame feature maps;
:func:`motionsqueeze_statistics` pools the maps into the ``ms_*`` columns of the
motion-feature table (meanings and units: :mod:`stages.motion_features`). Directions are
binned as in :mod:`stages.flow_statistics` (0 = right, counter-clockwise on screen).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from models.motionsqueeze import (
    OFFICIAL_WINDOW,
    SoftArgmaxWindow,
    local_correlation,
    soft_argmax_displacement,
)

from .flow_statistics import (
    DEFAULT_N_BINS,
    bin_columns,
    check_bins,
    normalise_l1,
    orientation_histogram,
)

DEFAULT_MS_STATIC_THRESHOLD = 0.5
"""MotionSqueeze displacement (feature-grid cells/frame) at or below which a cell is static:
features are sampled once per cell, so the direction of a sub-half-cell soft-argmax is noise."""


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
    window: SoftArgmaxWindow = OFFICIAL_WINDOW,
    *,
    pairs_per_batch: int = 4,
) -> MotionMaps:
    """Parameter-free MotionSqueeze motion maps of consecutive per-frame feature maps.

    For each pair ``(t, t + 1)``: :func:`models.motionsqueeze.local_correlation` (cosine
    similarity over a ``patch_size`` window) then :func:`models.motionsqueeze.
    soft_argmax_displacement` (kernel soft-argmax) with ``window`` (by default the official
    MotionSqueeze one: patch 15, sigma 5, temperature 100, no dilation). Unlike the trained module there is no learned 1x1 channel reduction:
    the maps are matched as given. The confidence is the best cosine similarity: it is high
    for a textureless region too (everything matches), so it measures how well the best match
    fits, not how unique it is. Runs without autograd on the device of ``features``; pairs
    are processed ``pairs_per_batch`` at a time (the correlation volume of one pair is
    ``patch_size**2 * h * w`` floats).

    Args:
        features: ``(T, C, h, w)`` float per-frame feature maps of one clip, ``T >= 2``
            (RAFT's feature encoder: ``C = 256`` or ``128`` at 1/8 resolution; or
            :func:`stages.frame_descriptor.frame_descriptor`).
        window: the matching window and soft-argmax parameters.
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
                features[first:last], features[first + 1 : last + 1], *window[:2]
            )  # (b, P*P, h, w)
            displacement, confidence = soft_argmax_displacement(
                corr, *window
            )  # (b, 2, h, w), (b, 1, h, w)
            displacements.append(displacement.float())
            confidences.append(confidence.float())
    return MotionMaps(torch.cat(displacements), torch.cat(confidences))


def motionsqueeze_feature_columns(n_bins: int = DEFAULT_N_BINS) -> tuple[str, ...]:
    """Column names of :func:`motionsqueeze_statistics`, in order (meanings: the table in
    :mod:`stages.motion_features`)."""
    check_bins(n_bins)
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


def as_float32_array(array: Tensor | npt.ArrayLike) -> np.ndarray:
    """A tensor (any device) or array-like as a float32 numpy array."""
    if isinstance(array, Tensor):
        return array.detach().to("cpu", torch.float32).numpy()
    return np.asarray(array, dtype=np.float32)


def check_maps(displacement: np.ndarray, confidence: np.ndarray) -> None:
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
        direction histogram (orientation convention of :mod:`stages.flow_statistics`),
        L1-normalised.
    """
    check_bins(n_bins)
    disp = as_float32_array(displacement)
    conf = as_float32_array(confidence)
    check_maps(disp, conf)
    cells_per_unit = (patch_size - 1) / 2 * dilation
    dx, dy = disp[:, 0].ravel(), disp[:, 1].ravel()
    weights = conf.ravel()
    length = np.hypot(dx, dy)
    moving = length * cells_per_unit > static_threshold

    hist = np.zeros(n_bins + 1, dtype=np.float64)
    hist[:n_bins] = orientation_histogram(dx, dy, np.where(moving, weights, 0), n_bins)
    hist[n_bins] = float(weights[~moving].sum(dtype=np.float64))
    hist = normalise_l1(hist)

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
    columns.update(bin_columns("ms_dir", hist[:n_bins]))
    columns["ms_dir_static"] = float(hist[n_bins])
    return columns
