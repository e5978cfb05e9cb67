"""Global motion aggregation of GMA (Jiang et al., ICCV 2021).

The context features ``(B, C, h, w)`` on the 1/8 grid give a self-attention matrix over all
positions, ``(B, heads, h*w, h*w)``; each refinement step aggregates the motion features with
it. Submodule names follow the official checkpoints (``att.to_qk``, ``att.pos_emb.*``,
``update_block.aggregator.to_v``, ``...gamma``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .encoders import autocast_enabled

AttentionMode = Literal["content", "position", "position-and-content"]
ATTENTION_MODES: tuple[str, ...] = ("content", "position", "position-and-content")


class RelativePositionEmbedding(nn.Module):
    """Learned relative-position logits, separable into a height and a width term.

    The official checkpoints store these weights even when the default (content-only)
    attention does not use them.
    """

    def __init__(self, max_pos_size: int, dim_head: int) -> None:
        super().__init__()
        self.rel_height = nn.Embedding(2 * max_pos_size - 1, dim_head)
        self.rel_width = nn.Embedding(2 * max_pos_size - 1, dim_head)
        positions = torch.arange(max_pos_size)
        self.register_buffer("rel_ind", positions[None, :] - positions[:, None] + max_pos_size - 1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """``q`` ``(B, heads, h, w, d)`` -> logits ``(B, heads, h, w, h, w)``."""
        _, _, h, w, _ = q.shape
        if h > self.rel_ind.shape[0] or w > self.rel_ind.shape[0]:
            raise ValueError(
                f"positional attention supports at most {self.rel_ind.shape[0]} positions per "
                f"side on the 1/8 grid, got {h}x{w}"
            )
        height_emb = self.rel_height(self.rel_ind[:h, :h].reshape(-1)).view(h, h, -1)  # (x, u, d)
        width_emb = self.rel_width(self.rel_ind[:w, :w].reshape(-1)).view(w, w, -1)  # (y, v, d)
        height_score = torch.einsum("bnxyd,xud->bnxyu", q, height_emb)  # (B, n, h, w, h)
        width_score = torch.einsum("bnxyd,yvd->bnxyv", q, width_emb)  # (B, n, h, w, w)
        return height_score[..., :, None] + width_score[..., None, :]


class Attention(nn.Module):
    """Self-attention weights over the context features.

    ``forward(context) -> (B, heads, h*w, h*w)``, rows sum to 1.

    Args:
        dim: channels of the context features.
        heads: attention heads (the released checkpoints use 1).
        dim_head: channels per head.
        max_pos_size: largest side (on the 1/8 grid) of the relative-position embedding.
        mode: ``content`` (the official default), ``position`` (position only) or
            ``position-and-content``.
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int = 1,
        dim_head: int = 128,
        max_pos_size: int = 160,
        mode: AttentionMode = "content",
    ) -> None:
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise ValueError(f"unknown GMA attention mode {mode!r}; expected {ATTENTION_MODES}")
        self.heads = heads
        self.mode = mode
        self.scale = dim_head**-0.5
        self.to_qk = nn.Conv2d(dim, heads * dim_head * 2, 1, bias=False)
        self.pos_emb = RelativePositionEmbedding(max_pos_size, dim_head)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = context.shape
        q, k = self.to_qk(context).chunk(2, dim=1)  # each (B, heads*d, h, w)
        q = q.view(b, self.heads, -1, h, w).permute(0, 1, 3, 4, 2)  # (B, n, h, w, d)
        k = k.view(b, self.heads, -1, h, w).permute(0, 1, 3, 4, 2)
        q = self.scale * q
        if self.mode == "position":
            sim = self.pos_emb(q).reshape(b, self.heads, h * w, h * w)
        else:
            sim = q.reshape(b, self.heads, h * w, -1) @ k.reshape(
                b, self.heads, h * w, -1
            ).transpose(-1, -2)
            if self.mode == "position-and-content":
                sim = sim + self.pos_emb(q).reshape(b, self.heads, h * w, h * w)
        if torch.is_grad_enabled() and sim.requires_grad:
            return sim.softmax(dim=-1)
        return _softmax_(sim)


def _softmax_(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, in place (equal to ``softmax(dim=-1)`` up to rounding).

    The ``(h*w)^2`` scores are the largest tensor GMA allocates (198 MB at 1024x436); a second
    one for the result would double the context's transient memory, and on a CPU the page
    faults of a freshly mapped 198 MB buffer cost more than the softmax itself (measured on one
    core: 179 ms for ``softmax`` into a new tensor, 92 ms in place).
    """
    scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
    return scores.div_(scores.sum(dim=-1, keepdim=True))


class Aggregate(nn.Module):
    """Adds attention-weighted motion features to the motion features.

    ``forward(attention (B, heads, h*w, h*w), motion (B, C, h, w)) -> (B, C, h, w)``:
    ``motion + gamma * project(attention @ to_v(motion))``.
    """

    def __init__(self, *, dim: int, heads: int = 1, dim_head: int = 128) -> None:
        super().__init__()
        self.heads = heads
        inner_dim = heads * dim_head
        self.to_v = nn.Conv2d(dim, inner_dim, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.project = nn.Conv2d(inner_dim, dim, 1, bias=False) if dim != inner_dim else None

    def forward(self, attention: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        b, _, h, w = motion.shape
        v = self.to_v(motion).view(b, self.heads, -1, h * w).transpose(-1, -2)  # (B, n, hw, d)
        out = _attend(attention, v)  # (B, n, hw, d)
        out = out.transpose(-1, -2).reshape(b, -1, h, w)  # (B, n*d, h, w)
        if self.project is not None:
            out = self.project(out)
        return motion + self.gamma * out


#: Rows of the attention matrix per product in :func:`_attend`.
ATTEND_ROWS = 1760


def _attend(attention: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attention (B, n, hw, hw) @ v (B, n, hw, d)``; on the CPU in blocks of rows.

    MKL runs the ``(hw x hw) @ (hw x d)`` product of GMA ~6% faster in blocks of 1760 rows than
    in one call (1024x436, one thread: 147 vs 157 ms; two threads: 75 vs 77 ms). Each output
    row is the same dot product either way, but BLAS may choose another kernel (another
    summation order) for a block than for the whole matrix, so the results agree to float32
    rounding, not always bit for bit (AVX-512 MKL builds differ by ~1e-7).
    """
    rows = attention.shape[-2]
    if (
        attention.device.type != "cpu"
        or rows <= ATTEND_ROWS
        or autocast_enabled("cpu")
        or (torch.is_grad_enabled() and (attention.requires_grad or v.requires_grad))
    ):
        return attention @ v
    out = v.new_empty(*attention.shape[:-1], v.shape[-1])
    for start in range(0, rows, ATTEND_ROWS):
        block = slice(start, start + ATTEND_ROWS)
        torch.matmul(attention[..., block, :], v, out=out[..., block, :])
    return out
