"""Textures for the synthetic pair generator: procedural ones and frames of the user's media.

A texture is a ``(S, S, 3)`` uint8 RGB image. Procedural textures need no data at all; a
:class:`TexturePool` mixes them with images and video frames from folders the user names
(``*.png``/``*.jpg`` images, any video PyAV decodes), so that a model can be trained on the
look of the footage it will see.

Procedural families (each with random parameters, chosen to span natural image statistics):

- ``dead_leaves``: occluding discs, ellipses and polygons with power-law sizes (the "dead
  leaves" model reproduces the scale invariance of natural images), flat or shaded.
- ``noise``: multi-octave colour noise with a random spectral slope (from blotchy to grainy).
- ``pattern``: stripes, checkerboards, grids and rings at random frequency and orientation.
- ``strokes``: lines, arcs and text on a flat or gradient ground (thin structures, corners).
- ``smooth``: gradients with faint noise (little texture: the network must propagate flow).
"""

from __future__ import annotations

import logging
import os
import string
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

PROCEDURAL_KINDS: tuple[str, ...] = ("dead_leaves", "noise", "pattern", "strokes", "smooth")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
_VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def dead_leaves(rng: np.random.Generator, size: int) -> np.ndarray:
    """Occluding shapes with radii from a ``r^-3`` power law (scale-invariant statistics)."""
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = _colour(rng)
    r_min, r_max = max(1.5, size / 200), size / 4
    count = int(rng.integers(size, 3 * size))
    # Inverse-CDF sampling of p(r) ~ r^-3 on [r_min, r_max].
    u = rng.random(count)
    radii = 1.0 / np.sqrt(u / r_max**2 + (1 - u) / r_min**2)
    centres = rng.random((count, 2)) * size
    shade = rng.random() < 0.5
    for radius, (cx, cy) in zip(radii, centres, strict=True):
        colour = _colour(rng)
        kind = rng.integers(3)
        centre = (int(cx * 16), int(cy * 16))
        if kind == 0:
            cv2.circle(canvas, centre, int(radius * 16), colour, -1, cv2.LINE_AA, shift=4)
        elif kind == 1:
            axes = (int(radius * 16), int(radius * rng.uniform(0.3, 1.0) * 16))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(canvas, centre, axes, angle, 0, 360, colour, -1, cv2.LINE_AA, shift=4)
        else:
            n = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            pts = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1)
            cv2.fillPoly(canvas, [(pts * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)
    if shade:
        canvas = _multiply(canvas, _smooth_field(rng, size, 0.6, 1.2))
    return canvas


def _smooth_field(rng: np.random.Generator, size: int, low: float, high: float) -> np.ndarray:
    """``(size, size)`` float32 smooth random field in ``[low, high]``."""
    cells = int(rng.integers(2, 6))
    coarse = rng.uniform(low, high, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(low, high)


def _multiply(image: np.ndarray, gain: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)


def noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Multi-octave colour noise, amplitude ``2^(-octave * slope)``."""
    slope = rng.uniform(0.3, 1.3)
    out = np.zeros((size, size, 3), np.float32)
    octave, cells = 0, 2
    while cells <= size:
        layer = rng.standard_normal((cells, cells, 3)).astype(np.float32)
        if rng.random() < 0.5:  # grey octaves keep some textures nearly monochrome
            layer[:] = layer[..., :1]
        interp = cv2.INTER_CUBIC if rng.random() < 0.7 else cv2.INTER_NEAREST
        out += 2.0 ** (-octave * slope) * cv2.resize(layer, (size, size), interpolation=interp)
        octave, cells = octave + 1, cells * 2
    out -= out.min()
    out *= rng.uniform(120, 255) / max(float(out.max()), 1e-6)
    out += rng.uniform(0, 255 - out.max() + 1e-3)
    return out.clip(0, 255).astype(np.uint8)


def pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """Stripes, checkerboard, grid or rings between two colours, rotated, optionally blurred."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    period = rng.uniform(4, size / 4)
    kind = rng.integers(4)
    if kind == 0:
        value = np.sin(2 * np.pi * u / period) > 0
    elif kind == 1:
        value = (np.floor(u / period) + np.floor(v / period)) % 2 > 0
    elif kind == 2:
        width = rng.uniform(0.1, 0.4) * period
        value = ((u % period) < width) | ((v % period) < width)
    else:
        cx, cy = rng.uniform(0, size, 2)
        value = np.sin(2 * np.pi * np.hypot(xs - cx, ys - cy) / period) > 0
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    out = np.where(value[..., None], a, b)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 2.0))
    return out.astype(np.uint8)


def strokes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Lines, arcs and random text over a flat or gradient ground."""
    canvas = smooth(rng, size) if rng.random() < 0.5 else np.full((size, size, 3), _colour(rng))
    canvas = np.ascontiguousarray(canvas, dtype=np.uint8)
    for _ in range(int(rng.integers(10, 60))):
        colour = _colour(rng)
        thickness = int(rng.integers(1, 6))
        kind = rng.integers(3)
        if kind == 0:
            p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
            cv2.line(canvas, tuple(map(int, p1)), tuple(map(int, p2)), colour, thickness, 16)
        elif kind == 1:
            centre = tuple(map(int, rng.integers(0, size, 2)))
            axes = tuple(map(int, rng.integers(4, size // 3, 2)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(canvas, centre, axes, 0, start, start + rng.uniform(30, 300), colour,
                        thickness, 16)  # fmt: skip
        else:
            text = "".join(rng.choice(list(string.ascii_letters + string.digits), 6))
            org = tuple(map(int, rng.integers(0, size, 2)))
            scale = float(rng.uniform(0.4, 2.5))
            cv2.putText(canvas, text, org, int(rng.integers(0, 8)), scale, colour, thickness, 16)
    return canvas


def smooth(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear colour gradient with faint noise: almost no texture."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    t = (xs * np.cos(angle) + ys * np.sin(angle))[..., None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    out = a + (b - a) * t + rng.normal(0, rng.uniform(0.5, 4), (size, size, 3))
    return out.clip(0, 255).astype(np.uint8)


_GENERATORS = {
    "dead_leaves": dead_leaves,
    "noise": noise,
    "pattern": pattern,
    "strokes": strokes,
    "smooth": smooth,
}
#: Relative frequency of each procedural family.
_WEIGHTS = {"dead_leaves": 0.35, "noise": 0.2, "pattern": 0.15, "strokes": 0.15, "smooth": 0.15}


def procedural_texture(rng: np.random.Generator, size: int, kind: str | None = None) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 texture of family ``kind`` (random family when ``None``)."""
    if kind is None:
        kinds = list(_WEIGHTS)
        kind = kinds[rng.choice(len(kinds), p=np.array(list(_WEIGHTS.values())))]
    if kind not in _GENERATORS:
        raise ValueError(f"unknown texture kind {kind!r}; expected one of {PROCEDURAL_KINDS}")
    return _GENERATORS[kind](rng, size)


def find_media(folders: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image and video files under ``folders`` (recursive, sorted)."""
    found: list[Path] = []
    for folder in folders:
        root = Path(folder)
        if root.is_file():
            found.append(root)
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"texture folder {root} does not exist")
        for path in sorted(root.rglob("*")):
            suffix = path.suffix.lower()
            if path.is_file() and (suffix in _IMAGE_SUFFIXES or suffix in _VIDEO_SUFFIXES):
                found.append(path)
    return found


def load_media_frames(
    paths: Sequence[Path], *, frames_per_video: int = 12, max_side: int = 640
) -> list[np.ndarray]:
    """RGB uint8 frames from images and videos, evenly spaced through each video.

    Unreadable files are skipped with a warning (a texture folder is a convenience, not data
    whose loss must stop training). Frames are downscaled so that their longer side is at most
    ``max_side``.
    """
    import av  # local import: only texture folders need PyAV here

    frames: list[np.ndarray] = []
    for path in paths:
        try:
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise ValueError("OpenCV cannot read it")
                picked = [cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)]
            else:
                with av.open(str(path)) as container:
                    decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
                if not decoded:
                    raise ValueError("no frames")
                step = max(1, len(decoded) // frames_per_video)
                picked = decoded[::step][:frames_per_video]
        except Exception as exc:
            logger.warning("texture source %s skipped: %s", path, exc)
            continue
        for frame in picked:
            scale = max_side / max(frame.shape[:2])
            if scale < 1:
                frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            frames.append(np.ascontiguousarray(frame))
    return frames


class TexturePool:
    """Textures for the generator: procedural ones and frames of the user's media.

    Procedural textures are the expensive part of a sample, so they are reused: sample ``i``
    draws from the ``pool_size`` textures of generation ``i // reuse``, each a pure function
    of ``(seed, generation, slot)`` and cached. A sample is therefore a pure function of its
    index whatever process or order generates it (exact resume, any number of loader workers).

    Args:
        media_frames: RGB uint8 frames (any size) from :func:`load_media_frames`.
        media_fraction: probability that a requested texture comes from ``media_frames`` (when
            there are any).
        size: side of the procedural textures.
        pool_size: procedural textures per generation.
        seed: seed of the procedural textures.
    """

    def __init__(
        self,
        media_frames: Sequence[np.ndarray] = (),
        *,
        media_fraction: float = 0.5,
        size: int = 512,
        pool_size: int = 32,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= media_fraction <= 1.0:
            raise ValueError(f"media_fraction must be in [0, 1], got {media_fraction}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.media = list(media_frames)
        self.media_fraction = media_fraction if self.media else 0.0
        self.size = size
        self.pool_size = pool_size
        self.seed = seed
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def sample(self, rng: np.random.Generator, *, generation: int = 0) -> np.ndarray:
        """One RGB uint8 texture (shared: callers must not write into it)."""
        if self.media and rng.random() < self.media_fraction:
            return self.media[int(rng.integers(len(self.media)))]
        key = (generation, int(rng.integers(self.pool_size)))
        texture = self._cache.get(key)
        if texture is None:
            texture_rng = np.random.default_rng([self.seed, *key])
            texture = procedural_texture(texture_rng, self.size)
            if len(self._cache) >= 2 * self.pool_size:  # keep about two generations
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = texture
        return texture
