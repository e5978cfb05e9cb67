"""Held-out validation sets built from the generator (no files needed).

- ``layered``: pairs of the training family (:data:`LAYERED`: sprites under their own affine
  motions over a moving background, procedural and media textures) at 320x448, from a seed
  and textures the training never sees.
- ``photo``: a realistic-scene proxy (:data:`PHOTO`): a whole real frame under a camera-like
  motion (small rotation, zoom, perspective; mostly a few pixels, as in real footage), with up
  to three objects cut out of other real frames moving on their own. Needs media; with none it
  falls back to procedural textures and says so in its name (``photo-procedural``).

Both are deterministic: the same seed and media give the same pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .synthetic import LayeredPairConfig, MotionRange, SyntheticPair, generate_pair
from .textures import TexturePool

logger = logging.getLogger(__name__)

LAYERED = LayeredPairConfig(height=320, width=448)

_REAL_MOTION = (
    MotionRange(0.4, 0.0, 2.0),
    MotionRange(0.5, 1.0, 8.0, log=True),
    MotionRange(0.1, 6.0, 20.0, log=True),
)
PHOTO = LayeredPairConfig(
    height=352,
    width=512,
    sprites=(0, 3),
    background_motion=_REAL_MOTION,
    sprite_motion=_REAL_MOTION,
    background_rotation=1.0,
    background_zoom=0.015,
    background_shear=0.005,
    perspective=0.5,
    perspective_px=4.0,
    sprite_rotation=4.0,
    sprite_zoom=0.03,
    sprite_size=(0.15, 0.45),
    nonrigid=0.2,
    nonrigid_px=1.5,
    texture_scale=(0.9, 1.1),
    texture_rotation=3.0,
    flat_sprites=0.0,
    noise=2.0,
)

VALIDATION_SETS: tuple[str, ...] = ("layered", "photo")

VALIDATION_FRAMES_PER_VIDEO = 24
"""Frames taken from each texture video of a held-out set (``evaluate --textures`` and
``benchmarks/trained_model.py`` build the same pairs from the same clips)."""


def build_validation_set(
    name: str, *, pairs: int, seed: int, media_frames: Sequence[np.ndarray] = ()
) -> tuple[str, list[SyntheticPair]]:
    """``(label, pairs)`` of the named set (label differs from ``name`` on a fallback)."""
    if name == "layered":
        config, pool = LAYERED, TexturePool(media_frames, media_fraction=0.5, seed=seed)
        label = name
    elif name == "photo":
        label = name if media_frames else "photo-procedural"
        if not media_frames:
            logger.warning("validation set 'photo' has no media: using procedural textures")
        config = PHOTO
        pool = TexturePool(media_frames, media_fraction=1.0, seed=seed)
    else:
        raise ValueError(f"unknown validation set {name!r}; expected one of {VALIDATION_SETS}")
    rng = np.random.default_rng([seed, len(name)])
    out = [generate_pair(rng, pool, config, generation=i) for i in range(pairs)]
    return label, out


def resized(config: LayeredPairConfig, height: int, width: int) -> LayeredPairConfig:
    """``config`` at another output size."""
    return replace(config, height=height, width=width)
