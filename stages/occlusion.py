"""Occlusion and motion-boundary masks of optical flow: which pixels a warping error may count.

Flows are ``(B, 2, H, W)`` in pixels, channel 0 = x (right), channel 1 = y (down); ``flow_fw``
goes from frame ``t`` to frame ``t + k`` and ``flow_bw`` from ``t + k`` back to ``t``. Masks are
``(B, 1, H, W)`` bool. Warping follows :mod:`stages.warp`.

:func:`forward_backward_occlusion` (Sundaram, Brox and Keutzer, ECCV 2010) and
:func:`motion_boundaries` (the criterion of Ruder, Dosovitskiy and Brox, GCPR 2016), and
:func:`flow_masks`, both with a ``warp`` config's settings; the metrics that use them are in
:mod:`stages.consistency`, which also exports these names. ``float_dtype``, ``squared_norm``,
``check_flow`` and ``check_same_flow_shapes`` are shared with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .settings import WarpConfig
from .warp import backward_warp

__all__ = [
    "Difference",
    "FlowMasks",
    "flow_gradients",
    "flow_masks",
    "forward_backward_occlusion",
    "motion_boundaries",
]

Difference = Literal["central", "forward"]


def forward_backward_occlusion(
    flow_fw: torch.Tensor,
    flow_bw: torch.Tensor,
    *,
    alpha1: float = 0.01,
    alpha2: float = 0.5,
    warped_bw: tuple[torch.Tensor, torch.Tensor] | None = None,
    outside_occluded: bool = True,
) -> torch.Tensor:
    """Forward-backward consistency check of Sundaram et al. 2010.

    With ``f = flow_fw(p)`` and ``b = flow_bw(p + f)`` (``flow_bw`` sampled bilinearly at the
    forward target, :func:`stages.warp.backward_warp`), pixel ``p`` is *not* occluded iff::

        |f + b|^2 < alpha1 * (|f|^2 + |b|^2) + alpha2          (squared lengths in pixels^2)

    A pixel whose forward target ``p + f`` leaves ``[0, W-1] x [0, H-1]`` counts as occluded
    (``outside_occluded``, the default): its content is not visible in the second frame, and
    no backward flow exists there to check; ``outside_occluded=False`` checks it against the
    border-clamped backward flow instead, as Lai et al. Non-finite flow is occluded.

    Args:
        flow_fw: ``(B, 2, H, W)`` flow t -> t+k in pixels.
        flow_bw: ``(B, 2, H, W)`` flow t+k -> t in pixels.
        alpha1: relative tolerance (dimensionless), 0.01 in the paper.
        alpha2: absolute tolerance in pixels^2, 0.5 in the paper.
        warped_bw: ``backward_warp(flow_bw, flow_fw, padding="border")`` in the flows' common
            dtype, when the caller has it (the warp stage warps a frame and the backward flow
            together, since they share the sample points); computed here otherwise.

    Returns:
        ``(B, 1, H, W)`` bool on ``flow_fw``'s grid (frame t), True = occluded.
    """
    check_same_flow_shapes(flow_fw, flow_bw)
    fw = flow_fw.to(float_dtype(flow_fw, flow_bw))
    bw_at_target, inside = warped_bw or backward_warp(flow_bw.to(fw.dtype), fw, padding="border")
    round_trip = squared_norm(fw + bw_at_target)
    tolerance = alpha1 * (squared_norm(fw) + squared_norm(bw_at_target)) + alpha2
    consistent = round_trip < tolerance  # False for NaN
    if not outside_occluded:
        return ~consistent
    return ~(consistent & inside)


def flow_gradients(
    flow: torch.Tensor, *, difference: Difference = "central"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial derivatives of each flow component, in pixels per pixel.

    ``"central"``: ``(f[x+1] - f[x-1]) / 2`` with the border pixel repeated outside the image
    (so at the border it is half the one-sided difference). This is the 3-tap filter
    ``[-0.5, 0, 0.5]`` (``CDerivative<float>(3)`` with mirrored borders) of Ruder et al.'s
    ``consistencyChecker.cpp``. ``"forward"``: ``f[x+1] - f[x]``, 0 on the last column / row,
    which is (up to sign, irrelevant once squared) ``compute_flow_gradients`` in Lai et al.'s
    ``utils.py``.

    Args:
        flow: ``(B, 2, H, W)`` flow in pixels.
        difference: ``"central"`` or ``"forward"``.

    Returns:
        ``(d_dx, d_dy)``, each ``(B, 2, H, W)`` in the flow's (floating) dtype.
    """
    check_flow(flow)
    if difference == "central":
        padded_x = F.pad(flow, (1, 1, 0, 0), mode="replicate")
        padded_y = F.pad(flow, (0, 0, 1, 1), mode="replicate")
        d_dx = (padded_x[..., 2:] - padded_x[..., :-2]) / 2
        d_dy = (padded_y[..., 2:, :] - padded_y[..., :-2, :]) / 2
    elif difference == "forward":
        d_dx = torch.zeros_like(flow)
        d_dy = torch.zeros_like(flow)
        d_dx[..., :-1] = flow[..., 1:] - flow[..., :-1]
        d_dy[..., :-1, :] = flow[..., 1:, :] - flow[..., :-1, :]
    else:
        raise ValueError(f"difference must be 'central' or 'forward', got {difference!r}")
    return d_dx, d_dy


def motion_boundaries(
    flow: torch.Tensor,
    *,
    alpha1: float = 0.01,
    alpha2: float = 0.002,
    difference: Difference = "central",
) -> torch.Tensor:
    """Motion boundaries: where the flow changes fast relative to its own magnitude.

    Pixel ``p`` is a motion boundary iff::

        |grad u|^2 + |grad v|^2 > alpha1 * |f|^2 + alpha2

    with ``f = (u, v) = flow(p)`` and the gradients of :func:`flow_gradients`. The default
    central differences are those of Ruder et al.'s ``consistencyChecker``, the reference
    implementation of this criterion. Being centred, they mark both sides of a flow
    discontinuity (a 2-pixel band symmetric about the edge, whatever the direction of the
    motion), whereas forward differences (Lai et al.) mark only the pixel before the step, a
    band biased half a pixel toward the top-left.

    Args:
        flow: ``(B, 2, H, W)`` flow in pixels.
        alpha1: relative tolerance (dimensionless), 0.01 in Ruder et al.
        alpha2: absolute tolerance in (pixels / pixel)^2, 0.002 in Ruder et al.
        difference: gradient operator, ``"central"`` or ``"forward"``.

    Returns:
        ``(B, 1, H, W)`` bool, True on motion boundaries.
    """
    field = flow.to(float_dtype(flow))
    d_dx, d_dy = flow_gradients(field, difference=difference)
    variation = (d_dx.square() + d_dy.square()).sum(dim=1, keepdim=True)
    return variation > alpha1 * squared_norm(field) + alpha2


@dataclass(frozen=True)
class FlowMasks:
    """The masks of a batch of flows that metrics and mask files share.

    ``occluded``: ``(B, 1, H, W)`` bool, :func:`forward_backward_occlusion` (None without
    backward flow). ``boundaries``: ``(B, 1, H, W)`` bool, :func:`motion_boundaries`.
    """

    occluded: torch.Tensor | None
    boundaries: torch.Tensor


def flow_masks(
    flow_fw: torch.Tensor,
    flow_bw: torch.Tensor | None,
    config: WarpConfig | None = None,
    *,
    difference: Difference | None = None,
    warped_bw: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> FlowMasks:
    """Occlusion (when ``flow_bw`` is given) and motion-boundary masks of ``flow_fw``
    ``(B, 2, H, W)`` with ``config``'s tolerances, gradient (``difference`` overrides
    ``mb_difference``) and treatment of targets outside the frame (``count_outside``); the
    ``warp`` section's defaults without a config. ``warped_bw``: as
    :func:`forward_backward_occlusion`'s."""
    config = config or WarpConfig()
    fw = flow_fw.to(float_dtype(flow_fw))
    occluded = None
    if flow_bw is not None:
        occluded = forward_backward_occlusion(
            fw,
            flow_bw,
            alpha1=config.fb_alpha1,
            alpha2=config.fb_alpha2,
            warped_bw=warped_bw,
            outside_occluded=not config.count_outside,
        )
    boundaries = motion_boundaries(
        fw,
        alpha1=config.mb_alpha1,
        alpha2=config.mb_alpha2,
        difference=difference or config.mb_difference,
    )
    return FlowMasks(occluded, boundaries)


def squared_norm(flow: torch.Tensor) -> torch.Tensor:
    """``u^2 + v^2`` of a ``(B, 2, H, W)`` flow, as ``(B, 1, H, W)``."""
    u, v = flow[:, 0:1], flow[:, 1:2]
    return u * u + v * v


def float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision is widened)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def check_flow(flow: torch.Tensor) -> None:
    if flow.ndim != 4 or flow.shape[1] != 2 or not flow.is_floating_point():
        raise ValueError(
            f"flow must be floating (B, 2, H, W), got {tuple(flow.shape)} {flow.dtype}"
        )


def check_same_flow_shapes(flow_fw: torch.Tensor, flow_bw: torch.Tensor) -> None:
    check_flow(flow_fw)
    check_flow(flow_bw)
    if flow_fw.shape != flow_bw.shape:
        raise ValueError(
            f"forward flow {tuple(flow_fw.shape)} and backward flow {tuple(flow_bw.shape)} "
            "must have the same shape"
        )
