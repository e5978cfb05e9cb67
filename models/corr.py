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

Levels whose pooled map has a side of length 1 contribute zeros, as they do in the official
implementation (its grid normalisation divides by ``side - 1``).

- :class:`AllPairsCorrelation`: the official pyramid of all-pairs volumes,
  ``h*w * (h*w) * (1 + 1/4 + 1/16 + 1/64)`` floats (4.2 GB for level 0 at 1080p).
- :class:`OnDemandCorrelation`: pools the *features* instead of the volume (average pooling
  and the dot product commute) and computes only the lookup windows, in chunks of positions:
  memory linear in the number of positions, no compiled extension.
"""

from __future__ import annotations

import math
from typing import Literal

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
        corr = fmap1.reshape(b, c, h * w).transpose(1, 2) @ fmap2.reshape(b, c, h * w)
        corr = corr.reshape(b * h * w, 1, h, w) / math.sqrt(c)  # (B*h*w, 1, h2, w2)
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
            points = centres / 2**level + offsets  # (B*h*w, k, k, 2) pixel coordinates
            grid = torch.stack(
                [2 * points[..., 0] / (w2 - 1) - 1, 2 * points[..., 1] / (h2 - 1) - 1], dim=-1
            )
            sampled = F.grid_sample(volume, grid, mode="bilinear", align_corners=True)
            out.append(sampled.view(b, h, w, k * k))  # (B*h*w, 1, k, k) -> (B, h, w, k*k)
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().float()


class OnDemandCorrelation:
    """Window-only correlation with memory linear in the number of positions.

    Numerically equal to :class:`AllPairsCorrelation` up to float32 rounding. All ``(2r+1)^2``
    samples of a window share the same fractional position, so each window is computed from the
    ``(2r+2)^2`` integer-position dot products around it and four bilinear weights.

    Args:
        fmap1, fmap2: ``(B, C, h, w)`` float32 features of frame 1 and frame 2.
        num_levels: pyramid levels (4).
        radius: lookup radius ``r``.
        chunk_size: query positions processed at once; bounds the working memory to about
            ``chunk_size * (2r+2)^2 * C * 4`` bytes.
    """

    def __init__(
        self,
        fmap1: torch.Tensor,
        fmap2: torch.Tensor,
        *,
        num_levels: int = 4,
        radius: int = 4,
        chunk_size: int = 2048,
    ) -> None:
        _check_fmaps(fmap1, fmap2, num_levels)
        self.num_levels = num_levels
        self.radius = radius
        self.chunk_size = chunk_size
        b, c, h, w = fmap1.shape
        self.query = (fmap1 / math.sqrt(c)).reshape(b, c, h * w).transpose(1, 2)  # (B, hw, C)
        self.levels: list[tuple[torch.Tensor, int, int]] = []
        f2 = fmap2
        for level in range(num_levels):
            if level > 0:
                f2 = F.avg_pool2d(f2, 2, stride=2)
            h2, w2 = f2.shape[-2:]
            # (B, h2*w2 + 1, C): one trailing zero row stands for every out-of-image position.
            flat = torch.cat([f2.reshape(b, c, h2 * w2).transpose(1, 2), f2.new_zeros(b, 1, c)], 1)
            self.levels.append((flat, h2, w2))

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """``coords`` ``(B, 2, h, w)`` (x, y on the 1/8 grid) -> ``(B, levels*(2r+1)^2, h, w)``."""
        b, _, h, w = coords.shape
        r = self.radius
        k = 2 * r + 1
        centres = coords.permute(0, 2, 3, 1).reshape(b, h * w, 2)
        out = coords.new_empty(b, h * w, self.num_levels, k, k)
        step = torch.arange(-r, r + 2, device=coords.device)  # 2r+2 integer positions per axis
        for level, (flat, h2, w2) in enumerate(self.levels):
            if h2 == 1 or w2 == 1:
                out[:, :, level] = 0
                continue
            scaled = centres / 2**level
            base = torch.floor(scaled)
            frac = scaled - base  # (B, hw, 2) shared by the whole window
            base = base.long()
            for start in range(0, h * w, self.chunk_size):
                stop = min(start + self.chunk_size, h * w)
                out[:, start:stop, level] = self._window(
                    flat, h2, w2, self.query[:, start:stop], base[:, start:stop],
                    frac[:, start:stop], step,
                )  # fmt: skip
        # (B, hw, L, k_dx, k_dy) -> (B, L*k*k, h, w)
        return out.reshape(b, h, w, self.num_levels * k * k).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def _window(
        flat: torch.Tensor,
        h2: int,
        w2: int,
        query: torch.Tensor,
        base: torch.Tensor,
        frac: torch.Tensor,
        step: torch.Tensor,
    ) -> torch.Tensor:
        """Bilinear window of one level for a chunk of positions -> ``(B, n, k_dx, k_dy)``."""
        b, n, c = query.shape
        m = step.numel()  # 2r + 2
        xs = base[..., 0, None] + step  # (B, n, m)
        ys = base[..., 1, None] + step
        inside_x = (xs >= 0) & (xs < w2)
        inside_y = (ys >= 0) & (ys < h2)
        index = ys[:, :, :, None] * w2 + xs[:, :, None, :]  # (B, n, m_y, m_x)
        index = torch.where(inside_y[:, :, :, None] & inside_x[:, :, None, :], index, h2 * w2)
        gathered = torch.gather(
            flat, 1, index.reshape(b, n * m * m, 1).expand(b, n * m * m, c)
        ).view(b * n, m * m, c)
        dots = torch.bmm(gathered, query.reshape(b * n, c, 1)).view(b, n, m, m)  # [y, x]
        fx = frac[..., 0, None, None]
        fy = frac[..., 1, None, None]
        window = (1 - fy) * ((1 - fx) * dots[:, :, :-1, :-1] + fx * dots[:, :, :-1, 1:]) + fy * (
            (1 - fx) * dots[:, :, 1:, :-1] + fx * dots[:, :, 1:, 1:]
        )  # (B, n, k_y, k_x)
        return window.transpose(-1, -2)  # (B, n, k_x, k_y): channel a*k + b <-> (dx_a, dy_b)


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
