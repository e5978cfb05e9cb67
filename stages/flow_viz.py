"""Optical-flow colour coding with the Middlebury colour wheel (Baker et al., IJCV 2011).

Direction becomes hue and magnitude becomes saturation: zero motion is white, motion of the
normalising magnitude is the fully saturated wheel colour, and motion beyond it is the wheel
colour darkened to 75 %. With flow in image coordinates (x right, y down) the wheel index grows
with the angle ``atan2(v, u)``, i.e. clockwise on screen:

====================  =========================  ==============
flow points           wheel index (of 55)        colour
====================  =========================  ==============
right (+x)            0                          red (255, 0, 0)
down (+y)             13.5                       orange-yellow
left (-x)             27                         cyan-blue
up (-y)               40.5                       blue-violet
====================  =========================  ==============

All images are uint8 ``(H, W, 3)`` RGB unless ``convert_to_bgr`` is set; flow inputs are
``(H, W, 2)`` numpy in pixels (channel 0 = x, channel 1 = y).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

__all__ = [
    "UNKNOWN_FLOW_THRESHOLD",
    "WHEEL_SEGMENTS",
    "color_wheel_legend",
    "flow_to_color",
    "make_color_wheel",
    "side_by_side",
]

WHEEL_SEGMENTS: tuple[tuple[str, int], ...] = (
    ("RY", 15),  # red -> yellow
    ("YG", 6),  # yellow -> green
    ("GC", 4),  # green -> cyan
    ("CB", 11),  # cyan -> blue
    ("BM", 13),  # blue -> magenta
    ("MR", 6),  # magenta -> red
)
"""Colour transitions of the Middlebury wheel and how many wheel entries each one spans."""

UNKNOWN_FLOW_THRESHOLD = 1e9
"""Middlebury marks unknown flow with components above this; such pixels are drawn black."""

# For each segment: the channel that ramps (0 = R, 1 = G, 2 = B), whether it ramps up (+1) or
# down (-1), and the channel held at 255 throughout.
_SEGMENT_RAMPS: tuple[tuple[int, int, int], ...] = (
    (1, +1, 0),  # RY: G rises, R full
    (0, -1, 1),  # YG: R falls, G full
    (2, +1, 1),  # GC: B rises, G full
    (1, -1, 2),  # CB: G falls, B full
    (0, +1, 2),  # BM: R rises, B full
    (2, -1, 0),  # MR: B falls, R full
)

# Outside the normalising magnitude the wheel colour is scaled by this factor.
_OUT_OF_RANGE_DIM = 0.75


def make_color_wheel() -> np.ndarray:
    """Build the 55-entry Middlebury colour wheel.

    Within a segment of ``n`` entries the ramping channel takes ``floor(255 * i / n)`` for
    ``i = 0 .. n - 1`` (or ``255`` minus that when ramping down), the full channel is 255 and
    the third is 0. Entry 0 is pure red; the wheel runs red, yellow, green, cyan, blue, magenta.

    Returns:
        ``(55, 3)`` float64 RGB in ``0..255``.
    """
    total = sum(count for _, count in WHEEL_SEGMENTS)
    wheel = np.zeros((total, 3), dtype=np.float64)
    start = 0
    for (_, count), (ramp, sign, full) in zip(WHEEL_SEGMENTS, _SEGMENT_RAMPS, strict=True):
        rising = np.floor(255.0 * np.arange(count) / count)
        wheel[start : start + count, full] = 255.0
        wheel[start : start + count, ramp] = rising if sign > 0 else 255.0 - rising
        start += count
    return wheel


_WHEEL = make_color_wheel()


def _check_flow(flow: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(flow)
    if array.ndim != 3 or array.shape[-1] != 2:
        raise ValueError(f"flow must be (H, W, 2), got shape {array.shape}")
    return array.astype(np.float64)


def _valid_mask(flow: np.ndarray) -> np.ndarray:
    """``(H, W)`` True where both components are finite and not Middlebury 'unknown'."""
    finite = np.isfinite(flow).all(axis=-1)
    with np.errstate(invalid="ignore"):
        known = (np.abs(flow) <= UNKNOWN_FLOW_THRESHOLD).all(axis=-1)
    return finite & known


def _normaliser(flow: np.ndarray, valid: np.ndarray, max_flow: float | None) -> float:
    """Magnitude (pixels) that maps to the wheel's rim; never 0."""
    if max_flow is not None:
        scale = float(max_flow)
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"max_flow must be a positive finite number, got {max_flow!r}")
        return scale
    if not valid.any():
        return 1.0
    largest = float(np.sqrt((flow[valid] ** 2).sum(axis=-1)).max())
    return largest if largest > 0 else 1.0


def _wheel_colors(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colour normalised flow ``(u, v)`` (rim at magnitude 1); returns float RGB in 0..1."""
    count = _WHEEL.shape[0]
    radius = np.sqrt(u**2 + v**2)
    # Adding +0.0 turns -0.0 into +0.0, so atan2 sees -v = -0.0 for every v == 0 and rightward
    # flow maps to entry 0 (pure red) whatever the sign of its zero y component.
    angle = np.arctan2(-(v + 0.0), -(u + 0.0)) / np.pi  # -1 .. 1, -1 for flow pointing right
    position = (angle + 1.0) / 2.0 * (count - 1)  # 0 .. count - 1
    lower = np.floor(position).astype(np.int64)
    upper = (lower + 1) % count
    weight = (position - lower)[..., None]
    color = ((1.0 - weight) * _WHEEL[lower] + weight * _WHEEL[upper]) / 255.0
    inside = (radius <= 1.0)[..., None]
    # Inside the rim: desaturate toward white with decreasing magnitude; outside: darken.
    return np.where(inside, 1.0 - radius[..., None] * (1.0 - color), color * _OUT_OF_RANGE_DIM)


def flow_to_color(
    flow: npt.ArrayLike, max_flow: float | None = None, convert_to_bgr: bool = False
) -> np.ndarray:
    """Render a flow field with the Middlebury colour coding.

    Args:
        flow: ``(H, W, 2)`` flow in pixels (x right, y down), any real dtype.
        max_flow: magnitude in pixels drawn fully saturated. Default: the largest magnitude
            among valid pixels of this field. Pass a fixed value to give every frame of a video
            the same scale; longer vectors are drawn at 75 % brightness.
        convert_to_bgr: return BGR (for OpenCV writers) instead of RGB.

    Returns:
        ``(H, W, 3)`` uint8 image, ``floor(255 * colour)``. Zero flow is white; pixels with a
        NaN/inf component or a component above :data:`UNKNOWN_FLOW_THRESHOLD` are black.

    Raises:
        ValueError: ``flow`` is not ``(H, W, 2)`` or ``max_flow`` is not positive.
    """
    field = _check_flow(flow)
    valid = _valid_mask(field)
    scale = _normaliser(field, valid, max_flow)
    safe = np.where(valid[..., None], field, 0.0) / scale
    color = _wheel_colors(safe[..., 0], safe[..., 1])
    image = np.floor(255.0 * np.clip(color, 0.0, 1.0)).astype(np.uint8)
    image[~valid] = 0
    if convert_to_bgr:
        image = np.ascontiguousarray(image[..., ::-1])
    return image


def color_wheel_legend(size: int = 151, convert_to_bgr: bool = False) -> np.ndarray:
    """Draw the colour key: a disc whose pixel colours are the colours of flow pointing there.

    The pixel at offset ``(dx, dy)`` from the centre (y down) has the colour of flow
    ``(dx, dy) / r`` with ``r = (size - 1) / 2``, so the rim is fully saturated and the
    centre white; pixels outside the disc are white.

    Args:
        size: side of the square image in pixels (>= 3; odd sizes put a pixel on the centre).
        convert_to_bgr: return BGR instead of RGB.

    Returns:
        ``(size, size, 3)`` uint8 image.
    """
    if size < 3:
        raise ValueError(f"legend size must be >= 3 pixels, got {size}")
    radius = (size - 1) / 2.0
    offsets = np.arange(size, dtype=np.float64) - radius
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    flow = np.stack([dx, dy], axis=-1) / radius
    image = flow_to_color(flow, max_flow=1.0, convert_to_bgr=convert_to_bgr)
    outside = np.hypot(dx, dy) > radius
    image[outside] = 255
    return image


def side_by_side(frame_rgb: npt.ArrayLike, flow_rgb: npt.ArrayLike, gap: int = 0) -> np.ndarray:
    """Place a frame and its flow rendering next to each other for previews.

    If the flow image's height differs from the frame's (flow computed at another resolution),
    it is resized to the frame's height, keeping its aspect ratio (area interpolation when
    shrinking, linear when enlarging).

    Args:
        frame_rgb: ``(H, W, 3)`` uint8 frame.
        flow_rgb: ``(h, w, 3)`` uint8 flow image, e.g. from :func:`flow_to_color`.
        gap: width in pixels of a white separator between the two.

    Returns:
        ``(H, W + gap + W', 3)`` uint8 image, frame on the left.
    """
    left = _check_image(frame_rgb, "frame_rgb")
    right = _check_image(flow_rgb, "flow_rgb")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    height = left.shape[0]
    if right.shape[0] != height:
        width = max(1, round(right.shape[1] * height / right.shape[0]))
        shrinking = height < right.shape[0]
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        right = cv2.resize(right, (width, height), interpolation=interpolation)
        logger.debug("resized flow image to %dx%d for side_by_side", width, height)
    separator = np.full((height, gap, 3), 255, dtype=np.uint8)
    return np.concatenate([left, separator, right], axis=1)


def _check_image(image: npt.ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{name} must be (H, W, 3) uint8, got {array.shape} {array.dtype}")
    return array
