"""Tracing the recurrent refinement: the intermediate tensors of :meth:`models.raft.RAFT.refine`.

Pass a :class:`RefineTrace` as ``refine(..., trace=trace)``; ``refine`` fills it while it runs
and returns what it always returns. Without a trace, ``refine`` runs its normal path (one
``is None`` test per step). With one, the convex-upsampling mask is predicted at every iteration
(it never feeds back into the recurrence, so the flow is unchanged) and each iteration's flow
is upsampled as the official training-mode forward does.

Nothing here reads or writes files: the trace holds tensors, the pictures are made elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def correlation_rows(
    fmap1: torch.Tensor, fmap2: torch.Tensor, cells: torch.Tensor, *, num_levels: int
) -> list[torch.Tensor]:
    """Rows of the all-pairs correlation pyramid for a few frame-1 positions.

    Row ``p`` at level ``k`` is what :class:`models.corr.AllPairsCorrelation` holds for cell
    ``cells[p]``: ``fmap1(cell) . fmap2 / sqrt(C)``, average-pooled by 2 ``k`` times. Pooling acts
    on the frame-2 dimensions only, so pooling a row equals taking the row of the pooled volume.

    Args:
        fmap1, fmap2: ``(B, C, h, w)`` float32 features.
        cells: ``(P, 2)`` int64 cells ``(x, y)`` on the 1/8 grid.
        num_levels: pyramid levels.

    Returns:
        ``num_levels`` tensors ``(B, P, h_k, w_k)``.
    """
    b, c, h, w = fmap1.shape
    query = fmap1[:, :, cells[:, 1], cells[:, 0]] / math.sqrt(c)  # (B, C, P)
    rows = torch.bmm(query.transpose(1, 2), fmap2.reshape(b, c, h * w))  # (B, P, h*w)
    level = rows.view(b * cells.shape[0], 1, h, w)
    out = [level.view(b, -1, h, w)]
    for _ in range(num_levels - 1):
        level = F.avg_pool2d(level, 2, stride=2)
        out.append(level.view(b, -1, *level.shape[-2:]))
    return out


@dataclass(eq=False)
class RefineTrace:
    """What one :meth:`~models.raft.RAFT.refine` call computed, step by step.

    Set ``cells`` (``(x, y)`` positions on the 1/8 grid of the padded input) to also keep, for
    those positions, their rows of the correlation pyramid, their lookup windows and their GMA
    attention rows. All tensors are detached; ``B`` is the batch, ``N`` the iterations, ``P`` the
    number of cells, ``L`` the pyramid levels, ``k = 2r + 1`` the lookup window side.

    Filled by ``refine``:
        coords0: ``(B, 2, h, w)`` the 1/8-grid coordinates (x, y) of every position.
        centres: ``N`` x ``(B, 2, h, w)``: where frame 2 is looked up at the start of each
            iteration (``coords0 + flow`` before that iteration's update).
        deltas: ``N`` x ``(B, 2, h, w)``: the update ``delta f_k`` (1/8-grid pixels).
        flows_low: ``N`` x ``(B, 2, h, w)``: the flow after each iteration, 1/8-grid pixels.
        flows_up: ``N`` x ``(B, 2, 8h, 8w)``: the same upsampled (convex with that iteration's
            mask, or bilinear x8 without a mask head), pixels of the padded input.
        hidden: ``N`` x ``(B, hidden_dim, h, w)``: the GRU state after each iteration.
        mask: ``(B, 9 * 64, h, w)`` the last iteration's convex-upsampling logits (already
            scaled by 0.25), or ``None`` for a model without a mask head.
        correlation: ``L`` x ``(B, P, h_k, w_k)``: each cell's row of the correlation pyramid,
            as the network uses it (from the all-pairs volume itself when that is the
            correlation in use, else computed the same way from the features).
        lookups: ``N`` x ``(B, P, L, k, k)``: the correlation values the motion encoder read at
            each cell, indexed ``[level, dx + r, dy + r]`` (the network's channel order).
        attention: ``(B, heads, P, h, w)``: GMA's attention row of each cell, or ``None``.
    """

    cells: Sequence[tuple[int, int]] = ()
    coords0: torch.Tensor | None = None
    centres: list[torch.Tensor] = field(default_factory=list)
    deltas: list[torch.Tensor] = field(default_factory=list)
    flows_low: list[torch.Tensor] = field(default_factory=list)
    flows_up: list[torch.Tensor] = field(default_factory=list)
    hidden: list[torch.Tensor] = field(default_factory=list)
    mask: torch.Tensor | None = None
    correlation: list[torch.Tensor] = field(default_factory=list)
    lookups: list[torch.Tensor] = field(default_factory=list)
    attention: torch.Tensor | None = None
    _cells: torch.Tensor | None = field(default=None, repr=False)

    def clear(self) -> None:
        """Forget what an earlier call recorded (``refine`` calls it before recording)."""
        self.coords0, self.mask, self.attention, self._cells = None, None, None, None
        for items in (self.centres, self.deltas, self.flows_low, self.flows_up, self.hidden):
            items.clear()
        self.correlation.clear()
        self.lookups.clear()

    def begin(
        self,
        *,
        fmap1: torch.Tensor,
        fmap2: torch.Tensor,
        coords0: torch.Tensor,
        corr_fn: object,
        num_levels: int,
        attention: torch.Tensor | None,
    ) -> None:
        """Called by ``refine`` once before the first iteration."""
        self.clear()
        h, w = fmap1.shape[-2:]
        cells = torch.as_tensor(list(self.cells), dtype=torch.int64).reshape(-1, 2)
        bad = (cells[:, 0] < 0) | (cells[:, 0] >= w) | (cells[:, 1] < 0) | (cells[:, 1] >= h)
        if bad.any():
            raise ValueError(
                f"trace cells {cells[bad].tolist()} lie outside the {w}x{h} grid (x, y on the "
                "1/8 grid of the padded input)"
            )
        cells = cells.to(fmap1.device)
        self._cells = cells
        self.coords0 = coords0.detach().clone()
        if not len(cells):
            return
        pyramid = getattr(corr_fn, "pyramid", None)
        if pyramid is not None:  # the all-pairs volume: take the rows the network holds
            b = fmap1.shape[0]
            index = cells[:, 1] * w + cells[:, 0]  # (P,)
            rows = (torch.arange(b, device=cells.device)[:, None] * (h * w) + index).reshape(-1)
            self.correlation = [
                level[rows, 0].reshape(b, len(cells), *level.shape[-2:]).detach().clone()
                for level in pyramid
            ]
        else:
            self.correlation = [
                level.detach()
                for level in correlation_rows(
                    fmap1.detach(), fmap2.detach(), cells, num_levels=num_levels
                )
            ]
        if attention is not None:
            b, heads = attention.shape[:2]
            rows = attention[:, :, cells[:, 1] * w + cells[:, 0]]  # (B, heads, P, h*w)
            self.attention = rows.detach().reshape(b, heads, len(cells), h, w).clone()

    def record(
        self,
        *,
        centre: torch.Tensor,
        lookup: torch.Tensor,
        delta: torch.Tensor,
        hidden: torch.Tensor,
        flow_low: torch.Tensor,
        flow_up: torch.Tensor,
        mask: torch.Tensor | None,
        num_levels: int,
    ) -> None:
        """Called by ``refine`` after each iteration."""
        self.centres.append(centre.detach().clone())
        self.deltas.append(delta.detach().float())
        self.flows_low.append(flow_low.detach().clone())
        self.flows_up.append(flow_up.detach())
        self.hidden.append(hidden.detach().float())
        self.mask = None if mask is None else mask.detach().float()
        cells = self._cells
        if cells is not None and len(cells):
            b = lookup.shape[0]
            k = math.isqrt(lookup.shape[1] // num_levels)
            at_cells = lookup[:, :, cells[:, 1], cells[:, 0]]  # (B, L*k*k, P)
            at_cells = at_cells.permute(0, 2, 1).reshape(b, len(cells), num_levels, k, k)
            self.lookups.append(at_cells.detach().float().clone())
