"""Temporal-consistency checks and metrics for a pair of frames and their optical flow.

Conventions: frames are ``(B, C, H, W)`` tensors, floating in ``[0, 1]`` or uint8 in ``0..255``
(divided by 255 here); flows are ``(B, 2, H, W)`` in pixels, channel 0 = x (right), channel 1 =
y (down); ``flow_fw`` goes from frame ``t`` to frame ``t + k`` and ``flow_bw`` from ``t + k``
back to ``t``. Masks are ``(B, 1, H, W)`` bool. Warping follows :mod:`stages.warp`.

Checks
    :func:`forward_backward_occlusion` (Sundaram, Brox and Keutzer, ECCV 2010),
    :func:`motion_boundaries` (the criterion of Ruder, Dosovitskiy and Brox, GCPR 2016) and
    :func:`flow_masks` live in :mod:`stages.occlusion` and are importable from here too.

Metrics
    :func:`warping_error` is E_warp of Lai et al., "Learning Blind Video Temporal Consistency"
    (ECCV 2018), computed as their ``evaluate_WarpError.py`` does; :func:`photometric_error`,
    :func:`flow_magnitude_stats`, and :func:`pair_metrics` / :func:`batch_metrics` gather all of
    them per frame pair. :func:`summarize_video` reduces a per-pair table to one row per video.

The plot of per-pair errors over time is :mod:`stages.error_plot`'s
(:func:`plot_error_over_time`, importable from here too).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from .error_plot import plot_error_over_time
from .occlusion import (
    Difference,
    FlowMasks,
    check_flow,
    float_dtype,
    flow_gradients,
    flow_masks,
    forward_backward_occlusion,
    motion_boundaries,
    squared_norm,
)
from .settings import WarpConfig
from .warp import backward_warp

logger = logging.getLogger(__name__)

__all__ = [
    "METRIC_KEYS",
    "Difference",
    "FlowMasks",
    "batch_metrics",
    "flow_gradients",
    "flow_magnitude_stats",
    "flow_masks",
    "forward_backward_occlusion",
    "masked_channel_mean",
    "motion_boundaries",
    "pair_metrics",
    "photometric_error",
    "plot_error_over_time",
    "summarize_video",
    "warping_error",
]

METRIC_KEYS: tuple[str, ...] = (
    "e_warp",
    "photometric_error",
    "occluded_fraction",
    "valid_fraction",
    "motion_boundary_fraction",
    "counted_fraction",
    "flow_mag_mean",
    "flow_mag_median",
    "flow_mag_p95",
    "flow_mag_max",
)
"""Keys of :func:`pair_metrics` / :func:`batch_metrics`, in order."""

_SUMMARY_MAX_KEYS = frozenset({"flow_mag_max"})


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def masked_channel_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the masked pixels *and* all channels, per batch item.

    ``sum_{p, c} mask(p) * values(p, c) / (C * sum_p mask(p))``, and 0 where the mask is empty
    (Lai et al. then divide a zero sum by ``H * W * C``). Values outside the mask are ignored,
    even when non-finite.

    Args:
        values: ``(B, C, H, W)`` floating.
        mask: ``(B, 1, H, W)`` bool, True = counted.

    Returns:
        ``(B,)`` in ``values``' dtype.
    """
    kept = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    total = kept.sum(dim=(1, 2, 3))
    count = mask.sum(dim=(1, 2, 3)).to(values.dtype) * values.shape[1]
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def warping_error(
    frame_t: torch.Tensor,
    frame_t1: torch.Tensor,
    flow_fw: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    require_valid: bool = True,
) -> torch.Tensor:
    """Warping error E_warp of Lai et al. 2018, one value per frame pair.

    Frame ``t + 1`` is warped back onto frame ``t`` with the forward flow,
    ``W(p) = I_{t+1}(p + flow_fw(p))`` (bilinear, border clamp, as FlowNet2's ``Resample2d``
    used by Lai et al.), and::

        E_warp = sum_{p, c} M(p) * (W(p, c) - I_t(p, c))^2  /  (C * sum_p M(p))

    i.e. the mean squared difference over the counted pixels *and* the C channels, with pixel
    values in [0, 1]. Source: ``evaluate_WarpError.py`` of phoenix104104/
    fast_blind_video_consistency (commit 8154b60, lines 91-116). Per pair they multiply the
    difference by the non-occlusion mask, square and sum it, and divide by the sum of that
    mask; the mask is the occlusion PNG loaded with their ``utils.read_img``, which calls
    ``cv2.imread`` in its default 3-channel mode, so the denominator counts each non-occluded
    pixel once per channel. When no pixel is counted they divide the zero sum by
    ``H * W * C``, so E_warp is 0; so is it here. The video E_warp is the mean over its pairs
    (:func:`summarize_video`).

    Their mask (``utils.detect_occlusion``) is the forward-backward check OR a motion boundary
    with forward differences; :func:`batch_metrics` builds the same kind of mask, by default
    with central differences and leaving out targets outside the frame; a ``warp`` config with
    ``mb_difference="forward"`` and ``count_outside=True`` gives theirs exactly.

    Args:
        frame_t, frame_t1: ``(B, C, H, W)`` frames t and t+1, floating in [0, 1] or uint8
            (divided by 255).
        flow_fw: ``(B, 2, H, W)`` flow t -> t+1 in pixels.
        mask: ``(B, 1, H, W)`` bool, True for non-occluded pixels (Lai et al.: neither
            forward-backward occluded nor on a motion boundary). None counts every pixel.
        require_valid: also drop pixels whose forward target leaves the frame (the default).
            ``False`` keeps them with border-clamped samples, exactly as Lai et al.'s code.

    Returns:
        ``(B,)`` E_warp per pair, float32 (float64 for float64 inputs).
    """
    residual, counted = _aligned_residual(frame_t, frame_t1, flow_fw, mask, require_valid)
    return masked_channel_mean(residual.square(), counted)


def photometric_error(
    frame_t: torch.Tensor,
    frame_t1: torch.Tensor,
    flow_fw: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    require_valid: bool = True,
) -> torch.Tensor:
    """Mean absolute photometric error after warping frame t+1 back to t, per pair.

    ``sum_{p, c} M(p) * |W(p, c) - I_t(p, c)| / (C * sum_p M(p))`` with the same warp, mask
    and empty-mask convention (0) as :func:`warping_error`; pixel values in [0, 1].

    Returns:
        ``(B,)`` float32 (float64 for float64 inputs).
    """
    residual, counted = _aligned_residual(frame_t, frame_t1, flow_fw, mask, require_valid)
    return masked_channel_mean(residual.abs(), counted)


def flow_magnitude_stats(flow: torch.Tensor) -> dict[str, torch.Tensor]:
    """Statistics of the per-pixel flow length ``sqrt(u^2 + v^2)`` in pixels, over all pixels.

    Quantiles interpolate linearly between order statistics (``numpy.percentile``'s default);
    they are computed with ``kthvalue`` so that large frames (beyond ``torch.quantile``'s 2^24
    element limit) work.

    Args:
        flow: ``(B, 2, H, W)`` flow in pixels.

    Returns:
        ``{"mean", "median", "p95", "max"}`` -> ``(B,)`` tensors in pixels (float32, or float64
        for float64 flow).
    """
    check_flow(flow)
    field = flow.to(float_dtype(flow))
    magnitude = squared_norm(field).sqrt().flatten(1)  # (B, H*W)
    return {
        "mean": magnitude.mean(dim=1),
        **dict(zip(("median", "p95"), _quantiles(magnitude, (0.5, 0.95)), strict=True)),
        "max": magnitude.amax(dim=1),
    }


def batch_metrics(
    frame_t: torch.Tensor,
    frame_t1: torch.Tensor,
    flow_fw: torch.Tensor,
    flow_bw: torch.Tensor | None = None,
    config: WarpConfig | None = None,
    *,
    difference: Difference | None = None,
    exclude_motion_boundaries: bool = True,
    masks: FlowMasks | None = None,
    warped: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """All per-pair metrics for a batch of pairs, as ``(B,)`` tensors keyed by :data:`METRIC_KEYS`.

    The pixels counted by ``e_warp`` and ``photometric_error`` are those whose forward target
    lies in the frame (any target with ``config.count_outside``, as Lai et al.), that pass
    the forward-backward check (when ``flow_bw`` is given) and, with
    ``exclude_motion_boundaries`` (the default, as Lai et al.'s occlusion maps), that are not
    on a motion boundary of ``flow_fw``.

    Keys (fractions are of all ``H * W`` pixels, in [0, 1]):
        ``e_warp``: :func:`warping_error` (pixel values in [0, 1]).
        ``photometric_error``: :func:`photometric_error`.
        ``occluded_fraction``: pixels flagged by :func:`forward_backward_occlusion`, and
        targets outside the frame unless ``config.count_outside``; NaN without ``flow_bw``.
        ``valid_fraction``: pixels whose forward target lies inside the frame.
        ``motion_boundary_fraction``: pixels flagged by :func:`motion_boundaries`.
        ``counted_fraction``: pixels counted by ``e_warp``.
        ``flow_mag_mean``, ``flow_mag_median``, ``flow_mag_p95``, ``flow_mag_max``:
        :func:`flow_magnitude_stats` of ``flow_fw`` in pixels.

    Args:
        frame_t, frame_t1: ``(B, C, H, W)`` frames, floating in [0, 1] or uint8.
        flow_fw: ``(B, 2, H, W)`` flow t -> t+k in pixels; ``flow_bw``: t+k -> t, or None.
        config: the ``warp`` section, whose ``fb_alpha*`` and ``mb_alpha*`` are the
            occlusion and motion-boundary tolerances (:class:`stages.settings.WarpConfig`:
            Sundaram et al.'s and Ruder et al.'s values by default).
        difference: gradient operator of :func:`motion_boundaries` (default: the config's
            ``mb_difference``).
        exclude_motion_boundaries: drop motion-boundary pixels from the error masks, as Lai
            et al.'s occlusion maps do.
        masks: the :func:`flow_masks` of these flows with this ``config`` and ``difference``,
            when the caller already has them (computed here otherwise).
        warped: ``backward_warp(frame_t1, flow_fw, padding="border")`` with the frames in
            [0, 1] and both in float32 (float64 for float64 inputs), when the caller already
            has it (computed here otherwise).

    Returns:
        ``{key: (B,) tensor}``, float32 (float64 for float64 inputs), on the inputs' device.
    """
    config = config or WarpConfig()
    frames_t, frames_t1 = _unit_frames(frame_t), _unit_frames(frame_t1)
    _check_pair(frames_t, frames_t1, flow_fw)
    _warn_unless_unit_range(frames_t, frames_t1)
    dtype = float_dtype(frames_t, flow_fw)
    fw = flow_fw.to(dtype)
    warped, inside = warped or backward_warp(frames_t1.to(dtype), fw, padding="border")
    masks = masks or flow_masks(fw, flow_bw, config, difference=difference)
    boundaries, occluded = masks.boundaries, masks.occluded
    counted = torch.ones_like(inside) if config.count_outside else inside
    occluded_fraction = torch.full((fw.shape[0],), math.nan, dtype=dtype, device=fw.device)
    if occluded is not None:
        counted = counted & ~occluded
        occluded_fraction = _fraction(occluded, dtype)
    if exclude_motion_boundaries:
        counted = counted & ~boundaries
    residual = warped - frames_t.to(dtype)
    magnitude = flow_magnitude_stats(fw)
    return {
        "e_warp": masked_channel_mean(residual.square(), counted),
        "photometric_error": masked_channel_mean(residual.abs(), counted),
        "occluded_fraction": occluded_fraction,
        "valid_fraction": _fraction(inside, dtype),
        "motion_boundary_fraction": _fraction(boundaries, dtype),
        "counted_fraction": _fraction(counted, dtype),
        "flow_mag_mean": magnitude["mean"],
        "flow_mag_median": magnitude["median"],
        "flow_mag_p95": magnitude["p95"],
        "flow_mag_max": magnitude["max"],
    }


def pair_metrics(
    frame_t: torch.Tensor,
    frame_t1: torch.Tensor,
    flow_fw: torch.Tensor,
    flow_bw: torch.Tensor | None = None,
    config: WarpConfig | None = None,
    **options: Any,
) -> list[dict[str, float]]:
    """Per-pair metrics as plain floats: one dict per batch item, ready for ``pd.DataFrame``.

    Same inputs, configuration, ``options`` and keys as :func:`batch_metrics` (which keeps them as tensors
    on the device); a single pair is a batch of one, so ``pair_metrics(...)[0]``.

    Returns:
        ``[{key: float} for each of the B pairs]``, keys in :data:`METRIC_KEYS` order.
    """
    metrics = batch_metrics(frame_t, frame_t1, flow_fw, flow_bw, config, **options)
    columns = {key: metrics[key].detach().to("cpu", torch.float64).tolist() for key in METRIC_KEYS}
    return [
        {key: float(columns[key][i]) for key in METRIC_KEYS} for i in range(len(columns["e_warp"]))
    ]


def summarize_video(
    per_pair: pd.DataFrame, *, columns: Sequence[str] | None = None
) -> dict[str, float]:
    """Reduce a per-pair metric table of one video to one summary row.

    Every metric column is averaged over the pairs (NaN skipped), except ``flow_mag_max``,
    which takes the maximum. In particular the video E_warp is the mean of the per-pair
    ``e_warp``, as Lai et al. (the sum of per-pair errors divided by the number of pairs, in
    ``evaluate_WarpError.py``). Per-pair medians
    and p95s are averaged, not pooled. Also reported: ``num_pairs`` and, when ``e_warp`` is
    present, ``e_warp_median`` and ``e_warp_max`` over the pairs.

    Args:
        per_pair: one row per pair, e.g. ``pd.DataFrame(pair_metrics(...))``; other columns
            (frame indices, timestamps, ids) are ignored.
        columns: metric columns to summarise; default: the :data:`METRIC_KEYS` present.

    Returns:
        ``{name: float}``; an empty table gives ``num_pairs = 0`` and NaN metrics.
    """
    if columns is None:  # the metrics present; all of them for a table without rows
        names = [key for key in METRIC_KEYS if key in per_pair.columns or per_pair.empty]
    else:
        names = list(columns)
    missing = [name for name in names if name not in per_pair.columns]
    if missing and not per_pair.empty:
        raise ValueError(f"columns {missing} not in the table (has {list(per_pair.columns)})")
    table = per_pair.reindex(columns=names).apply(pd.to_numeric, errors="coerce")
    summary: dict[str, float] = {"num_pairs": float(len(table))}
    for name in names:
        values = table[name]
        summary[name] = float(values.max() if name in _SUMMARY_MAX_KEYS else values.mean())
    if "e_warp" in names:
        summary["e_warp_median"] = float(table["e_warp"].median())
        summary["e_warp_max"] = float(table["e_warp"].max())
    return summary


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _aligned_residual(
    frame_t: torch.Tensor,
    frame_t1: torch.Tensor,
    flow_fw: torch.Tensor,
    mask: torch.Tensor | None,
    require_valid: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(warped_t1 - frame_t, counted mask)``: ``(B, C, H, W)`` in [-1, 1] and ``(B, 1, H, W)``."""
    frames_t, frames_t1 = _unit_frames(frame_t), _unit_frames(frame_t1)
    _check_pair(frames_t, frames_t1, flow_fw)
    _warn_unless_unit_range(frames_t, frames_t1, stacklevel=4)
    dtype = float_dtype(frames_t, flow_fw)
    warped, inside = backward_warp(frames_t1.to(dtype), flow_fw.to(dtype), padding="border")
    counted = inside if require_valid else torch.ones_like(inside)
    if mask is not None:
        _check_mask(mask, flow_fw)
        counted = counted & mask.to(torch.bool)
    return warped - frames_t.to(dtype), counted


def _unit_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames to float32 in [0, 1]; floating frames are returned unchanged."""
    if frames.dtype == torch.uint8:
        return frames.to(torch.float32) / 255.0
    if not frames.is_floating_point():
        raise ValueError(f"frames must be floating in [0, 1] or uint8, got {frames.dtype}")
    return frames


def _warn_unless_unit_range(*frames: torch.Tensor, stacklevel: int = 3) -> None:
    """Warns when floating frames reach far above 1: 0..255 data given as floats
    (``stacklevel``: :func:`warnings.warn`'s, 3 = the caller of this module's caller)."""
    highest = max((float(f.amax()) for f in frames if f.numel()), default=0.0)
    if highest > 2:
        warnings.warn(
            f"floating frames must be in [0, 1], these reach {highest:.4g}: divide 0..255 "
            "frames by 255 (or pass them as uint8)",
            stacklevel=stacklevel,
        )


def _quantiles(values: torch.Tensor, qs: Sequence[float]) -> list[torch.Tensor]:
    """Row-wise linear-interpolation quantiles of ``values`` (B, N), as ``numpy.percentile``:
    one ``(B,)`` tensor per ``q``."""
    count = values.shape[1]
    positions = [q * (count - 1) for q in qs]
    ranks = sorted(
        {r for p in positions for r in (math.floor(p), min(math.floor(p) + 1, count - 1))}
    )
    order = dict(zip(ranks, _order_statistics(values, ranks), strict=True))
    results = []
    for position in positions:
        lower = math.floor(position)
        low, high = order[lower], order[min(lower + 1, count - 1)]
        results.append(low + (position - lower) * (high - low))
    return results


def _order_statistics(values: torch.Tensor, ranks: list[int]) -> list[torch.Tensor]:
    """The ``rank``-th smallest (0-based) of each row of ``values`` (B, N) for every rank.

    On a CPU one multi-rank ``numpy.partition`` per row finds them all (several times faster
    than one ``kthvalue`` per rank); both order NaN last.
    """
    if values.device.type != "cpu" or values.requires_grad:
        return [values.kthvalue(rank + 1, dim=1).values for rank in ranks]
    parted = np.partition(values.detach().numpy(), ranks, axis=1)[:, ranks]  # (B, len(ranks))
    picked = torch.from_numpy(parted)
    return [picked[:, i] for i in range(len(ranks))]


def _fraction(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Fraction of True pixels of a ``(B, 1, H, W)`` bool mask, as ``(B,)`` of ``dtype``."""
    return mask.flatten(1).to(torch.float64).mean(dim=1).to(dtype)


def _check_pair(frame_t: torch.Tensor, frame_t1: torch.Tensor, flow: torch.Tensor) -> None:
    check_flow(flow)
    if frame_t.ndim != 4 or frame_t.shape != frame_t1.shape:
        raise ValueError(
            f"frames must both be (B, C, H, W) of one shape, got {tuple(frame_t.shape)} "
            f"and {tuple(frame_t1.shape)}"
        )
    if frame_t.shape[0] != flow.shape[0] or frame_t.shape[2:] != flow.shape[2:]:
        raise ValueError(
            f"frames {tuple(frame_t.shape)} and flow {tuple(flow.shape)} must share batch "
            "size and spatial size"
        )


def _check_mask(mask: torch.Tensor, flow: torch.Tensor) -> None:
    expected = (flow.shape[0], 1, *flow.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(f"mask must be {expected} (B, 1, H, W), got {tuple(mask.shape)}")
