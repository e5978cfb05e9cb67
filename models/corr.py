"""Correlation pyramids and their window lookup.

Both implementations answer the same question: for every position ``p`` of frame 1 on the 1/8
grid and every pyramid level ``i``, the correlation between ``fmap1(p)`` and ``fmap2`` (average
pooled ``i`` times) bilinearly sampled at ``coords(p) / 2^i + d`` for the ``(2r+1)^2`` integer
offsets ``d`` of a square window. The output is ``(B, levels * (2r+1)^2, h, w)``.

Channel order follows the official implementation exactly, because the trained motion encoder
depends on it: within a level, channel ``a * (2r+1) + b`` holds offset ``dx = a - r``
(horizontal) and ``dy = b - r`` (vertical). (The official code builds its offset grid as
``meshgrid(dy, dx)`` and adds it to ``(x, y)`` coordinates, which transposes the window; any
checkpoint trained with it expects this order.)

Levels whose pooled map has a side of length 1 (padded inputs of 64 to 127 pixels on a side)
contribute zeros. The official implementation divides by ``side - 1`` when it normalises the
sampling grid there and returns NaN flow for such inputs; zeros keep the other levels usable.

- :class:`AllPairsCorrelation`: the official pyramid of all-pairs volumes,
  ``h*w * (h*w) * (1 + 1/4 + 1/16 + 1/64)`` floats (4.2 GB for level 0 at 1080p).
- :class:`OnDemandCorrelation`: pools the *features* instead of the volume (average pooling
  and the dot product commute) and computes only the lookup windows, in chunks of positions:
  memory linear in the number of positions, no compiled extension.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

CorrKind = Literal["all-pairs", "on-demand"]
CORR_KINDS: tuple[str, ...] = ("all-pairs", "on-demand")


def _check_fmaps(fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int) -> None:
    if fmap1.shape != fmap2.shape or fmap1.ndim != 4:
        raise ValueError(
            f"feature maps must both be (B, C, h, w) with equal shapes, got "
            f"{tuple(fmap1.shape)} and {tuple(fmap2.shape)}"
        )
    h, w = fmap1.shape[-2:]
    smallest = 2 ** (num_levels - 1)
    if h < smallest or w < smallest:
        raise ValueError(
            f"a {num_levels}-level correlation pyramid needs a 1/8-resolution grid of at least "
            f"{smallest}x{smallest}, got {h}x{w} (input at least {8 * smallest}x{8 * smallest} "
            "pixels after padding)"
        )


def _window_offsets(radius: int, device: torch.device) -> torch.Tensor:
    """``(2r+1, 2r+1, 2)`` offsets ``(dx, dy)`` indexed ``[a, b]`` with dx = a - r, dy = b - r."""
    line = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    dx, dy = torch.meshgrid(line, line, indexing="ij")
    return torch.stack([dx, dy], dim=-1)


class AllPairsCorrelation:
    """The official all-pairs correlation pyramid (Teed & Deng 2020, Sec. 3.2).

    Args:
        fmap1, fmap2: ``(B, C, h, w)`` float32 features of frame 1 and frame 2.
        num_levels: pyramid levels (4).
        radius: lookup radius ``r`` (4 for RAFT and GMA, 3 for RAFT-small).
    """

    def __init__(
        self, fmap1: torch.Tensor, fmap2: torch.Tensor, *, num_levels: int = 4, radius: int = 4
    ) -> None:
        _check_fmaps(fmap1, fmap2, num_levels)
        self.num_levels = num_levels
        self.radius = radius
        b, c, h, w = fmap1.shape
        # Scaling the (h*w, C) query instead of the (h*w, h*w) volume (as the official code
        # does): same values up to rounding, and h*w*C divisions instead of (h*w)^2.
        query = (fmap1 / math.sqrt(c)).reshape(b, c, h * w).transpose(1, 2)  # (B, h*w, C)
        corr = torch.bmm(query, fmap2.reshape(b, c, h * w))  # (B, h*w, h2*w2)
        corr = corr.view(b * h * w, 1, h, w)  # (B*h*w, 1, h2, w2)
        self.pyramid = [corr]
        for _ in range(num_levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.pyramid.append(corr)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """``coords`` ``(B, 2, h, w)`` (x, y on the 1/8 grid) -> ``(B, levels*(2r+1)^2, h, w)``."""
        b, _, h, w = coords.shape
        k = 2 * self.radius + 1
        offsets = _window_offsets(self.radius, coords.device).view(1, k, k, 2)
        centres = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        out = []
        for level, volume in enumerate(self.pyramid):
            h2, w2 = volume.shape[-2:]
            if h2 == 1 or w2 == 1:
                out.append(coords.new_zeros(b, h, w, k * k))
                continue
            # Normalised sampling grid 2 * (centre / 2^level + offset) / (side - 1) - 1, built
            # in one pass: (B*h*w, k, k, 2) = centres * a + (offsets * unit - 1).
            unit = coords.new_tensor([2.0 / (w2 - 1), 2.0 / (h2 - 1)])
            grid = torch.addcmul(offsets * unit - 1, centres, unit / 2**level)
            sampled = F.grid_sample(volume, grid, mode="bilinear", align_corners=True)
            out.append(sampled.view(b, h, w, k * k))  # (B*h*w, 1, k, k) -> (B, h, w, k*k)
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().float()


class _LevelRows(NamedTuple):
    """One pyramid level of the second frame's features as a table of rows: ``table`` is
    ``(B * (height * width + 1), C)``, a trailing zero row per batch item standing for every
    out-of-image position; ``height x width`` is the level's size on the feature grid."""

    table: torch.Tensor
    height: int
    width: int


class OnDemandCorrelation:
    """Window-only correlation with memory linear in the number of positions.

    Numerically equal to :class:`AllPairsCorrelation` up to float32 rounding. All ``(2r+1)^2``
    samples of a window share one fractional position, so each window is the bilinear blend of
    the ``(2r+2)^2`` integer-position dot products around it.

    The dot products are computed per square tile of query positions: one box of frame-2
    features that covers every window of the tile, one matrix product, then each query's
    ``(2r+2)^2`` dots are picked out of it. A tile whose windows spread wider than the box (large
    flow variation inside the tile) falls back to gathering each query's window directly.

    Args:
        fmap1, fmap2: ``(B, C, h, w)`` float32 features of frame 1 and frame 2.
        num_levels: pyramid levels (4).
        radius: lookup radius ``r``.
        tile: side of a query tile on the 1/8 grid.
        box_slack: extra box side beyond ``tile + 2r + 1`` that absorbs flow variation
            inside a tile before the fallback is needed.
        max_chunk_bytes: bound on the working memory of one batch of tiles.
    """

    def __init__(
        self,
        fmap1: torch.Tensor,
        fmap2: torch.Tensor,
        *,
        num_levels: int = 4,
        radius: int = 4,
        tile: int = 8,
        box_slack: int = 8,
        max_chunk_bytes: int = 64 << 20,
    ) -> None:
        _check_fmaps(fmap1, fmap2, num_levels)
        self.num_levels = num_levels
        self.radius = radius
        self.tile = tile
        self.box = tile + 2 * radius + 1 + box_slack
        b, c, h, w = fmap1.shape
        self.batch, self.channels, self.height, self.width = b, c, h, w
        pad_h, pad_w = -h % tile, -w % tile
        self.tiles_y, self.tiles_x = (h + pad_h) // tile, (w + pad_w) // tile
        query = F.pad(fmap1 / math.sqrt(c), (0, pad_w, 0, pad_h))  # zeros: results are cropped
        query = query.view(b, c, self.tiles_y, tile, self.tiles_x, tile)
        # (B * tiles, tile*tile, C): one row per query position, tiles in row-major order.
        self.query = query.permute(0, 2, 4, 3, 5, 1).reshape(-1, tile * tile, c)
        per_tile_bytes = 4 * (
            self.box**2 * c + tile**2 * self.box**2 + tile**2 * (2 * radius + 2) ** 2
        )
        self.tiles_per_chunk = max(1, max_chunk_bytes // per_tile_bytes)
        self.levels: list[_LevelRows] = []
        f2 = fmap2
        for level in range(num_levels):
            if level > 0:
                f2 = F.avg_pool2d(f2, 2, stride=2)
            h2, w2 = f2.shape[-2:]
            # A trailing zero row per batch item stands for every out-of-image position.
            rows = torch.cat([f2.reshape(b, c, h2 * w2).transpose(1, 2), f2.new_zeros(b, 1, c)], 1)
            self.levels.append(_LevelRows(rows.reshape(-1, c), h2, w2))

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """``coords`` ``(B, 2, h, w)`` (x, y on the 1/8 grid) -> ``(B, levels*(2r+1)^2, h, w)``."""
        if coords.shape != (self.batch, 2, self.height, self.width):
            raise ValueError(
                f"coords must be {(self.batch, 2, self.height, self.width)}, "
                f"got {tuple(coords.shape)}"
            )
        b, h, w, t = self.batch, self.height, self.width, self.tile
        k = 2 * self.radius + 1
        # Replicate padding keeps a ragged tile's windows as compact as its neighbours'.
        padded = F.pad(coords, (0, self.tiles_x * t - w, 0, self.tiles_y * t - h), mode="replicate")
        tiled = padded.view(b, 2, self.tiles_y, t, self.tiles_x, t)
        tiled = tiled.permute(0, 2, 4, 3, 5, 1).reshape(-1, t * t, 2)  # (B*tiles, t*t, 2)
        levels = []
        for level, rows in enumerate(self.levels):
            if rows.height == 1 or rows.width == 1:
                levels.append(tiled.new_zeros(tiled.shape[0], t * t, k, k))
                continue
            levels.append(self._level(tiled / 2**level, rows))
        out = torch.stack(levels, dim=2)  # (B*tiles, t*t, L, k_dx, k_dy)
        out = out.view(b, self.tiles_y, self.tiles_x, t, t, self.num_levels * k * k)
        out = out.permute(0, 5, 1, 3, 2, 4).reshape(b, -1, self.tiles_y * t, self.tiles_x * t)
        return out[:, :, :h, :w].contiguous()

    def _level(self, centres: torch.Tensor, rows: _LevelRows) -> torch.Tensor:
        """Windows of one level for every tile: ``(B*tiles, t*t, k_dx, k_dy)``."""
        r, box = self.radius, self.box
        m = 2 * r + 2
        base_f = torch.floor(centres)
        frac = centres - base_f  # (B*tiles, t*t, 2), shared by the whole window
        base = base_f.long()
        low = base.amin(dim=1) - r  # (B*tiles, 2): top-left corner of the tile's box
        spread = base.amax(dim=1) + r + 1 - low + 1
        fits = (spread <= box).all(dim=1)
        tiles_per_batch = self.tiles_y * self.tiles_x
        item = torch.arange(base.shape[0], device=base.device) // tiles_per_batch
        row_offset = item * (
            rows.height * rows.width + 1
        )  # first row of each tile's batch item in ``rows``
        dots = centres.new_empty(base.shape[0], base.shape[1], m, m)  # [.., y, x]
        boxed = torch.nonzero(fits).flatten()
        for start in range(0, boxed.numel(), self.tiles_per_chunk):
            ids = boxed[start : start + self.tiles_per_chunk]
            dots[ids] = self._boxed_dots(ids, rows, base[ids], low[ids], row_offset[ids])
        spread_out = torch.nonzero(~fits).flatten()
        if spread_out.numel():
            dots[spread_out] = self._gathered_dots(
                spread_out, rows, base[spread_out], row_offset[spread_out]
            )
        fx = frac[..., 0, None, None]
        fy = frac[..., 1, None, None]
        window = (1 - fy) * ((1 - fx) * dots[..., :-1, :-1] + fx * dots[..., :-1, 1:]) + fy * (
            (1 - fx) * dots[..., 1:, :-1] + fx * dots[..., 1:, 1:]
        )  # (B*tiles, t*t, k_y, k_x)
        return window.transpose(-1, -2)  # channel a*k + b <-> (dx_a, dy_b)

    @staticmethod
    def _row_index(
        xs: torch.Tensor, ys: torch.Tensor, rows: _LevelRows, row_offset: torch.Tensor
    ) -> torch.Tensor:
        """Row of ``rows.table`` for integer positions ``ys[..., :, None]``, ``xs[..., None, :]``."""
        h2, w2 = rows.height, rows.width
        inside = ((ys >= 0) & (ys < h2))[..., :, None] & ((xs >= 0) & (xs < w2))[..., None, :]
        index = torch.where(inside, ys[..., :, None] * w2 + xs[..., None, :], h2 * w2)
        return index + row_offset.view(-1, *([1] * (index.ndim - 1)))

    def _boxed_dots(
        self,
        ids: torch.Tensor,
        rows: _LevelRows,
        base: torch.Tensor,
        low: torch.Tensor,
        row_offset: torch.Tensor,
    ) -> torch.Tensor:
        """Dots via one box per tile: ``(n, t*t, m, m)`` indexed ``[y, x]``."""
        n, c, box, m = ids.numel(), self.channels, self.box, 2 * self.radius + 2
        span = torch.arange(box, device=base.device)
        index = self._row_index(low[:, 0, None] + span, low[:, 1, None] + span, rows, row_offset)
        boxes = rows.table.index_select(0, index.reshape(-1)).view(n, box * box, c)
        products = torch.bmm(self.query[ids], boxes.transpose(1, 2))  # (n, t*t, box*box)
        step = torch.arange(m, device=base.device)
        local = base - low[:, None, :] - self.radius  # window origin inside the box
        xs = local[..., 0, None] + step  # (n, t*t, m)
        ys = local[..., 1, None] + step
        pick = (ys[..., :, None] * box + xs[..., None, :]).reshape(n, -1, m * m)
        return torch.gather(products, 2, pick).view(n, -1, m, m)

    def _gathered_dots(
        self, ids: torch.Tensor, rows: _LevelRows, base: torch.Tensor, row_offset: torch.Tensor
    ) -> torch.Tensor:
        """Dots by gathering each query's window: ``(n, t*t, m, m)`` indexed ``[y, x]``."""
        n, c, m = ids.numel(), self.channels, 2 * self.radius + 2
        step = torch.arange(-self.radius, self.radius + 2, device=base.device)
        index = self._row_index(
            base[..., 0, None] + step, base[..., 1, None] + step, rows, row_offset
        )  # (n, t*t, m, m)
        windows = rows.table.index_select(0, index.reshape(-1)).view(-1, m * m, c)
        queries = self.query[ids].reshape(-1, c, 1)
        return torch.bmm(windows, queries).view(n, -1, m, m)


def build_correlation(
    kind: CorrKind,
    fmap1: torch.Tensor,
    fmap2: torch.Tensor,
    *,
    num_levels: int,
    radius: int,
) -> AllPairsCorrelation | OnDemandCorrelation:
    """Builds the correlation lookup named by ``kind`` (``all-pairs`` or ``on-demand``)."""
    if kind == "all-pairs":
        return AllPairsCorrelation(fmap1, fmap2, num_levels=num_levels, radius=radius)
    if kind == "on-demand":
        return OnDemandCorrelation(fmap1, fmap2, num_levels=num_levels, radius=radius)
    raise ValueError(f"unknown correlation {kind!r}; expected one of {CORR_KINDS}")
