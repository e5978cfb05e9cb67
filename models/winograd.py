"""1-D Winograd F(4, 5) convolutions: the CPU fast path of the separable GRU's gates.

A 5-tap convolution along one axis (the 1x5 and 5x1 gates of RAFT's and GMA's
:class:`models.update.SepConvGRU`) computed as F(4, 5) Winograd transforms: 8 batched matrix
products per 4 outputs instead of 20 taps, 2.5x fewer multiply-adds, float32 error ~2x that
of a direct convolution. :func:`_toom_cook` derives the transform matrices exactly (on
fractions); :class:`Winograd1d` applies them to activations and weights; :class:`WinogradGates`
holds one GRU pass's gates in the transformed domain (built by
:meth:`models.update.SepConvGRU.prepare`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import torch
import torch.nn.functional as F


def _invert(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact inverse of a small square matrix (Gauss-Jordan on fractions)."""
    n = len(matrix)
    rows = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        lead = rows[col][col]
        rows[col] = [v / lead for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col]
                rows[r] = [v - factor * u for v, u in zip(rows[r], rows[col], strict=True)]
    return [row[n:] for row in rows]


@cache
def _toom_cook(outputs: int, taps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Winograd F(outputs, taps) matrices ``(A^T, G, B^T)`` in float64 (Toom-Cook construction).

    For a window ``d`` of ``outputs + taps - 1`` inputs and a filter ``g`` of ``taps`` weights,
    ``A^T ((G g) * (B^T d))`` equals ``y_i = sum_k d[i + k] g[k]``. It is the transpose of the
    Toom-Cook linear convolution that evaluates both polynomials at the points 0, +-1, +-2,
    +-1/2 (as many as needed) and infinity and interpolates the product. Each row of ``B^T`` is
    scaled by a power of two (compensated in ``G``) so that its largest entry is ~1; all entries
    of ``A^T`` and ``B^T`` are then exact in float32.
    """
    alpha = outputs + taps - 1
    finite = [Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2)]
    finite += [Fraction(1, 2), Fraction(-1, 2), Fraction(3), Fraction(-3)]
    points: list[Fraction | None] = [*finite[: alpha - 1], None]  # None: the point at infinity

    def evaluation(n: int) -> list[list[Fraction]]:  # (alpha, n): p -> (1, p, ..., p^(n-1))
        return [
            [Fraction(int(k == n - 1)) for k in range(n)] if p is None else [p**k for k in range(n)]
            for p in points
        ]

    interpolation = _invert(evaluation(alpha))  # (alpha, alpha)
    a_t = [list(col) for col in zip(*evaluation(outputs), strict=True)]  # (outputs, alpha)
    g = evaluation(taps)  # (alpha, taps)
    b_t = [list(col) for col in zip(*interpolation, strict=True)]  # (alpha, alpha)
    for j, row in enumerate(b_t):
        largest = max(abs(v) for v in row)
        scale = Fraction(2) ** round(math.log2(largest))
        b_t[j] = [v / scale for v in row]
        g[j] = [v * scale for v in g[j]]

    def tensor(rows: list[list[Fraction]]) -> torch.Tensor:
        return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)

    return tensor(a_t), tensor(g), tensor(b_t)


class Winograd1d:
    """5-tap convolutions (padding 2) along one axis as F(4, 5) Winograd batched matrix products.

    Layouts: an activation is ``(B, C, H, W)``; ``axis`` is 3 for a 1x5 kernel (along W) and 2
    for a 5x1 kernel (along H). Along the axis of length ``L`` the output is cut into
    ``T = ceil(L / 4)`` tiles of 4; ``S`` is the number of tiles per image (``H * T`` or
    ``T * W``). Transformed inputs are ``(8, C, B * S)`` (channel-major so that a batch of images
    is one matrix), transformed weights ``(8, O, C)``, products ``(8, O, B * S)``; the
    "phase" layout of an output, ``(4, O * B * S)``, indexes the position inside the tile first.
    """

    outputs, taps = 4, 5
    alpha = outputs + taps - 1

    def __init__(self, axis: int, device: torch.device) -> None:
        if axis not in (2, 3):
            raise ValueError(f"axis must be 2 (H) or 3 (W), got {axis}")
        self.axis = axis
        a_t, g, b_t = _toom_cook(self.outputs, self.taps)
        self.a_t = a_t.to(device=device, dtype=torch.float32)  # (4, 8)
        self.b_t = b_t.to(device=device, dtype=torch.float32)  # (8, 8)
        self.g = g.to(device)  # (8, 5) float64: weights are transformed in double precision

    def weights(self, weight: torch.Tensor) -> torch.Tensor:
        """``(O, C, 1, 5)`` or ``(O, C, 5, 1)`` official-layout weight -> ``(8, O, C)``."""
        taps = weight.reshape(weight.shape[0], weight.shape[1], self.taps).double()  # (O, C, 5)
        return torch.einsum("jk,ock->joc", self.g, taps).to(weight.dtype).contiguous()

    def _tiles(self, length: int) -> int:
        return -(-length // self.outputs)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(8, C, B * S)``: zero-padded windows of 8, times ``B^T``."""
        _, c, h, w = x.shape
        m, alpha = self.outputs, self.alpha
        tiles = self._tiles(w if self.axis == 3 else h)
        stop = m * (tiles - 1) + 1
        if self.axis == 3:
            padded = F.pad(x, (2, 2 + m * tiles - w)).transpose(0, 1)  # (C, B, H, 4T + 4)
            windows = [padded[..., i : i + stop : m] for i in range(alpha)]  # each (C, B, H, T)
        else:
            padded = F.pad(x, (0, 0, 2, 2 + m * tiles - h)).transpose(0, 1)  # (C, B, 4T + 4, W)
            windows = [padded[:, :, i : i + stop : m] for i in range(alpha)]  # each (C, B, T, W)
        d = torch.stack(windows)  # (8, C, B, H, T) or (8, C, B, T, W)
        return torch.mm(self.b_t, d.view(alpha, -1)).view(alpha, c, -1)

    def phase(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, O, H, W)`` -> phase layout ``(4, O * B * S)`` (padding positions zero)."""
        b, o, h, w = y.shape
        m = self.outputs
        if self.axis == 3:
            tiles = self._tiles(w)
            y = F.pad(y, (0, m * tiles - w)).view(b, o, h, tiles, m).permute(4, 1, 0, 2, 3)
        else:
            tiles = self._tiles(h)
            y = F.pad(y, (0, 0, 0, m * tiles - h)).view(b, o, tiles, m, w).permute(3, 1, 0, 2, 4)
        return y.contiguous().view(m, -1)

    def untransform(
        self, product: torch.Tensor, size: tuple[int, int, int], constant: torch.Tensor | None
    ) -> torch.Tensor:
        """``(8, O, B * S)`` -> ``(B, O, H, W)`` for ``size = (B, H, W)``, plus ``constant``
        (phase layout, :meth:`phase`) when given."""
        b, h, w = size
        m, o = self.outputs, product.shape[1]
        flat = product.reshape(self.alpha, -1)
        y = torch.mm(self.a_t, flat) if constant is None else torch.addmm(constant, self.a_t, flat)
        if self.axis == 3:
            tiles = self._tiles(w)
            y = y.view(m, o, b, h, tiles).permute(2, 1, 3, 4, 0).reshape(b, o, h, m * tiles)
            return y[..., :w]
        tiles = self._tiles(h)
        y = y.view(m, o, b, tiles, w).permute(2, 1, 3, 0, 4).reshape(b, o, m * tiles, w)
        return y[:, :, :h]


@dataclass(frozen=True)
class WinogradGates:
    """The gates of one separable GRU pass in the Winograd domain (:class:`Winograd1d`).

    Attributes:
        transform: the F(4, 5) transform along this pass's axis.
        zr: ``(8, 2*Ch, Ch + Cm)`` z and r (stacked) over ``cat([h, motion])``.
        q_m: ``(8, Ch, Cm)`` motion part of q.
        q_h: ``(8, Ch, Ch)`` hidden-state part of q (applied to ``r * h``).
        constant_zr: ``(4, 2*Ch * B * S)`` context part and biases of z and r, phase layout.
        constant_q: ``(4, Ch * B * S)`` the same for q.
    """

    transform: Winograd1d
    zr: torch.Tensor
    q_m: torch.Tensor
    q_h: torch.Tensor
    constant_zr: torch.Tensor
    constant_q: torch.Tensor
