"""Warm start: initialise a pair's flow from the previous pair's flow.

RAFT's Sintel submission (``create_sintel_submission(warm_start=True)``) forward-projects the
previous pair's 1/8-resolution flow along itself and fills every grid position with the value
of the nearest projected point (``scipy.interpolate.griddata(method="nearest")``), dropping
points that land outside ``(0, w) x (0, h)``. :func:`forward_interpolate` computes the same
thing in torch, on any device, with an exact brute-force nearest-neighbour search in chunks.
"""

from __future__ import annotations

import torch


def forward_interpolate(flow: torch.Tensor, *, chunk_size: int = 1024) -> torch.Tensor:
    """Forward-projects flow and fills the grid with nearest-neighbour values.

    Args:
        flow: ``(B, 2, h, w)`` or ``(2, h, w)`` float flow in grid pixels (x, y).
        chunk_size: grid positions compared against all projected points at once; memory is
            about ``chunk_size * h * w * 4`` bytes.

    Returns:
        A tensor of the same shape and dtype. Where no projected point lands inside the grid
        the result is zero. Ties between equidistant points are broken towards the point
        with the lowest row-major source index.
    """
    if flow.ndim == 3:
        return forward_interpolate(flow[None], chunk_size=chunk_size)[0]
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, h, w) or (2, h, w), got {tuple(flow.shape)}")
    b, _, h, w = flow.shape
    work = flow.detach().to(torch.float64)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=torch.float64),
        torch.arange(w, device=flow.device, dtype=torch.float64),
        indexing="ij",
    )
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)  # (h*w, 2) target positions
    out = torch.zeros_like(work)
    for i in range(b):
        values = work[i].reshape(2, -1).T  # (h*w, 2) flow at each source position
        landed = grid + values
        valid = (landed[:, 0] > 0) & (landed[:, 0] < w) & (landed[:, 1] > 0) & (landed[:, 1] < h)
        if not bool(valid.any()):
            continue
        points, point_values = landed[valid], values[valid]
        nearest = torch.empty(h * w, dtype=torch.long, device=flow.device)
        for start in range(0, h * w, chunk_size):
            stop = min(start + chunk_size, h * w)
            nearest[start:stop] = torch.cdist(
                grid[start:stop], points, compute_mode="donot_use_mm_for_euclid_dist"
            ).argmin(dim=1)
        out[i] = point_values[nearest].T.reshape(2, h, w)
    return out.to(flow.dtype)
