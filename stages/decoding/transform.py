"""Geometry applied to every decoded frame: resize (``max_side``, ``short_side``) and upright
rotation."""

from __future__ import annotations

import math

import cv2
import numpy as np


def fit_size(
    width: int, height: int, *, max_side: int | None = None, short_side: int | None = None
) -> tuple[int, int]:
    """Size ``(w, h)`` after shrinking so the longer side is at most ``max_side`` and the
    shorter side at most ``short_side`` (the stronger of the two applies).

    Each side is ``round(side * scale)`` (halves round up), at least 1, so the limited side
    lands exactly on its limit; the size is unchanged when no limit is set or both already
    hold (frames are never enlarged). Symmetric in its two sides, so it commutes with a
    90-degree rotation.
    """
    scale = 1.0
    if max_side is not None:
        scale = min(scale, max_side / max(width, height))
    if short_side is not None:
        scale = min(scale, short_side / min(width, height))
    if scale >= 1.0:
        return width, height
    return (
        max(1, math.floor(width * scale + 0.5)),
        max(1, math.floor(height * scale + 0.5)),
    )


class FrameTransform:
    """Turns a decoded ``(h, w, 3)`` uint8 RGB frame into the delivered upright, resized frame.

    Args:
        input_size: ``(w, h)`` the decoder is expected to produce.
        clockwise: degrees (multiple of 90) still to rotate the decoder output clockwise.
        output_size: ``(w, h)`` of the delivered frame (after rotation).

    Frames are resized (``cv2.INTER_AREA``) before rotating, which is cheaper and gives the same
    size. A frame whose size differs from ``input_size`` (a mid-stream resolution change) is
    resized to the output size too, and :attr:`size_changes` counts such frames.
    """

    def __init__(
        self, input_size: tuple[int, int], clockwise: int, output_size: tuple[int, int]
    ) -> None:
        if clockwise % 90:
            raise ValueError(f"rotation must be a multiple of 90, got {clockwise}")
        self.input_size = input_size
        self.quarter_turns = (clockwise // 90) % 4
        out_w, out_h = output_size
        self.pre_rotation_size = (out_h, out_w) if self.quarter_turns % 2 else (out_w, out_h)
        self.output_size = output_size
        self.size_changes = 0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        if (width, height) != self.input_size:
            self.size_changes += 1
        if (width, height) != self.pre_rotation_size:
            rgb = cv2.resize(rgb, self.pre_rotation_size, interpolation=cv2.INTER_AREA)
        if self.quarter_turns:
            rgb = np.rot90(rgb, k=-self.quarter_turns)  # negative k turns clockwise
        return np.ascontiguousarray(rgb, dtype=np.uint8)
