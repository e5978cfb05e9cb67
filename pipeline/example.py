"""The bundled example clip: generated on the spot, so the repository ships no media.

A textured background drifting right by 1 px/frame (wrapping around) and a textured square
moving by (+3, +2) px/frame, encoded as H.264 MP4 with PyAV. Deterministic (fixed seed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from stages.streaming import Mp4Writer

BACKGROUND_VELOCITY = (1.0, 0.0)
SQUARE_VELOCITY = (3.0, 2.0)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    noise = rng.random((height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    smooth = cv2.resize(noise, (width + 16, height + 16), interpolation=cv2.INTER_CUBIC)
    detail = cv2.GaussianBlur(
        rng.random((height + 16, width + 16, 3)).astype(np.float32), (0, 0), 1.5
    )
    return np.clip((0.7 * smooth + 0.6 * detail - 0.15) * 255, 0, 255).astype(np.uint8)


def iter_example_frames(
    num_frames: int = 48, width: int = 320, height: int = 240
) -> Iterator[np.ndarray]:
    """``num_frames`` RGB frames ``(height, width, 3)`` uint8 of the example scene, one at a time.

    Memory does not depend on ``num_frames``: the background is a fixed texture twice the
    frame width that wraps around as it drifts.
    """
    rng = np.random.default_rng(2020)
    background = _texture(rng, height, 2 * width)[:height, : 2 * width]
    square = _texture(rng, 64, 64)[:64, :64]
    columns = np.arange(width)
    for t in range(num_frames):
        shift = round(BACKGROUND_VELOCITY[0] * t)
        frame = np.take(background, columns - shift, axis=1, mode="wrap")
        sx, sy = _square_origin(t, width, height)
        frame[sy : sy + 64, sx : sx + 64] = square
        yield frame


def _square_origin(t: int, width: int, height: int) -> tuple[int, int]:
    x = round(40 + SQUARE_VELOCITY[0] * t) % (width - 64)
    y = round(30 + SQUARE_VELOCITY[1] * t) % (height - 64)
    return x, y


def example_ground_truth(
    t: int, width: int = 320, height: int = 240
) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact flow from frame ``t`` to ``t + 1`` of :func:`iter_example_frames`.

    Returns ``(flow, square)``: flow ``(height, width, 2)`` float32 pixels (channel 0 = x),
    the background's velocity everywhere but on the square, whose pixels (``square``, bool
    ``(height, width)``) move with it; background pixels the square covers at ``t + 1`` keep
    the background's motion. ``None`` for a pair in which the square wraps around.
    """
    (x0, y0), (x1, y1) = _square_origin(t, width, height), _square_origin(t + 1, width, height)
    if (x1 - x0, y1 - y0) != (round(SQUARE_VELOCITY[0]), round(SQUARE_VELOCITY[1])):
        return None
    flow = np.empty((height, width, 2), np.float32)
    flow[...] = BACKGROUND_VELOCITY
    square = np.zeros((height, width), bool)
    square[y0 : y0 + 64, x0 : x0 + 64] = True
    flow[square] = SQUARE_VELOCITY
    return flow, square


def write_example_clip(
    path: str | Path,
    num_frames: int = 48,
    fps: float = 24.0,
    *,
    width: int = 320,
    height: int = 240,
) -> Path:
    """Writes the example clip to ``path`` (MP4) and returns the path."""
    writer = Mp4Writer(path, fps, crf=16, preset="veryfast")
    for frame in iter_example_frames(num_frames, width, height):
        writer.write(frame)
    return writer.close()
