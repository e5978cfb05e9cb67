"""Synthetic training pairs with exact ground-truth flow: textured layers under known motions.

A pair is a stack of layers (a background and ``K`` sprites, back to front), each a texture
attached to a *layer space* whose point ``p`` is drawn at image position ``q`` by two maps:

- frame 1 shows ``p = q + D(q)``: ``D`` is an optional smooth non-rigid displacement field;
- frame 2 shows ``p = M^-1(q')``: ``M`` is the layer's motion, a 3x3 affine or projective
  matrix (background: camera-like rotation, zoom, shear, perspective and translation; sprites:
  their own affine motion on top of the background's).

A point ``q`` of frame 1 on layer ``L`` therefore appears at ``q' = M_L(q + D_L(q))`` in frame 2
and its flow is ``M_L(q + D_L(q)) - q`` exactly, with no inversion or resampling of the flow
field. The flow of a pixel is that of the topmost layer covering it in frame 1 (sprite masks
are drawn anti-aliased; a pixel belongs to a sprite where its coverage is at least one half).
Pixels whose frame-2 position is covered by another layer, or lies outside the frame, are
marked occluded.

Translation magnitudes come from a mixture of ranges (:class:`MotionRange`), so that the data
covers sub-pixel camera jitter as well as large object motion. Everything is driven by one
``numpy.random.Generator``: the same seed and textures give the same pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .textures import TexturePool


@dataclass(frozen=True)
class MotionRange:
    """One component of a translation-magnitude mixture: ``weight`` and a range in pixels,
    sampled uniformly (``log=False``) or log-uniformly (``log=True``)."""

    weight: float
    low: float
    high: float
    log: bool = False

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


#: Translation magnitudes for general-purpose training: a third small/sub-pixel, most below
#: 12 px, a quarter up to 48 px (at 256-pixel crops).
DEFAULT_MOTIONS: tuple[MotionRange, ...] = (
    MotionRange(0.35, 0.0, 2.0),
    MotionRange(0.40, 1.0, 12.0, log=True),
    MotionRange(0.25, 8.0, 48.0, log=True),
)


@dataclass(frozen=True)
class LayeredPairConfig:
    """Parameters of :func:`generate_pair` (lengths in output pixels, angles in degrees).

    Attributes:
        height, width: output size.
        sprites: inclusive range of the number of sprites.
        background_motion, sprite_motion: translation magnitude mixtures (direction uniform).
        background_rotation, background_zoom: standard deviations of the camera's rotation
            (degrees) and log-zoom.
        background_shear: standard deviation of the camera's anisotropic scale and shear.
        perspective: probability of a projective background motion; its strength moves the
            image corners by up to ``perspective_px``.
        sprite_rotation, sprite_zoom: standard deviations of the sprites' own rotation and
            log-zoom.
        sprite_size: range of a sprite's diameter as a fraction of the shorter image side.
        nonrigid: probability that a layer gets a smooth non-rigid field, of amplitude up to
            ``nonrigid_px``.
        texture_scale: range of texture pixels per output pixel (log-uniform).
        texture_rotation: largest texture rotation (degrees).
        flat_sprites: probability of a sprite with a flat (shaded) colour instead of a texture.
        noise: largest standard deviation of per-frame Gaussian pixel noise (0..255 scale).
        camouflage: probability of a sprite cut from the background's own texture (another
            placement of it: the same statistics, other content), so that only its motion
            sets it apart, as an animal against foliage or a square of noise over noise. 0
            draws nothing (the pairs of earlier settings are unchanged).
    """

    height: int = 256
    width: int = 256
    sprites: tuple[int, int] = (0, 8)
    background_motion: tuple[MotionRange, ...] = DEFAULT_MOTIONS
    sprite_motion: tuple[MotionRange, ...] = DEFAULT_MOTIONS
    background_rotation: float = 1.5
    background_zoom: float = 0.02
    background_shear: float = 0.01
    perspective: float = 0.3
    perspective_px: float = 6.0
    sprite_rotation: float = 8.0
    sprite_zoom: float = 0.06
    sprite_size: tuple[float, float] = (0.1, 0.6)
    nonrigid: float = 0.3
    nonrigid_px: float = 2.0
    texture_scale: tuple[float, float] = (0.5, 2.0)
    texture_rotation: float = 180.0
    flat_sprites: float = 0.1
    noise: float = 3.0
    camouflage: float = 0.0

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"size must be at least 8x8, got {self.height}x{self.width}")
        if not 0 <= self.sprites[0] <= self.sprites[1]:
            raise ValueError(f"sprites must be a range (low, high) with 0 <= low <= high, "
                             f"got {self.sprites}")  # fmt: skip
        for name in ("background_motion", "sprite_motion"):
            mixture = getattr(self, name)
            if not mixture or any(m.weight < 0 or m.low < 0 or m.high < m.low for m in mixture):
                raise ValueError(f"{name} needs ranges with weight >= 0 and 0 <= low <= high")
            if any(m.log and m.low <= 0 for m in mixture):
                raise ValueError(f"{name}: log-uniform ranges need low > 0")
        lo, hi = self.texture_scale
        if not 0 < lo <= hi:
            raise ValueError(f"texture_scale must satisfy 0 < low <= high, got {(lo, hi)}")
        if not 0 <= self.camouflage <= 1:
            raise ValueError(f"camouflage must be a probability in [0, 1], got {self.camouflage}")


@dataclass
class SyntheticPair:
    """One generated pair.

    ``image1``, ``image2``: ``(H, W, 3)`` uint8 RGB; ``flow``: ``(H, W, 2)`` float32 pixels
    (channel 0 = x), frame 1 -> frame 2; ``occluded``: ``(H, W)`` bool.
    """

    image1: np.ndarray
    image2: np.ndarray
    flow: np.ndarray
    occluded: np.ndarray
    info: dict[str, float] = field(default_factory=dict)


def _sample_mixture(rng: np.random.Generator, mixture: tuple[MotionRange, ...]) -> float:
    weights = np.array([m.weight for m in mixture], np.float64)
    return mixture[int(rng.choice(len(mixture), p=weights / weights.sum()))].sample(rng)


def _similarity(centre, angle_deg: float, zoom: float, shear: tuple[float, float], shift):
    """3x3 matrix: about ``centre``, rotate, zoom, shear/stretch, then translate by ``shift``."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    stretch = np.array([[1 + shear[0], shear[1]], [shear[1], 1 - shear[0]]])
    linear = zoom * rot @ stretch
    cx, cy = centre
    m = np.eye(3)
    m[:2, :2] = linear
    m[:2, 2] = np.array([cx, cy]) - linear @ np.array([cx, cy]) + np.asarray(shift)
    return m


def _random_shift(rng: np.random.Generator, mixture: tuple[MotionRange, ...]) -> np.ndarray:
    magnitude = _sample_mixture(rng, mixture)
    direction = rng.uniform(0, 2 * math.pi)
    return magnitude * np.array([math.cos(direction), math.sin(direction)])


def _apply(matrix: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projective transform of point arrays (float64 for exact flow, float32 result)."""
    x = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    y = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    w = matrix[2, 0] * xs + matrix[2, 1] * ys + matrix[2, 2]
    if matrix[2, 0] == 0 and matrix[2, 1] == 0 and matrix[2, 2] == 1:
        return x, y
    return x / w, y / w


class _Layer:
    """A texture (and for sprites a coverage mask) in layer space, placed by a 2x3 map."""

    def __init__(self, texture: np.ndarray, to_texture: np.ndarray, mask=None, margin: int = 0):
        self.texture = texture
        self.to_texture = to_texture  # 3x3: layer space -> texture pixels
        self.mask = mask  # uint8 coverage in layer space, offset by ``margin``
        self.margin = margin

    def render(self, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Colour ``(H, W, 3)`` float32 and coverage ``(H, W)`` float32 at layer points."""
        tx, ty = _apply(self.to_texture, px, py)
        colour = cv2.remap(
            self.texture, tx.astype(np.float32), ty.astype(np.float32), cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        ).astype(np.float32)  # fmt: skip
        if self.mask is None:
            return colour, None
        mx = (px + self.margin).astype(np.float32)
        my = (py + self.margin).astype(np.float32)
        coverage = cv2.remap(self.mask, mx, my, cv2.INTER_LINEAR, borderValue=0)
        return colour, coverage.astype(np.float32) / 255.0


def _placed_texture(
    rng: np.random.Generator, pool: TexturePool, config: LayeredPairConfig, centre, generation
) -> tuple[np.ndarray, np.ndarray]:
    """A texture and the map from layer space to its pixels (random scale, rotation, offset)."""
    texture = pool.sample(rng, generation=generation)
    scale = math.exp(rng.uniform(*np.log(config.texture_scale)))
    if scale > 1.25:  # minify once with area averaging instead of aliasing in remap
        texture = cv2.resize(
            texture, None, fx=1 / scale, fy=1 / scale, interpolation=cv2.INTER_AREA
        )
        scale = 1.0
    angle = rng.uniform(-config.texture_rotation, config.texture_rotation)
    th, tw = texture.shape[:2]
    target = (rng.uniform(0.25, 0.75) * tw, rng.uniform(0.25, 0.75) * th)
    shift = np.asarray(target) - np.asarray(centre)
    return texture, _similarity(centre, angle, scale, (0.0, 0.0), shift)


def _placed_like(
    rng: np.random.Generator, texture: np.ndarray, placed: np.ndarray, config, centre
) -> tuple[np.ndarray, np.ndarray]:
    """Another placement of ``texture`` at the scale of its placement ``placed`` (a 3x3 map
    from layer space to texture pixels): random rotation and offset, as :func:`_placed_texture`."""
    scale = math.sqrt(abs(np.linalg.det(placed[:2, :2])))
    angle = rng.uniform(-config.texture_rotation, config.texture_rotation)
    th, tw = texture.shape[:2]
    target = (rng.uniform(0.25, 0.75) * tw, rng.uniform(0.25, 0.75) * th)
    shift = np.asarray(target) - np.asarray(centre)
    return texture, _similarity(centre, angle, scale, (0.0, 0.0), shift)


def _smooth_displacement(rng: np.random.Generator, height: int, width: int, amplitude: float):
    cells = int(rng.integers(3, 7))
    coarse = rng.normal(0, amplitude / 2, (cells, cells, 2)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return field[..., 0].astype(np.float64), field[..., 1].astype(np.float64)


def _sprite_mask(rng: np.random.Generator, canvas: tuple[int, int], centre, radius: float):
    """uint8 coverage canvas with one random shape (ellipse, star polygon or blob)."""
    mask = np.zeros(canvas, np.uint8)
    cx, cy = centre
    kind = rng.integers(3)
    if kind == 0:
        axes = (int(radius * 16), int(radius * rng.uniform(0.35, 1.0) * 16))
        cv2.ellipse(mask, (int(cx * 16), int(cy * 16)), axes, float(rng.uniform(0, 180)), 0, 360,
                    255, -1, cv2.LINE_AA, shift=4)  # fmt: skip
    elif kind == 1:
        n = int(rng.integers(5, 13))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.45, 1.0, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    else:
        side = max(4, int(2 * radius))
        cells = int(rng.integers(3, 6))
        coarse = rng.normal(0, 1, (cells, cells)).astype(np.float32)
        blob = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)
        ys, xs = np.mgrid[0:side, 0:side]
        falloff = np.hypot(xs - side / 2, ys - side / 2) / (side / 2)
        blob = ((blob - 1.6 * falloff + 0.8) > 0).astype(np.uint8) * 255
        blob = cv2.GaussianBlur(blob, (3, 3), 0.7)
        x0, y0 = int(cx - side / 2), int(cy - side / 2)
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + side, canvas[1]), min(y0 + side, canvas[0])
        if xb > xa and yb > ya:
            mask[ya:yb, xa:xb] = blob[ya - y0 : yb - y0, xa - x0 : xb - x0]
    if rng.random() < 0.15:  # a hole
        hole = max(1, int(radius * rng.uniform(0.15, 0.35)))
        offset = rng.uniform(-0.3, 0.3, 2) * radius
        cv2.circle(mask, (int(cx + offset[0]), int(cy + offset[1])), hole, 0, -1, cv2.LINE_AA)
    return mask


def _flat_texture(rng: np.random.Generator) -> np.ndarray:
    size = 64
    base = rng.integers(0, 256, 3).astype(np.float32)
    gain = cv2.resize(rng.uniform(0.7, 1.3, (2, 2)).astype(np.float32), (size, size))
    return np.clip(base * gain[..., None], 0, 255).astype(np.uint8)


def generate_pair(
    rng: np.random.Generator,
    pool: TexturePool,
    config: LayeredPairConfig | None = None,
    *,
    generation: int = 0,
) -> SyntheticPair:
    """One pair of :class:`LayeredPairConfig` with exact flow (see the module docstring).

    ``generation`` selects the pool's procedural textures (see :class:`TexturePool`).
    """
    config = config or LayeredPairConfig()
    h, w = config.height, config.width
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    centre = (w / 2, h / 2)

    # Background: camera-like motion.
    shear = tuple(rng.normal(0, config.background_shear, 2))
    camera = _similarity(
        centre,
        rng.normal(0, config.background_rotation),
        math.exp(rng.normal(0, config.background_zoom)),
        shear,
        _random_shift(rng, config.background_motion),
    )
    if rng.random() < config.perspective:
        # Projective terms sized so that a corner moves by up to perspective_px.
        strength = rng.uniform(-1, 1, 2) * config.perspective_px / (max(h, w) ** 2 / 2)
        tilt = np.eye(3)
        tilt[2, :2] = strength
        to_centre = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1.0]])
        camera = camera @ np.linalg.inv(to_centre) @ tilt @ to_centre
    layers: list[tuple[_Layer, np.ndarray]] = []
    texture, to_texture = _placed_texture(rng, pool, config, centre, generation)
    layers.append((_Layer(texture, to_texture), camera))
    background = (texture, to_texture)

    margin = int(max(h, w) / 2 + 64)
    canvas = (h + 2 * margin, w + 2 * margin)
    count = int(rng.integers(config.sprites[0], config.sprites[1] + 1))
    for _ in range(count):
        sc = (rng.uniform(0, w), rng.uniform(0, h))
        radius = 0.5 * min(h, w) * rng.uniform(*config.sprite_size)
        mask = _sprite_mask(rng, canvas, (sc[0] + margin, sc[1] + margin), radius)
        own = _similarity(
            _apply(camera, np.array(sc[0]), np.array(sc[1])),
            rng.normal(0, config.sprite_rotation),
            math.exp(rng.normal(0, config.sprite_zoom)),
            (0.0, 0.0),
            _random_shift(rng, config.sprite_motion),
        )
        if config.camouflage > 0 and rng.random() < config.camouflage:
            texture, to_texture = _placed_like(rng, *background, config, sc)
        elif rng.random() < config.flat_sprites:
            texture, to_texture = _flat_texture(rng), _similarity(sc, 0, 64 / (2 * radius + 1),
                                                                   (0, 0), (32 - sc[0], 32 - sc[1]))  # fmt: skip
        else:
            texture, to_texture = _placed_texture(rng, pool, config, sc, generation)
        layers.append((_Layer(texture, to_texture, mask, margin), own @ camera))

    image1 = np.zeros((h, w, 3), np.float32)
    image2 = np.zeros((h, w, 3), np.float32)
    flow = np.zeros((h, w, 2), np.float64)
    owner1 = np.zeros((h, w), np.int16)  # topmost layer in frame 1
    owner2 = np.zeros((h, w), np.int16)  # topmost layer in frame 2
    for index, (layer, motion) in enumerate(layers):
        if rng.random() < config.nonrigid:
            dx, dy = _smooth_displacement(rng, h, w, rng.uniform(0, config.nonrigid_px))
            p1x, p1y = xs + dx, ys + dy
        else:
            p1x, p1y = xs, ys
        p2x, p2y = _apply(np.linalg.inv(motion), xs, ys)
        colour1, cover1 = layer.render(p1x, p1y)
        colour2, cover2 = layer.render(p2x, p2y)
        qx, qy = _apply(motion, p1x, p1y)
        if cover1 is None:
            image1[:], image2[:] = colour1, colour2
            flow[..., 0], flow[..., 1] = qx - xs, qy - ys
            continue
        image1 += cover1[..., None] * (colour1 - image1)
        image2 += cover2[..., None] * (colour2 - image2)
        mine = cover1 >= 0.5
        flow[..., 0][mine] = (qx - xs)[mine]
        flow[..., 1][mine] = (qy - ys)[mine]
        owner1[mine] = index
        owner2[cover2 >= 0.5] = index

    flow32 = flow.astype(np.float32)
    tx, ty = xs + flow[..., 0], ys + flow[..., 1]
    inside = (tx > -0.5) & (tx < w - 0.5) & (ty > -0.5) & (ty < h - 0.5)
    landed = owner2[
        np.clip(np.rint(ty), 0, h - 1).astype(int), np.clip(np.rint(tx), 0, w - 1).astype(int)
    ]
    occluded = ~inside | (landed != owner1)
    sigma = rng.uniform(0, config.noise)
    image1 += rng.normal(0, sigma, image1.shape).astype(np.float32)
    image2 += rng.normal(0, sigma, image2.shape).astype(np.float32)
    return SyntheticPair(
        image1=np.clip(np.rint(image1), 0, 255).astype(np.uint8),
        image2=np.clip(np.rint(image2), 0, 255).astype(np.uint8),
        flow=flow32,
        occluded=occluded,
        info={
            "sprites": float(count),
            "mean_motion": float(np.linalg.norm(flow32, axis=-1).mean()),
        },
    )
