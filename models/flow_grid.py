"""The flow grid of RAFT-style networks: pixel coordinates, the initial estimate, upsampling.

Flow lives on the 1/8-resolution grid of the padded input as ``(B, 2, h, w)`` float32 in grid
pixels (channel 0 = x, 1 = y) until it is upsampled to ``(B, 2, 8h, 8w)`` full-resolution
pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def coords_grid(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """``(B, 2, h, w)`` float32 pixel coordinates, channel 0 = x, channel 1 = y."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys])[None].repeat(batch, 1, 1, 1)


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Convex upsampling (RAFT, Sec. 3.3).

    Args:
        flow: ``(B, 2, h, w)`` in 1/8-resolution pixels.
        mask: ``(B, 9 * factor^2, h, w)`` logits of the 3x3 convex weights per sub-pixel.

    Returns:
        ``(B, 2, factor*h, factor*w)`` in full-resolution pixels.
    """
    b, _, h, w = flow.shape
    weights = torch.softmax(mask.view(b, 1, 9, factor, factor, h, w), dim=2)
    neighbours = F.unfold(factor * flow, [3, 3], padding=1).view(b, 2, 9, 1, 1, h, w)
    up = torch.sum(weights * neighbours, dim=2)  # (B, 2, f, f, h, w)
    up = up.permute(0, 1, 4, 2, 5, 3)  # (B, 2, h, f, w, f)
    return up.reshape(b, 2, factor * h, factor * w)


def bilinear_upsample(flow: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """``(B, 2, h, w)`` -> ``(B, 2, factor*h, factor*w)``, values scaled to full-res pixels."""
    h, w = flow.shape[-2:]
    size = (factor * h, factor * w)
    return factor * F.interpolate(flow, size=size, mode="bilinear", align_corners=True)


def initial_coords(coords0: torch.Tensor, flow_init: torch.Tensor | None) -> torch.Tensor:
    """``coords0 + flow_init`` (float32), after checking ``flow_init``'s shape and values."""
    if flow_init is None:
        return coords0.clone()
    if flow_init.shape != coords0.shape:
        raise ValueError(
            f"flow_init must be (B, 2, h, w) = {tuple(coords0.shape)} on the 1/8 grid "
            f"of the padded input, got {tuple(flow_init.shape)}"
        )
    if not bool(torch.isfinite(flow_init).all()):
        raise ValueError("flow_init has NaN or infinite values")
    return coords0 + flow_init.to(coords0.dtype)
