"""Typed, frozen run configuration: YAML presets, CLI overrides, validation, hashing.

A configuration is a tree of frozen dataclasses: :class:`RunConfig` composes the sections the
stages take (:mod:`stages.settings`: ``decode``, ``flow``, ``output``, ``warp``, ``features``),
each validated where it is defined. :func:`load_config` reads a YAML preset (every
key optional; unknown keys are errors that name the key and the valid ones), applies dotted
overrides such as ``{"flow.iters": 20}`` and validates the result. :func:`dump_config` writes
the resolved configuration next to the outputs, :func:`config_hash` identifies it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.atomic_files import write_bytes_atomic
from stages.settings import (
    BACKENDS,
    CORR_CHOICES,
    FLOW_FORMATS,
    FLOW_MODELS,
    JPG_PRESETS,
    ConfigError,
    DecodeConfig,
    FeaturesConfig,
    FlowConfig,
    OutputConfig,
    WarpConfig,
)
from stages.settings import require as _require

__all__ = [
    "BACKENDS",
    "CORR_CHOICES",
    "EXPLICIT_NULL",
    "FLOW_FORMATS",
    "FLOW_MODELS",
    "KEY_HELP",
    "ConfigError",
    "DecodeConfig",
    "FeaturesConfig",
    "FlowConfig",
    "OutputConfig",
    "RunConfig",
    "WarpConfig",
    "apply_overrides",
    "build_config",
    "config_from_dict",
    "config_hash",
    "config_to_dict",
    "dump_config",
    "iter_keys",
    "load_config",
    "load_config_as",
]


@dataclass(frozen=True)
class RunConfig:
    """Everything a ``run`` needs besides its input and output paths."""

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    warp: WarpConfig = field(default_factory=WarpConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)

    def __post_init__(self) -> None:
        _require(
            not self.features.enabled or self.flow.gap == 1,
            "features.enabled needs flow.gap: 1 (clips are made of consecutive pairs)",
        )
        _require(
            bool(self.output.formats) or self.features.enabled or self.warp.enabled,
            "nothing to write: output.formats is empty and neither features nor warp is enabled",
        )


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Converts a YAML / CLI value to the field's annotated type, or raises ConfigError."""
    hint = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if hint in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if hint is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        _require(isinstance(value, (list, tuple)), f"{key} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if annotation is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        _require(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
        return value
    if annotation in (int, float):
        return _number(value, annotation, key)
    if annotation is str:
        _require(
            isinstance(value, (str, int, float)) and not isinstance(value, bool),
            f"{key} must be a string, got {value!r} (quote YAML words such as yes / no / on / off)",
        )
        return str(value)
    if hint is dict:
        _require(isinstance(value, dict), f"{key} must be a mapping, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        return build_config(annotation, value or {}, f"{key}.")
    return value


def _number(value: Any, annotation: type, key: str) -> int | float:
    """``value`` (a YAML / CLI number or numeric string such as ``"1e9"``) as ``annotation``;
    an ``int`` field takes any finite whole number (``1e9``, ``20.0``) and nothing else."""
    if isinstance(value, bool):  # YAML's true / false are ints to Python, not numbers here
        raise ConfigError(f"{key} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if annotation is float:
        _require(math.isfinite(number), f"{key} must be a finite number, got {value!r}")
        return number
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # exact, also beyond float precision
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip())
    _require(
        math.isfinite(number) and number.is_integer(), f"{key} must be an integer, got {value!r}"
    )
    return int(number)


def build_config(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Builds the frozen dataclass ``cls`` from nested dicts, coercing every value to its
    annotated type; unknown keys and invalid values raise :class:`ConfigError` naming the key
    (``prefix`` is prepended to key names in messages)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(_unknown_key(prefix, k, fields) for k in unknown)}; "
            f"valid: {', '.join(prefix + k for k in fields)}"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:  # validation of a stage-level dataclass
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {exc}") from None


def _unknown_key(prefix: str, key: Any, fields: typing.Iterable[str]) -> str:
    """``prefix + key``, with the closest valid key when one is near (a typo)."""
    close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.75)
    return f"{prefix}{key}" + (f" (did you mean {prefix}{close[0]}?)" if close else "")


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Builds and validates a :class:`RunConfig` from nested dicts (missing keys: defaults)."""
    return build_config(RunConfig, data, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as plain nested dicts and lists (YAML / JSON ready)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


class _ExplicitNull:
    """An override that sets a key to ``null`` (``None`` itself means "flag not given")."""

    def __repr__(self) -> str:
        return "null"


#: The value of ``--set KEY=null``: sets KEY to ``None`` where a plain ``None`` is skipped.
EXPLICIT_NULL: Any = _ExplicitNull()


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Sets dotted keys (``"flow.iters"``) in a nested dict copy. ``None`` values are skipped
    (a command-line flag that was not given); :data:`EXPLICIT_NULL` sets the key to ``None``."""
    merged = json.loads(json.dumps(data))
    for dotted, value in overrides.items():
        if value is None:
            continue
        if value is EXPLICIT_NULL:
            value = None
        value = copy.deepcopy(value)  # a later override must not edit the caller's list / dict
        node = merged
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = _child(node, part, dotted)
        if isinstance(node, list):
            node[_list_index(node, leaf, dotted)] = value
        else:
            if value is None and isinstance(node.get(leaf), dict):
                raise ConfigError(
                    f"cannot set {dotted} to null: it is a section; set its keys "
                    f"({dotted}.KEY=VALUE) or drop it from the file for its defaults"
                )
            node[leaf] = value
    return merged


def _list_index(node: list, part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(
            f"cannot set {dotted}: {part!r} is not an index of a {len(node)}-item list"
        )
    return int(part)


def _child(node: Any, part: str, dotted: str) -> Any:
    """The section (dict) or list item ``part`` of ``node`` for an override ``dotted``."""
    if isinstance(node, list):
        child = node[_list_index(node, part, dotted)]
    else:
        child = node.setdefault(part, {})
    if not isinstance(child, (dict, list)):
        raise ConfigError(f"cannot set {dotted}: {part} is not a section")
    return child


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Reads a YAML preset (or defaults when ``path`` is None) and applies dotted overrides."""
    return load_config_as(RunConfig, path, overrides)


def load_config_as(
    cls: type, path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Any:
    """:func:`load_config` for any config dataclass ``cls`` (run, train, evaluate ...)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = parse_yaml(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"cannot read {path}: not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    try:
        return build_config(
            cls, apply_overrides(_seed_lists(cls, data, overrides), overrides or {})
        )
    except ConfigError as exc:
        raise ConfigError(f"{exc}{_origin(cls, data, path, overrides)}") from None


def parse_yaml(text: str) -> Any:
    """A preset file's text, or a ``--set`` value, read with :class:`ConfigLoader`."""
    return yaml.load(text, Loader=ConfigLoader)


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two changes for configuration:

    - a key given twice in one mapping is refused (PyYAML keeps the last silently: a second
      ``flow:`` section would drop every key of the first);
    - numbers are read as YAML 1.2 reads them, not YAML 1.1: ``012`` is twelve (1.1: octal
      ten), ``1e9`` is a float (1.1: a string), ``1:30`` and ``1_000`` stay strings (1.1:
      sexagesimal 90 and 1000); ``0o17`` and ``0x1f`` are octal and hexadecimal.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the safe loader refuses it below, with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first {seen[key]})", key_node.start_mark,
                )  # fmt: skip
            seen[key] = f"line {key_node.start_mark.line + 1}"
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = self.construct_scalar(node)
        return int(text, 16 if "0x" in text else 8 if "0o" in text else 10)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
ConfigLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
ConfigLoader.add_constructor(_INT, ConfigLoader.construct_yaml_int)


def _seed_lists(cls: type, data: dict[str, Any], overrides: dict[str, Any] | None) -> dict:
    """``data`` with the default of each list setting an override indexes into and the file
    leaves out (``--set data.0.root=...`` without a file edits the default data list)."""
    heads = {key.split(".", 1)[0] for key in overrides or {} if "." in key} - set(data)
    if not heads:
        return data
    defaults = config_to_dict(cls())
    lists = {h: defaults[h] for h in heads if isinstance(defaults.get(h), list)}
    return {**data, **lists}


def _origin(cls: type, data: dict[str, Any], path: str | Path | None, overrides) -> str:
    """Where a bad value came from: the file, or (when the file alone is valid) the
    command-line overrides."""
    if path is None:
        return ""
    if any(value is not None for value in (overrides or {}).values()):
        try:
            build_config(cls, data)
        except ConfigError:
            pass
        else:
            return " (from the command-line options)"
    return f" (in {path})"


def dump_config(config: Any, path: str | Path) -> None:
    """Writes the resolved configuration as YAML (atomically)."""
    write_bytes_atomic(path, yaml.safe_dump(config_to_dict(config), sort_keys=False).encode())


def config_hash(config: Any) -> str:
    """Short stable hash of the resolved configuration (first 12 hex digits of SHA-256)."""
    canonical = json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


KEY_HELP: dict[str, str] = {
    # decode
    "decode.backend": "decoder: pyav | decord | opencv (decord: short clips only, see README)",
    "decode.stride": "keep every n-th frame of the selection",
    "decode.target_fps": "resample by timestamp to this rate (null: keep the stream's frames)",
    "decode.start": "seconds; first frame at or after this time (null: from the start)",
    "decode.end": "seconds; frames before this time, half-open (null: to the end)",
    "decode.max_side": "shrink so the longer side is at most this many pixels (null: keep)",
    "decode.short_side": "shrink so the shorter side is at most this many pixels (null: keep)",
    "decode.chunk_size": "pairs per chunk: bounds memory, independent of the video length",
    "decode.frames_fps": "frame rate given to folders of image frames (pts = index / fps)",
    "decode.keep_incomplete": "keep the frames of a truncated or corrupt video up to the fault "
    "(false: the video fails)",
    # flow
    "flow.model": (
        f"{' | '.join(FLOW_MODELS)} (auto: a cached official checkpoint, else the model "
        "shipped in the package, raft-small-convex)"
    ),
    "flow.checkpoint": "registry name or .pth path; needs an explicit model (random: untrained)",
    "flow.iters": "refinement iterations (RAFT/GMA)",
    "flow.gap": "pair gap k: pairs (t, t + k)",
    "flow.backward": "also compute t+k -> t flow (flow_bw.*, flo_bw/, kitti_bw/)",
    "flow.warm_start": "initialise each pair from the previous pair's flow (pairs run in order)",
    "flow.corr": "auto | all-pairs | on-demand (auto: on-demand above on_demand_above_pixels)",
    "flow.on_demand_above_pixels": "padded H*W above which corr auto picks on-demand",
    "flow.pad_mode": "sintel | kitti: where the padding to a multiple of 8 goes",
    "flow.device": "auto | cpu | cuda | cuda:N | mps",
    "flow.precision": "fp32 | bf16 (speed mode, CPU with bf16 units or CUDA) | fp16 (CUDA)",
    "flow.batch_pairs": "pairs refined together (1 is fastest on a CPU; try 2-4 on GPUs)",
    "flow.encode_batch": "frames through the encoders together",
    "flow.dis_preset": "OpenCV DIS preset: ultrafast | fast | medium",
    "flow.memory_budget_mb": "working memory (MiB) the batches shrink to fit for large frames",
    "flow.cpu_workers": "frames / pairs computed side by side on a CPU (null: 2 where useful)",
    "flow.refine": "variational refinement of network flow: auto (where the checkpoint asks) | none | variational",
    "flow.download": "allow downloading a named registry checkpoint missing from the cache",
    # output
    "output.formats": f"any of {', '.join(FLOW_FORMATS)}",
    "output.npy_dtype": "float32 | float16 for npy / npz",
    "output.jpg_preset": (
        f"{' | '.join(JPG_PRESETS)}: flow JPEG names, first index and rounding (README table)"
    ),
    "output.jpg_bound": "flow JPEG bound B in px, flow clipped to +-B (null: the preset's, 20)",
    "output.write_rgb": "also write the RGB frames (img_*.jpg) beside the flow JPEGs",
    "output.viz_scale": (
        "video: one colour scale per video (1.1 x p99 of its first chunk) | frame: each "
        "frame's largest motion"
    ),
    "output.viz_max_flow": "fixed colour-wheel rim in px, overrides viz_scale (null: viz_scale)",
    "output.viz_min_flow": "smallest rim viz_scale video picks (px): still scenes' noise stays pale",
    "output.viz_legend": "draw the colour key and the rim beside viz pictures and in viz.mp4",
    "output.viz_video": "also encode viz.mp4 (frame | flow | legend, panels labelled)",
    # warp
    "warp.enabled": "warped frames, occlusion / motion-boundary masks, consistency metrics",
    "warp.frames": "write warped/{t:06d}.png (frame t rebuilt from frame t+k)",
    "warp.video": "write warped.mp4 (panels labelled)",
    "warp.with_source": "put frame t beside the warped frame in warped.mp4",
    "warp.masks": "write occlusion/ and boundaries/ PNGs (255 = occluded / boundary)",
    "warp.occlusion": "forward-backward occlusion test (computes backward flow)",
    "warp.fb_alpha1": "occlusion: |f + b_w|^2 < a1 (|f|^2 + |b_w|^2) + a2; this is a1",
    "warp.fb_alpha2": "occlusion test's a2 (px^2)",
    "warp.mb_alpha1": "motion boundary: |grad u|^2 + |grad v|^2 > a1 |f|^2 + a2; this is a1",
    "warp.mb_alpha2": "motion-boundary test's a2",
    "warp.mb_difference": "gradient of the motion-boundary test: central, or forward (Lai et al.)",
    "warp.count_outside": "count pixels whose target leaves the frame (border-clamped), as Lai et "
    "al.'s evaluate_WarpError.py; default: left out and called occluded",
    # features
    "features.enabled": "per-clip motion features (MotionSqueeze maps, flow statistics)",
    "features.clip_len": "frames per clip",
    "features.clip_stride": "frames between clip starts (null: clip_len - 1, clips share a frame)",
    "features.drop_tail": "drop a last clip shorter than clip_len",
    "features.hof_bins": "orientation bins of the flow, motion-boundary and direction histograms",
    "features.static_threshold": "px/frame at or below which a pixel counts as static",
    "features.patch_size": "MotionSqueeze correlation window side (odd)",
    "features.sigma": "Gaussian sigma of the kernel soft-argmax (grid cells)",
    "features.temperature": "soft-argmax temperature",
    "features.maps": "write clips/{c:05d}.npz displacement and confidence maps",
    "features.maps_dtype": "float16 | float32 for the maps",
    "features.table_format": "parquet | csv for clips.* and OUT/features.*",
}
"""One line per key of :class:`RunConfig`: what it means (``motionpipe config show`` prints
these with each key's type and value; a test keeps the table and the dataclasses in step)."""


def iter_keys(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted key, default, type name)`` of every leaf key of a config dataclass, in order."""
    keys = []
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(iter_keys(hint, f"{prefix}{item.name}."))
            continue
        if item.default is not dataclasses.MISSING:
            default = item.default
        else:
            default = item.default_factory()  # type: ignore[misc]
        keys.append((prefix + item.name, default, type_name(hint)))
    return keys


def type_name(hint: Any) -> str:
    """``int``, ``float | null``, ``list of str`` ...: a key's type as YAML users see it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(inner) + (" | null" if type(None) in args else "")
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    return getattr(hint, "__name__", str(hint))
