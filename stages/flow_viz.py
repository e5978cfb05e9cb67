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

Pictures that explain themselves: :func:`legend_panel` draws the colour key and the magnitude
that reaches the rim beside a flow picture, :func:`with_caption` labels a panel, and
:func:`video_scale` picks one rim magnitude for a whole video from its first flow fields (a
percentile with a floor, so sensor noise in a still scene stays pale instead of being
stretched to full saturation as a per-frame maximum does).
"""

from __future__ import annotations

import functools
import logging
import math

import cv2
import numpy as np
import numpy.typing as npt
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "LEGEND_MIN_HEIGHT",
    "UNKNOWN_FLOW_THRESHOLD",
    "WHEEL_SEGMENTS",
    "caption_height",
    "color_wheel_legend",
    "flow_to_color",
    "largest_magnitude",
    "legend_panel",
    "legend_width",
    "make_color_wheel",
    "side_by_side",
    "video_scale",
    "with_caption",
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
    """``flow`` as an ``(H, W, 2)`` float32 array (float64 when given float64)."""
    array = np.asarray(flow)
    if array.ndim != 3 or array.shape[-1] != 2:
        raise ValueError(f"flow must be (H, W, 2), got shape {array.shape}")
    return array.astype(np.float64 if array.dtype == np.float64 else np.float32, copy=False)


def _valid_mask(flow: np.ndarray) -> np.ndarray:
    """``(H, W)`` True where both components are finite and not Middlebury 'unknown'."""
    # NaN compares False and infinities exceed the threshold: one test covers all three.
    with np.errstate(invalid="ignore"):
        return (np.abs(flow[..., 0]) <= UNKNOWN_FLOW_THRESHOLD) & (
            np.abs(flow[..., 1]) <= UNKNOWN_FLOW_THRESHOLD
        )


def _normaliser(flow: np.ndarray, valid: np.ndarray, max_flow: float | None) -> float:
    """Magnitude (pixels) that maps to the wheel's rim; never 0."""
    if max_flow is not None:
        scale = float(max_flow)
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"max_flow must be a positive finite number, got {max_flow!r}")
        return scale
    if not valid.any():
        return 1.0
    squared = torch.from_numpy(flow).to(torch.float64).square().sum(dim=-1)
    # sqrt is monotonic and correctly rounded: the root of the largest square is the largest root
    largest = math.sqrt(float(torch.where(torch.from_numpy(valid), squared, 0.0).max()))
    return largest if largest > 0 else 1.0


def _wheel_image(u: torch.Tensor, v: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Colour normalised flow ``(u, v)`` ``(H, W)`` (rim at magnitude 1); returns ``(H, W, 3)``
    uint8 RGB, ``floor(255 * colour)`` computed in ``u``'s dtype, black where ``known`` (bool
    ``(H, W)``) is False.

    Torch rather than numpy for its vectorised ``atan2`` and in-place arithmetic, on colour
    planes (4-5x the numpy version's speed on one core, 2x again with one gather for the three
    planes): this runs for every picture of every video.
    """
    count = _WHEEL.shape[0]
    wheel = torch.from_numpy(_WHEEL.T / 255.0).to(u.dtype)  # (3, count)
    radius = torch.hypot(u, v)
    # Adding +0.0 turns -0.0 into +0.0, so atan2 sees -v = -0.0 for every v == 0 and rightward
    # flow maps to entry 0 (pure red) whatever the sign of its zero y component.
    angle = torch.atan2(-(v + 0.0), -(u + 0.0))  # -pi .. pi, -pi pointing right
    position = (angle / math.pi + 1.0) * ((count - 1) / 2.0)  # 0 .. count - 1
    lower = torch.floor(position)
    weight = position - lower
    lower = lower.to(torch.int64)
    upper = torch.where(lower + 1 == count, 0, lower + 1)
    # Inside the rim: desaturate toward white with decreasing magnitude (1 - r (1 - c));
    # outside: darken (0.75 c). Both are offset + gain * c, computed per pixel first; unknown
    # pixels get gain and offset 0, which draws them black.
    inside = (radius <= 1.0) & known
    offset = torch.where(inside, 1.0 - radius, 0.0)
    gain = torch.where(inside, radius, torch.where(known, _OUT_OF_RANGE_DIM, 0.0))
    planes = wheel.shape[0], *u.shape
    below = wheel.index_select(1, lower.reshape(-1)).view(planes)
    above = wheel.index_select(1, upper.reshape(-1)).view(planes)
    color = above.sub_(below).mul_(weight).add_(below)  # below + weight (above - below)
    value = color.mul_(gain).add_(offset).mul_(255.0).clamp_(0.0, 255.0)
    return value.to(torch.uint8).permute(1, 2, 0).contiguous()  # truncation: floor, as >= 0


def flow_to_color(
    flow: npt.ArrayLike, max_flow: float | None = None, convert_to_bgr: bool = False
) -> np.ndarray:
    """Render a flow field with the Middlebury colour coding.

    Args:
        flow: ``(H, W, 2)`` flow in pixels (x right, y down), any real dtype (computed in
            float64 for float64 input, else in float32).
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
    known = torch.from_numpy(valid)
    safe = torch.where(known.unsqueeze(-1), torch.from_numpy(field), 0.0)
    safe *= 1.0 / scale
    image = _wheel_image(safe[..., 0], safe[..., 1], known).numpy()
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


# ---------------------------------------------------------------- self-explaining pictures

_PANEL_BACKGROUND = (32, 32, 32)
_TEXT_COLOUR = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MAX_SAMPLES = 1 << 20  # flow vectors looked at by video_scale (a strided subsample)


def largest_magnitude(flow: npt.ArrayLike) -> float:
    """The largest magnitude (pixels) among the valid vectors of ``flow`` ``(H, W, 2)``: the
    rim that :func:`flow_to_color` uses without ``max_flow`` (1.0 for an all-zero field)."""
    field = _check_flow(flow)
    return _normaliser(field, _valid_mask(field), None)


def video_scale(
    flows: npt.ArrayLike, percentile: float = 99.0, minimum: float = 2.0, headroom: float = 1.1
) -> float:
    """One rim magnitude for every colour picture of a video.

    Args:
        flows: ``(P, H, W, 2)`` (or ``(H, W, 2)``) flow fields in pixels, e.g. the first chunk
            of a video; at most about a million vectors are read (a regular subsample).
        percentile: magnitude percentile over all valid vectors (a maximum that ignores the
            few outliers flow estimates have at occlusions); larger vectors are drawn darker
            (see :func:`flow_to_color`).
        minimum: floor in pixels, so that a still scene's noise (a few tenths of a pixel)
            stays pale instead of being stretched to full colour.
        headroom: factor on the percentile: an object that moves uniformly and covers more
            than ``100 - percentile`` % of the picture has its magnitude *at* the percentile,
            and without headroom half of its pixels would fall past the rim and be dimmed.

    Returns:
        ``max(minimum, headroom * percentile of |flow|)`` in pixels.
    """
    array = np.asarray(flows)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 2:
        raise ValueError(f"flows must be (P, H, W, 2) or (H, W, 2), got shape {array.shape}")
    if not (np.isfinite(minimum) and minimum > 0):
        raise ValueError(f"minimum must be a positive number, got {minimum!r}")
    vectors = array.shape[0] * array.shape[1] * array.shape[2]
    step = max(1, int(np.ceil(np.sqrt(vectors / _MAX_SAMPLES))))
    sample = np.asarray(array[:, ::step, ::step], dtype=np.float64).reshape(-1, 2)
    valid = np.isfinite(sample).all(axis=1) & (np.abs(sample) <= UNKNOWN_FLOW_THRESHOLD).all(axis=1)
    if not valid.any():
        return float(minimum)
    magnitudes = np.hypot(sample[valid, 0], sample[valid, 1])
    return max(float(minimum), headroom * float(np.percentile(magnitudes, percentile)))


def _fit_font(lines: list[str], width: int, line_height: int) -> tuple[float, int]:
    """Font scale and thickness so that every line fits ``width`` and ``line_height``."""
    scale = 1.0
    for line in lines:
        (w, h), base = cv2.getTextSize(line, _FONT, 1.0, 1)
        scale = min(scale, width / max(w, 1), 0.8 * line_height / max(h + base, 1))
    return max(scale, 0.25), 1


def _put_lines(
    image: np.ndarray, lines: list[str], top: int, left: int, width: int, line_height: int
) -> None:
    scale, thickness = _fit_font(lines, width, line_height)
    for n, line in enumerate(lines):
        (w, h), _ = cv2.getTextSize(line, _FONT, scale, thickness)
        x = left + max(0, (width - w) // 2)
        y = top + n * line_height + (line_height + h) // 2
        cv2.putText(image, line, (x, y), _FONT, scale, _TEXT_COLOUR, thickness, cv2.LINE_AA)


LEGEND_MIN_HEIGHT = 32
"""Pictures shorter than this (pixels) are drawn without :func:`legend_panel`: no legible key
fits beside them."""


def legend_width(height: int) -> int:
    """Width in pixels of the :func:`legend_panel` for pictures ``height`` pixels tall."""
    return int(np.clip(round(0.6 * height), 72, 240))


@functools.lru_cache(maxsize=16)
def legend_panel(height: int, rim: float, how: str) -> np.ndarray:
    """The colour key of a flow picture: the wheel and what its rim means, on a dark strip.

    Args:
        height: height of the picture it goes beside (pixels).
        rim: flow magnitude in pixels drawn fully saturated (the wheel's rim).
        how: how ``rim`` was chosen, printed under it (e.g. ``"per video"``, ``"frame max"``,
            ``"fixed"``).

    Returns:
        ``(height, legend_width(height), 3)`` uint8 RGB: the wheel (hue = direction the flow
        points, white = still, full colour at the rim), then ``rim = X px`` and ``how``. What
        does not fit a short panel is cut off (see :data:`LEGEND_MIN_HEIGHT`). Read-only:
        panels are cached, since every picture of a video at one scale has the same.
    """
    if height < 1:
        raise ValueError(f"height must be >= 1 pixel, got {height}")
    width = legend_width(height)
    panel = np.empty((height, width, 3), np.uint8)
    panel[:] = _PANEL_BACKGROUND
    margin = max(2, width // 12)
    lines = ["hue: direction", f"rim = {rim:.3g} px", f"({how})"]
    line_height = max(6, min(height // 8, width // 6))
    diameter = min(width - 2 * margin, height - 3 * line_height - 3 * margin)
    diameter -= 1 - diameter % 2  # odd: a pixel on the centre
    block = 3 * line_height + (diameter + margin if diameter >= 9 else 0)
    top = max(margin, (height - block) // 2)
    if diameter >= 9:
        wheel = color_wheel_legend(diameter)
        disc = np.hypot(*np.meshgrid(*(np.arange(diameter) - diameter // 2,) * 2)) <= diameter // 2
        left = (width - diameter) // 2
        region = panel[top : top + diameter, left : left + diameter]
        region[disc] = wheel[disc]
        top += diameter + margin
    _put_lines(panel, lines, top, margin, width - 2 * margin, line_height)
    panel.flags.writeable = False  # cached: every picture of a video shares it
    return panel


def with_caption(image: npt.ArrayLike, text: str, height: int | None = None) -> np.ndarray:
    """``image`` ``(H, W, 3)`` uint8 with a dark caption bar holding ``text`` on top.

    ``height``: the bar's height (default ``max(12, H // 12)``); pass the same value to panels
    that are placed side by side.
    """
    picture = _check_image(image, "image")
    bar_height = height if height is not None else caption_height(picture.shape[0])
    bar = np.empty((bar_height, picture.shape[1], 3), np.uint8)
    bar[:] = _PANEL_BACKGROUND
    margin = max(1, bar_height // 6)
    scale, thickness = _fit_font([text], picture.shape[1] - 2 * margin, bar_height)
    (_, h), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    cv2.putText(
        bar, text, (margin, (bar_height + h) // 2), _FONT, scale, _TEXT_COLOUR, thickness,
        cv2.LINE_AA,
    )  # fmt: skip
    return np.concatenate([bar, picture], axis=0)


def caption_height(height: int) -> int:
    """Height of the caption bar :func:`with_caption` puts on a picture ``height`` tall."""
    return max(12, height // 12)
