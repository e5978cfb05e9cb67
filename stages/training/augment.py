"""Training augmentations of RAFT's recipe, in numpy / OpenCV.

Every function takes a ``numpy.random.Generator`` and arrays in the layouts of the data sets:
images ``(H, W, 3)`` uint8 RGB, flow ``(H, W, 2)`` float32 pixels (channel 0 = x), validity
``(H, W)`` float32 (1 where ground truth exists). Nothing here keeps state, so a sample's
augmentation is a pure function of its generator (which makes training resumable exactly).

- :func:`color_jitter`: brightness, contrast, saturation (each a factor in ``1 +- 0.4``) and
  hue (``+- 0.5 / pi`` of the colour circle) in random order, as torchvision's ``ColorJitter``
  with RAFT's settings; applied to both frames alike, or independently with probability
  ``asymmetric`` (0.2).
- :func:`erase`: with probability 0.5, one to two rectangles of 50-100 px in frame 2 filled with
  its mean colour (simulated occlusions).
- :func:`spatial_dense` / :func:`spatial_sparse`: random scale (``2^U(min, max)``) with
  stretch, horizontal / vertical flips and a random crop; the sparse version moves the valid
  ground-truth samples to their new positions instead of interpolating them and favours crop
  windows at the frame's edges (KITTI).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (RAFT's defaults for FlyingChairs).

    ``crop`` is ``(height, width)``. Scale bounds are log2 factors. ``spatial=False`` skips
    scaling, flips and cropping (data already at the training size, e.g. synthetic pairs).
    """

    crop: tuple[int, int] = (368, 496)
    min_scale: float = -0.1
    max_scale: float = 1.0
    stretch_prob: float = 0.8
    max_stretch: float = 0.2
    spatial_prob: float = 0.8
    hflip_prob: float = 0.5
    vflip_prob: float = 0.1
    asymmetric_color: float = 0.2
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.5 / 3.14
    eraser_prob: float = 0.5
    spatial: bool = True
    photometric: bool = True

    def __post_init__(self) -> None:
        if self.crop[0] < 8 or self.crop[1] < 8 or self.crop[0] % 8 or self.crop[1] % 8:
            raise ValueError(f"crop must be multiples of 8 and at least 8, got {self.crop}")
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale {self.min_scale} exceeds max_scale {self.max_scale}")


def _gray(image: np.ndarray) -> np.ndarray:
    """``(H, W, 1)`` float32 luma as torchvision computes it (ITU-R 601)."""
    return (0.299 * image[..., :1] + 0.587 * image[..., 1:2] + 0.114 * image[..., 2:3]).astype(
        np.float32
    )


def _jitter_once(rng: np.random.Generator, images: np.ndarray, config: AugmentConfig) -> np.ndarray:
    """Colour jitter of a stack ``(N, H, W, 3)`` uint8 with one set of random factors."""
    out = images.astype(np.float32)
    for op in rng.permutation(4):
        if op == 0 and config.brightness > 0:
            out *= rng.uniform(1 - config.brightness, 1 + config.brightness)
        elif op == 1 and config.contrast > 0:
            factor = rng.uniform(1 - config.contrast, 1 + config.contrast)
            mean = float(_gray(np.clip(out, 0, 255)).mean())
            out = (out - mean) * factor + mean
        elif op == 2 and config.saturation > 0:
            factor = rng.uniform(1 - config.saturation, 1 + config.saturation)
            gray = _gray(out)
            out = (out - gray) * factor + gray
        elif op == 3 and config.hue > 0:
            shift = rng.uniform(-config.hue, config.hue)
            clipped = np.clip(out, 0, 255).astype(np.uint8)
            hsv = [cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL) for img in clipped]
            for h in hsv:
                h[..., 0] = ((h[..., 0].astype(np.int32) + round(shift * 256)) % 256).astype(
                    np.uint8
                )
            out = np.stack([cv2.cvtColor(h, cv2.COLOR_HSV2RGB_FULL) for h in hsv]).astype(
                np.float32
            )
        out = np.clip(out, 0, 255)
    return out.astype(np.uint8)


def color_jitter(
    rng: np.random.Generator, image1: np.ndarray, image2: np.ndarray, config: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Photometric jitter, shared by both frames or (probability ``asymmetric_color``) not."""
    if rng.random() < config.asymmetric_color:
        return (
            _jitter_once(rng, image1[None], config)[0],
            _jitter_once(rng, image2[None], config)[0],
        )
    both = _jitter_once(rng, np.stack([image1, image2]), config)
    return both[0], both[1]


def erase(rng: np.random.Generator, image2: np.ndarray, config: AugmentConfig) -> np.ndarray:
    """Fill 1-2 rectangles of frame 2 with its mean colour (probability ``eraser_prob``)."""
    if rng.random() >= config.eraser_prob:
        return image2
    out = image2.copy()
    h, w = out.shape[:2]
    mean = out.reshape(-1, 3).mean(axis=0)
    for _ in range(int(rng.integers(1, 3))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        dx, dy = int(rng.integers(50, 100)), int(rng.integers(50, 100))
        out[y0 : y0 + dy, x0 : x0 + dx] = mean
    return out


def _scales(rng: np.random.Generator, height: int, width: int, config: AugmentConfig):
    crop_h, crop_w = config.crop
    # Never scale below what the crop needs (the official code uses crop + 8 px of margin).
    floor = max((crop_h + 8) / height, (crop_w + 8) / width)
    scale = 2 ** rng.uniform(config.min_scale, config.max_scale)
    sx = sy = scale
    if rng.random() < config.stretch_prob:
        sx *= 2 ** rng.uniform(-config.max_stretch, config.max_stretch)
        sy *= 2 ** rng.uniform(-config.max_stretch, config.max_stretch)
    resize = rng.random() < config.spatial_prob
    sx, sy = max(sx, floor), max(sy, floor)
    if not resize:
        sx, sy = max(1.0, floor), max(1.0, floor)
    return sx, sy


def _flip_and_crop(rng, image1, image2, flow, valid, config, margins=(0, 0)):
    """Flips, then a random ``config.crop`` window. ``margins`` ``(y, x)`` widen the range the
    corner is drawn from past the frame's ends before it is clamped (the official sparse
    crop: 20 rows below, 50 columns each side), so windows at the edges come up more often:
    KITTI's ground truth is densest at the bottom of the frame."""
    if rng.random() < config.hflip_prob:
        image1, image2 = image1[:, ::-1], image2[:, ::-1]
        flow = flow[:, ::-1] * np.array([-1.0, 1.0], np.float32)
        valid = valid[:, ::-1]
    if rng.random() < config.vflip_prob:
        image1, image2 = image1[::-1], image2[::-1]
        flow = flow[::-1] * np.array([1.0, -1.0], np.float32)
        valid = valid[::-1]
    crop_h, crop_w = config.crop
    h, w = image1.shape[:2]
    margin_y, margin_x = margins
    y0 = min(int(rng.integers(0, h - crop_h + 1 + margin_y)), h - crop_h)
    x0 = int(np.clip(rng.integers(-margin_x, w - crop_w + 1 + margin_x), 0, w - crop_w))
    window = (slice(y0, y0 + crop_h), slice(x0, x0 + crop_w))
    return (
        np.ascontiguousarray(image1[window]),
        np.ascontiguousarray(image2[window]),
        np.ascontiguousarray(flow[window], dtype=np.float32),
        np.ascontiguousarray(valid[window], dtype=np.float32),
    )


def spatial_dense(rng, image1, image2, flow, valid, config: AugmentConfig):
    """Scale/stretch (flow interpolated and scaled), flips and crop of a dense sample."""
    h, w = image1.shape[:2]
    sx, sy = _scales(rng, h, w, config)
    if (sx, sy) != (1.0, 1.0):
        size = (max(1, round(w * sx)), max(1, round(h * sy)))
        image1 = cv2.resize(image1, size, interpolation=cv2.INTER_LINEAR)
        image2 = cv2.resize(image2, size, interpolation=cv2.INTER_LINEAR)
        flow = cv2.resize(flow, size, interpolation=cv2.INTER_LINEAR) * np.array(
            [size[0] / w, size[1] / h], np.float32
        )
        # valid only where every pixel the interpolation read was valid: an invalid pixel's
        # flow (0 or unknown) must not blend into the ground truth of its neighbours
        coverage = cv2.resize(valid.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        valid = (coverage > 0.999).astype(np.float32)
    return _flip_and_crop(rng, image1, image2, flow, valid, config)


def _resize_sparse(flow: np.ndarray, valid: np.ndarray, fx: float, fy: float):
    """Moves each valid sample to its rounded scaled position (no interpolation of GT)."""
    h, w = flow.shape[:2]
    new_h, new_w = round(h * fy), round(w * fx)
    ys, xs = np.nonzero(valid >= 0.5)
    values = flow[ys, xs] * np.array([fx, fy], np.float32)
    nx, ny = np.round(xs * fx).astype(int), np.round(ys * fy).astype(int)
    keep = (nx >= 0) & (nx < new_w) & (ny >= 0) & (ny < new_h)
    out_flow = np.zeros((new_h, new_w, 2), np.float32)
    out_valid = np.zeros((new_h, new_w), np.float32)
    out_flow[ny[keep], nx[keep]] = values[keep]
    out_valid[ny[keep], nx[keep]] = 1.0
    return out_flow, out_valid


def spatial_sparse(rng, image1, image2, flow, valid, config: AugmentConfig):
    """The sparse (KITTI) variant: no stretch, samples moved rather than interpolated."""
    h, w = image1.shape[:2]
    floor = max((config.crop[0] + 1) / h, (config.crop[1] + 1) / w)
    scale = max(2 ** rng.uniform(config.min_scale, config.max_scale), floor)
    # Resize with probability ``spatial_prob``, and always when the frame is too small for the
    # crop (then ``scale >= floor`` makes it large enough).
    if rng.random() < config.spatial_prob or floor > 1.0:
        size = (round(w * scale), round(h * scale))
        image1 = cv2.resize(image1, size, interpolation=cv2.INTER_LINEAR)
        image2 = cv2.resize(image2, size, interpolation=cv2.INTER_LINEAR)
        flow, valid = _resize_sparse(flow, valid, size[0] / w, size[1] / h)
    sparse = config.__class__(**{**config.__dict__, "vflip_prob": 0.0})
    return _flip_and_crop(rng, image1, image2, flow, valid, sparse, margins=(20, 50))


def augment(
    rng: np.random.Generator,
    image1: np.ndarray,
    image2: np.ndarray,
    flow: np.ndarray,
    valid: np.ndarray,
    config: AugmentConfig,
    *,
    sparse: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Photometric, eraser and (unless ``config.spatial`` is off) spatial augmentation."""
    if config.photometric:
        image1, image2 = color_jitter(rng, image1, image2, config)
        image2 = erase(rng, image2, config)
    if config.spatial:
        spatial = spatial_sparse if sparse else spatial_dense
        image1, image2, flow, valid = spatial(rng, image1, image2, flow, valid, config)
    return image1, image2, flow, valid
