"""Padding images to a multiple of 8 (done outside the network) and undoing it on the flow.

The two official modes, as ``InputPadder`` in princeton-vl/RAFT ``core/utils/utils.py``
defines them (and zacjiang/GMA copies them), with ``pad = (((n // 8) + 1) * 8 - n) % 8`` per
side and pads in ``F.pad`` order ``[left, right, top, bottom]``:

- ``sintel``: ``[pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]``: both
  paddings split between the two sides, the odd pixel at the right / bottom.
- ``kitti``: ``[pad_w // 2, pad_w - pad_w // 2, 0, pad_h]``: the width padding split the same
  way, all of the height padding at the bottom.

Padding replicates the border pixels; ``unpad`` crops ``[top : H' - bottom, left : W' - right]``
of the padded size ``H' x W'``, as the official ``unpad`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

PadMode = Literal["sintel", "kitti"]
PAD_MODES: tuple[str, ...] = ("sintel", "kitti")


@dataclass(frozen=True)
class Padder:
    """Pads ``(B, C, H, W)`` images so that H and W are multiples of ``multiple``.

    :meth:`pad` takes ``(B, C, H, W)`` or ``(C, H, W)`` (``F.pad``'s replicate mode);
    :meth:`unpad` crops any ``(..., H', W')``.

    ``pads`` is ``(left, right, top, bottom)`` in pixels, the order ``F.pad`` expects.
    ``minimum``: smallest padded side; a smaller image is padded further (the same way, with
    replicated borders), so networks whose pyramid needs a few pixels at 1/64 scale still run
    on tiny frames. 0 (the default) pads exactly as the official code.
    """

    height: int
    width: int
    mode: PadMode = "sintel"
    multiple: int = 8
    minimum: int = 0

    def __post_init__(self) -> None:
        if self.mode not in PAD_MODES:
            raise ValueError(f"unknown pad mode {self.mode!r}; expected one of {PAD_MODES}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")

    @property
    def pads(self) -> tuple[int, int, int, int]:
        pad_h = max(self.height + -self.height % self.multiple, self.minimum) - self.height
        pad_w = max(self.width + -self.width % self.multiple, self.minimum) - self.width
        left, right = pad_w // 2, pad_w - pad_w // 2
        if self.mode == "sintel":
            return left, right, pad_h // 2, pad_h - pad_h // 2
        return left, right, 0, pad_h

    @property
    def padded_size(self) -> tuple[int, int]:
        left, right, top, bottom = self.pads
        return self.height + top + bottom, self.width + left + right

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H', W')`` with replicated borders."""
        if images.shape[-2:] != (self.height, self.width):
            raise ValueError(
                f"padder built for {self.height}x{self.width}, got images {tuple(images.shape)}"
            )
        if not any(self.pads):
            return images
        return F.pad(images, self.pads, mode="replicate")

    def unpad(self, flow: torch.Tensor) -> torch.Tensor:
        """``(..., H', W')`` -> ``(..., H, W)``: crops what :meth:`pad` added."""
        if flow.shape[-2:] != self.padded_size:
            raise ValueError(
                f"padder for {self.height}x{self.width} unpads {self.padded_size[0]}x"
                f"{self.padded_size[1]} maps, got {tuple(flow.shape)}"
            )
        left, right, top, bottom = self.pads
        padded_h, padded_w = flow.shape[-2:]
        return flow[..., top : padded_h - bottom, left : padded_w - right]
