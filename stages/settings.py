"""The stages' settings: one frozen dataclass per section of the run configuration.

Each section is both what a stage takes and what ``pipeline.config`` composes into a
``RunConfig`` (YAML keys = field names, one default per setting, here):

- :class:`DecodeConfig` (``decode``): the decoders (:func:`stages.decoding.open_video`) and the
  chunker;
- :class:`FlowConfig` (``flow``): :class:`stages.flow.FlowStage`; ``model: auto`` and
  ``device: auto`` are requests the pipeline resolves (``dataclasses.replace``) before it builds
  the stage;
- :class:`OutputConfig` (``output``): :class:`stages.writers.FlowWriters`;
- :class:`WarpConfig` (``warp``): :class:`stages.warp_stage.WarpStage` and the metrics of
  :mod:`stages.consistency`;
- :class:`FeaturesConfig` (``features``): :class:`stages.clip_features.ClipFeatureStage`.

Invalid values raise :class:`ConfigError` (a ``ValueError``) naming the key as YAML spells it
(``decode.stride must be an integer >= 1, got 0``). Plain dataclasses only: reading YAML,
overrides and hashing are ``pipeline.config``'s.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from models import CORR_KINDS, PAD_MODES
from models.motionsqueeze import OFFICIAL_WINDOW
from models.raft import ARCHS

from .flow_jpeg import FLOW_JPEG_PRESETS, FlowJpegLayout
from .flow_refine import REFINE_CHOICES
from .flow_statistics import DEFAULT_N_BINS, DEFAULT_STATIC_THRESHOLD

BACKENDS: tuple[str, ...] = ("decord", "pyav", "opencv")
"""Names accepted by :attr:`DecodeConfig.backend`."""
FLOW_MODELS: tuple[str, ...] = ("auto", "dis", *ARCHS)
"""Names accepted by :attr:`FlowConfig.model` (``auto``: resolved by the pipeline)."""
CORR_CHOICES: tuple[str, ...] = ("auto", *CORR_KINDS)
DIS_PRESET_NAMES: tuple[str, ...] = ("ultrafast", "fast", "medium")
PRECISION_NAMES: tuple[str, ...] = ("fp32", "fp16", "bf16")
FLOW_FORMATS: tuple[str, ...] = ("flo", "npy", "npz", "kitti", "jpg", "viz")
JPG_PRESETS: tuple[str, ...] = tuple(FLOW_JPEG_PRESETS)
VIZ_SCALES: tuple[str, ...] = ("video", "frame")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message says which and why."""


def require(condition: bool, message: str) -> None:
    """Raises :class:`ConfigError` with ``message`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class DecodeConfig:
    """What to decode and how.

    Frame selection is applied in this order: time range, then ``target_fps`` resampling, then
    ``stride``. All times are in seconds on the same clock as ``DecodedFrame.pts`` (the
    stream's own timestamps, relative to the stream start).

    Attributes:
        backend: ``"pyav"`` (default), ``"decord"`` (falls back to PyAV where it cannot decode
            the file correctly or its unbounded read-ahead could hold more than
            ``backend_decord.MAX_READ_AHEAD_BYTES``) or ``"opencv"``.
        stride: keep every ``stride``-th frame of the selection (1 keeps all).
        target_fps: resample by timestamp. Target times are ``t0 + i / target_fps``, ``t0``
            being the pts of the first frame in the time range, up to (excluding) the range's
            stop time: ``end`` when frames continue past it, otherwise the end of the last frame
            (its pts plus the interval before it). For each target time the last frame whose pts
            is ``<=`` it is kept. A frame is kept at most once: a target rate above the source
            rate delivers every frame, never duplicates, and nothing past the end is invented.
        start: keep frames with ``pts >= start`` (``None``: from the beginning).
        end: keep frames with ``pts < end`` (``None``: to the end). The range is half-open.
        max_side: if the delivered frame's longer side exceeds this (>= 16), shrink it
            (``cv2.INTER_AREA``, aspect ratio kept, each side rounded to the nearest integer).
            Frames are never enlarged. Sizes need not be even.
        short_side: the same for the shorter side (denseflow's ``--new-short``, I3D's 256):
            shrink so it is at most this (>= 16), aspect ratio kept. With ``max_side`` too,
            the stronger limit applies.
        chunk_size: pairs per chunk (:func:`stages.decoding.iter_chunks`): bounds memory,
            independent of the video length.
        frames_fps: frame rate assigned to a folder of image frames (pts = index / fps).
        keep_incomplete: a stream that ends early (a decoding error, a truncated file, an
            unreadable image in a frame folder) raises :class:`DecodeError` after its last
            good frame, so the video fails; ``True`` keeps the frames decoded up to the fault
            (the reader's warnings say why it ended).
    """

    backend: str = "pyav"
    stride: int = 1
    target_fps: float | None = None
    start: float | None = None
    end: float | None = None
    max_side: int | None = None
    short_side: int | None = None
    chunk_size: int = 16
    frames_fps: float = 25.0
    keep_incomplete: bool = False

    def __post_init__(self) -> None:
        require(self.backend in BACKENDS, f"decode.backend must be one of {BACKENDS}")
        for name in ("stride", "chunk_size"):
            value = getattr(self, name)
            require(_is_int(value) and value >= 1, f"decode.{name} must be an integer >= 1")
        require(
            self.target_fps is None or (_is_finite(self.target_fps) and self.target_fps > 0),
            f"decode.target_fps must be a finite number > 0, got {self.target_fps!r}",
        )
        require(
            self.start is None or (_is_finite(self.start) and self.start >= 0),
            f"decode.start must be a finite number >= 0 (seconds), got {self.start!r}",
        )
        require(
            self.end is None or (_is_finite(self.end) and self.end > 0),
            f"decode.end must be a finite number > 0 (seconds), got {self.end!r}",
        )
        require(
            self.start is None or self.end is None or self.end > self.start,
            "decode.end must be after decode.start",
        )
        for name in ("max_side", "short_side"):
            value = getattr(self, name)
            require(
                value is None or (_is_int(value) and value >= 16),
                f"decode.{name} must be an integer >= 16, got {value!r}",
            )
        require(
            _is_finite(self.frames_fps) and self.frames_fps > 0, "decode.frames_fps must be > 0"
        )
        require(
            isinstance(self.keep_incomplete, bool),
            f"decode.keep_incomplete must be true or false, got {self.keep_incomplete!r}",
        )

    def selected_fps(self, source_fps: float | None) -> float:
        """The rate (frames per second) of the frames this selection delivers from a
        ``source_fps`` stream, divided by ``stride``: what the previews play at.

        ``target_fps`` never duplicates frames, so a target above the source's rate delivers
        the source's rate. ``source_fps`` 0 or None (unknown): ``target_fps``, else 25.
        """
        known = source_fps if source_fps and source_fps > 0 else None
        if self.target_fps is None:
            rate = known or 25.0
        else:
            rate = min(self.target_fps, known) if known else self.target_fps
        return rate / self.stride


def correlation_kind(corr: str, padded_pixels: int, on_demand_above_pixels: int) -> str:
    """``corr`` with ``auto`` resolved for a padded frame of ``padded_pixels`` pixels:
    ``on-demand`` above ``on_demand_above_pixels`` (the all-pairs volume grows with the square
    of the pixel count: its finest level is 0.9 GiB of float32 for 1 Mpx, 4 GiB for Full
    HD), else ``all-pairs``."""
    if corr != "auto":
        return corr
    return "on-demand" if padded_pixels > on_demand_above_pixels else "all-pairs"


@dataclass(frozen=True)
class FlowConfig:
    """Which flow estimator runs and how (README, "Configuration", has every key's meaning).

    ``model`` (``auto``: a cached official checkpoint, else the shipped model),
    ``checkpoint`` and ``device`` (``auto``) are requests: the pipeline resolves them
    (``pipeline.model_choice``, ``resolve_device``) and gives :class:`stages.flow.FlowStage`
    the resolved copy. ``download`` is read by the checkpoint resolution only.
    """

    model: str = "auto"
    checkpoint: str | None = None
    iters: int = 12
    gap: int = 1
    backward: bool = False
    warm_start: bool = False
    corr: str = "auto"
    on_demand_above_pixels: int = 1_000_000
    pad_mode: str = "sintel"
    device: str = "auto"
    precision: str = "fp32"
    batch_pairs: int = 1
    encode_batch: int = 4
    dis_preset: str = "medium"
    memory_budget_mb: int = 2048
    cpu_workers: int | None = None
    download: bool = True
    refine: str = "auto"

    def __post_init__(self) -> None:
        require(self.refine in REFINE_CHOICES, f"flow.refine must be one of {REFINE_CHOICES}")
        require(self.model in FLOW_MODELS, f"flow.model must be one of {FLOW_MODELS}")
        require(self.iters >= 1, "flow.iters must be >= 1")
        require(self.gap >= 1, "flow.gap must be >= 1")
        require(self.corr in CORR_CHOICES, f"flow.corr must be one of {CORR_CHOICES}")
        require(self.pad_mode in PAD_MODES, f"flow.pad_mode must be one of {PAD_MODES}")
        require(self.precision in PRECISION_NAMES, "flow.precision: fp32, fp16 or bf16")
        for name in ("batch_pairs", "encode_batch"):
            value = getattr(self, name)
            require(value >= 1, f"flow.{name} must be >= 1, got {value!r}")
        require(self.on_demand_above_pixels >= 0, "flow.on_demand_above_pixels must be >= 0")
        require(self.memory_budget_mb >= 64, "flow.memory_budget_mb must be >= 64")
        require(
            self.cpu_workers is None or self.cpu_workers >= 1,
            "flow.cpu_workers must be >= 1 (or null for automatic)",
        )
        require(
            self.dis_preset in DIS_PRESET_NAMES,
            f"flow.dis_preset must be one of {DIS_PRESET_NAMES}",
        )


@dataclass(frozen=True)
class OutputConfig:
    """What is written for every video (see :mod:`stages.writers` and README, "Output formats").

    Attributes:
        formats: any of ``flo``, ``npy``, ``npz``, ``kitti``, ``jpg``, ``viz``.
        npy_dtype: ``float32`` or ``float16`` for ``npy`` / ``npz``.
        jpg_preset, jpg_bound: naming and quantisation of action-recognition JPEGs
            (:attr:`jpg_layout`); ``jpg_bound`` overrides the preset's bound (pixels).
        write_rgb: also write the RGB frames (``img_*.jpg``) next to the flow JPEGs.
        viz_scale: ``"video"`` (one rim for the video) or ``"frame"`` (each picture's largest
            motion).
        viz_max_flow: fixed colour-wheel rim in pixels; overrides ``viz_scale``.
        viz_min_flow: the smallest rim ``viz_scale="video"`` picks (pixels).
        viz_legend: draw the colour key and the rim beside each picture.
        viz_video: also encode ``viz.mp4``.
    """

    formats: tuple[str, ...] = ("npy",)
    npy_dtype: str = "float32"
    jpg_preset: str = "mmaction2"
    jpg_bound: float | None = None
    write_rgb: bool = False
    viz_scale: str = "video"
    viz_max_flow: float | None = None
    viz_min_flow: float = 2.0
    viz_legend: bool = True
    viz_video: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.formats) - set(FLOW_FORMATS))
        require(not unknown, f"output.formats: unknown {unknown}; choose from {FLOW_FORMATS}")
        repeated = sorted({f for f in self.formats if self.formats.count(f) > 1})
        require(not repeated, f"output.formats lists {', '.join(repeated)} more than once")
        require(self.npy_dtype in ("float16", "float32"), "output.npy_dtype: float16 or float32")
        require(self.jpg_preset in JPG_PRESETS, f"output.jpg_preset must be one of {JPG_PRESETS}")
        require(self.jpg_bound is None or self.jpg_bound > 0, "output.jpg_bound must be > 0")
        require(self.viz_scale in VIZ_SCALES, f"output.viz_scale must be one of {VIZ_SCALES}")
        require(
            self.viz_max_flow is None or self.viz_max_flow > 0, "output.viz_max_flow must be > 0"
        )
        require(self.viz_min_flow > 0, "output.viz_min_flow must be > 0")

    @property
    def jpg_layout(self) -> FlowJpegLayout:
        """The flow-JPEG layout of ``jpg_preset`` with ``jpg_bound`` applied."""
        layout = FLOW_JPEG_PRESETS[self.jpg_preset]
        if self.jpg_bound is not None:
            layout = dataclasses.replace(layout, bound=self.jpg_bound)
        return layout


@dataclass(frozen=True)
class WarpConfig:
    """Backward warping, occlusion / motion-boundary masks and consistency metrics.

    Attributes:
        enabled: run the warp stage.
        frames, video, with_source, masks: what the warp stage writes (:mod:`stages.warp_stage`).
        occlusion: the forward-backward test (the flow stage then computes backward flow).
        fb_alpha1, fb_alpha2: forward-backward occlusion test
            ``|f + b_w|^2 < a1 (|f|^2 + |b_w|^2) + a2`` (dimensionless, pixels^2); 0.01 and 0.5
            as Sundaram et al.
        mb_alpha1, mb_alpha2: motion-boundary test
            ``|grad u|^2 + |grad v|^2 > a1 |f|^2 + a2``; 0.01 and 0.002 as Ruder et al. (and
            Lai et al.).
        mb_difference: the gradient of that test: ``"central"`` (default) or ``"forward"``
            (``f(x) - f(x + 1)``, 0 on the last row / column, as Lai et al.'s code).
        count_outside: count pixels whose forward target leaves the frame in the errors, with
            border-clamped samples, and do not call them occluded, as Lai et al.'s
            ``evaluate_WarpError.py`` does; the default leaves them out.
    """

    enabled: bool = False
    frames: bool = True
    video: bool = True
    with_source: bool = True
    masks: bool = True
    occlusion: bool = True
    fb_alpha1: float = 0.01
    fb_alpha2: float = 0.5
    mb_alpha1: float = 0.01
    mb_alpha2: float = 0.002
    mb_difference: str = "central"
    count_outside: bool = False

    def __post_init__(self) -> None:
        for name in ("fb_alpha1", "fb_alpha2", "mb_alpha1", "mb_alpha2"):
            require(getattr(self, name) >= 0, f"warp.{name} must be >= 0")
        require(
            self.mb_difference in ("central", "forward"),
            f"warp.mb_difference must be central or forward, got {self.mb_difference!r}",
        )
        require(
            isinstance(self.count_outside, bool),
            f"warp.count_outside must be true or false, got {self.count_outside!r}",
        )


@dataclass(frozen=True)
class FeaturesConfig:
    """Per-clip motion features (MotionSqueeze-style maps and flow statistics).

    Attributes:
        enabled: run the motion-feature stage (needs ``flow.gap: 1``).
        clip_len: frames per clip (:func:`stages.motion_features.clip_windows`).
        clip_stride: frames between clip starts; ``None`` means ``clip_len - 1``: consecutive
            clips share one frame, so every flow pair belongs to exactly one clip.
        drop_tail: drop a final clip shorter than ``clip_len``.
        hof_bins: orientation bins of HOF, MBH and the MotionSqueeze direction histogram.
        static_threshold: px/frame at or below which a flow pixel is static.
        patch_size, sigma, temperature: MotionSqueeze correlation window side (odd), Gaussian
            sigma of the kernel soft-argmax (grid cells) and its temperature.
        maps: write each clip's MotionSqueeze maps as ``clips/{c:05d}.npz``.
        maps_dtype: ``float16`` or ``float32`` for the maps.
        table_format: ``parquet`` or ``csv`` for the feature tables.
    """

    enabled: bool = False
    clip_len: int = 8
    clip_stride: int | None = None
    drop_tail: bool = False
    hof_bins: int = DEFAULT_N_BINS
    static_threshold: float = DEFAULT_STATIC_THRESHOLD
    patch_size: int = OFFICIAL_WINDOW.patch_size
    sigma: float = OFFICIAL_WINDOW.sigma
    temperature: float = OFFICIAL_WINDOW.temperature
    maps: bool = True
    maps_dtype: str = "float16"
    table_format: str = "parquet"

    def __post_init__(self) -> None:
        require(self.clip_len >= 2, "features.clip_len must be >= 2")
        require(self.clip_stride is None or self.clip_stride >= 1, "features.clip_stride >= 1")
        require(self.patch_size >= 3 and self.patch_size % 2 == 1, "features.patch_size: odd >= 3")
        require(self.sigma > 0 and self.temperature > 0, "features.sigma/temperature must be > 0")
        require(self.hof_bins >= 2, "features.hof_bins must be >= 2")
        require(self.static_threshold >= 0, "features.static_threshold must be >= 0")
        require(self.maps_dtype in ("float16", "float32"), "features.maps_dtype: float16|float32")
        require(self.table_format in ("parquet", "csv"), "features.table_format: parquet or csv")
