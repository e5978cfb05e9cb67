"""Typed configuration of the ``train`` command (YAML presets ``configs/train-*.yaml``).

The generator and augmentation sections are the stage-level dataclasses themselves
(:class:`stages.training.synthetic.LayeredPairConfig`,
:class:`stages.training.augment.AugmentConfig`), so each setting exists once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from models.raft import ARCHS
from stages.training.augment import AugmentConfig
from stages.training.readers import DATASET_KINDS
from stages.training.synthetic import LayeredPairConfig

from .config import ConfigError, _require, build_config, config_to_dict, load_config_as

PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
SYNTHETIC_PRESETS = ("custom", "photo")
SCHEDULES = ("onecycle", "constant")


@dataclass(frozen=True)
class DataSource:
    """One training data set and its share of the samples.

    ``kind``: ``synthetic`` (the built-in generator, no files needed) or a reader of
    :mod:`stages.training.readers` (``chairs``, ``things``, ``sintel``, ``kitti``, ``hd1k``,
    ``folder``) with its ``root`` folder. ``weight``: relative sampling frequency.
    ``split`` / ``variant``: the reader's split (``training``) and variant (Sintel ``clean`` /
    ``final``, FlyingThings3D ``frames_cleanpass`` / ``frames_finalpass``).
    ``preset`` (synthetic only): ``custom`` = the ``synthetic`` section; ``photo`` = whole
    media frames under camera-like motion with cut-out objects
    (:data:`stages.training.validation.PHOTO`, textures from media only).
    ``augment``: this source's changes to the run's ``augment`` section (keys of
    :class:`AugmentConfig` but ``crop``), e.g. ``{hflip_prob: 0}`` for the official KITTI stage
    (:meth:`TrainConfig.augmentation`).
    """

    kind: str = "synthetic"
    root: str | None = None
    weight: float = 1.0
    split: str = "training"
    variant: str | None = None
    preset: str = "custom"
    augment: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        _require(self.kind in DATASET_KINDS, f"data.kind must be one of {DATASET_KINDS}")
        _require(
            self.preset in SYNTHETIC_PRESETS,
            f"data.preset must be one of {SYNTHETIC_PRESETS}",
        )
        _require(self.weight > 0, "data.weight must be > 0")
        _require(
            self.kind == "synthetic" or self.root is not None,
            f"data.root is required for the {self.kind} data set",
        )
        _require(
            self.kind != "synthetic" or self.root is None,
            f"data.root ({self.root}) is for data sets read from disk, and this source is the "
            "synthetic generator: set its kind (data.N.kind) too",
        )
        _require(
            "crop" not in (self.augment or {}),
            "data.augment.crop: every source is cropped to the training crop (set crop)",
        )


@dataclass(frozen=True)
class TextureSources:
    """Media the synthetic generator takes textures from (besides procedural ones).

    ``paths``: folders (searched recursively) or files, images or videos. ``media_fraction``:
    probability that a texture is a media frame rather than procedural.
    """

    paths: tuple[str, ...] = ()
    media_fraction: float = 0.5
    frames_per_video: int = 12
    procedural_size: int = 512

    def __post_init__(self) -> None:
        _require(0 <= self.media_fraction <= 1, "textures.media_fraction must be in [0, 1]")
        _require(self.frames_per_video >= 1, "textures.frames_per_video must be >= 1")
        _require(self.procedural_size >= 64, "textures.procedural_size must be >= 64")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with RAFT's one-cycle schedule (linear warm-up for ``pct_start`` of the steps to
    ``lr``, then linear decay) and gradient-norm clipping."""

    lr: float = 4e-4
    weight_decay: float = 1e-4
    epsilon: float = 1e-8
    clip: float = 1.0
    schedule: str = "onecycle"
    pct_start: float = 0.05

    def __post_init__(self) -> None:
        _require(self.lr > 0, "optim.lr must be > 0")
        _require(self.weight_decay >= 0 and self.epsilon > 0, "optim: weight_decay >= 0, eps > 0")
        _require(self.clip > 0, "optim.clip must be > 0")
        _require(self.schedule in SCHEDULES, f"optim.schedule must be one of {SCHEDULES}")
        _require(0 < self.pct_start < 1, "optim.pct_start must be in (0, 1)")


@dataclass(frozen=True)
class ValidationConfig:
    """Held-out sets evaluated during training (see :mod:`stages.training.validation`).

    ``sets``: ``layered`` (generator pairs of the training family, unseen seed) and ``photo``
    (whole real frames under camera-like motion with real cut-out objects: a realistic-scene
    proxy). ``textures``: media for them, kept apart from the training textures.
    """

    every: int = 500
    sets: tuple[str, ...] = ("layered", "photo")
    pairs: int = 32
    iters: int = 12
    seed: int = 2026
    textures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(self.every >= 1 and self.pairs >= 1, "validation.every/pairs must be >= 1")
        _require(self.iters >= 1, "validation.iters must be >= 1")
        _require(self.seed >= 0, "validation.seed must be >= 0")
        unknown = sorted(set(self.sets) - {"layered", "photo"})
        _require(not unknown, f"validation.sets: unknown {unknown}; choose layered, photo")


@dataclass(frozen=True)
class TrainConfig:
    """Everything the ``train`` command needs besides its output folder."""

    model: str = "raft-small-convex"
    init_checkpoint: str | None = None
    iters: int = 12
    convex_every_iteration: bool = True
    gamma: float = 0.8
    max_flow: float = 400.0
    steps: int = 100_000
    batch_size: int = 6
    crop: tuple[int, int] = (256, 256)
    seed: int = 1234
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    workers: int = 1
    freeze_bn: bool = False
    log_every: int = 25
    checkpoint_every: int = 250
    keep_checkpoints: int = 4
    data: tuple[DataSource, ...] = (DataSource(),)
    synthetic: LayeredPairConfig = field(default_factory=LayeredPairConfig)
    textures: TextureSources = field(default_factory=TextureSources)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(spatial=True))
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self) -> None:
        _require(self.model in ARCHS, f"model must be one of {ARCHS}")
        _require(self.iters >= 1 and self.steps >= 1, "iters and steps must be >= 1")
        _require(0 < self.gamma <= 1, "gamma must be in (0, 1]")
        _require(self.max_flow > 0, "max_flow must be > 0 (ground truth this long is ignored)")
        _require(self.seed >= 0, "seed must be >= 0")
        _require(self.batch_size >= 1, "batch_size must be >= 1")
        _require(
            len(self.crop) == 2 and all(c >= 64 and c % 8 == 0 for c in self.crop),
            f"crop must be (height, width), multiples of 8 and at least 64, got {self.crop}",
        )
        _require(self.precision in PRECISION_CHOICES, f"precision: one of {PRECISION_CHOICES}")
        _require(self.threads is None or self.threads >= 1, "threads must be >= 1 (or null)")
        _require(self.workers >= 0, "workers must be >= 0")
        _require(self.log_every >= 1 and self.checkpoint_every >= 1, "intervals must be >= 1")
        _require(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
        _require(len(self.data) >= 1, "data needs at least one source")
        for source in self.data:
            self.augmentation(source)  # a source's augment changes are valid settings

    def generator(self) -> LayeredPairConfig:
        """The synthetic generator's settings at the training crop size."""
        return replace(self.synthetic, height=self.crop[0], width=self.crop[1])

    def augmentation(self, source: DataSource | None = None) -> AugmentConfig:
        """Augmentation settings at the training crop size: the ``augment`` section, with
        ``source``'s own changes (its ``augment`` keys) when given."""
        if source is None or not source.augment:
            return replace(self.augment, crop=tuple(self.crop))
        changed = {**config_to_dict(self.augment), **source.augment, "crop": list(self.crop)}
        number = next((str(i) for i, s in enumerate(self.data) if s is source), "N")
        return build_config(AugmentConfig, changed, f"data.{number}.augment.")


def load_train_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Reads a ``train`` preset and applies dotted overrides (``{"steps": 100}``)."""
    try:
        return load_config_as(TrainConfig, path, overrides)
    except ConfigError:
        raise
