"""What a run settles before it touches its output folder.

* **The estimator** (:func:`resolve_estimator`): ``flow.model`` (``auto`` included) and its
  checkpoint are resolved once, the checkpoint is loaded once to prove it works, and its SHA-256
  is recorded; the device is checked. Every worker then uses exactly this estimator (it does not
  resolve ``auto`` again) and refuses to start if its checkpoint file hashes differently.
* **The output folder** (:func:`check_output_root`): it can be created, it is writable, and its
  file system has room (:data:`MIN_FREE_BYTES`).
* **The results key** (:func:`results_key`): the settings that change the numbers a run writes,
  hashed by :func:`results_hash` into every ``meta.json`` and manifest row (``config_hash``).
  ``--resume`` keeps a finished video only when its hash equals the run's.

What the key covers: the resolved model name and the checkpoint's SHA-256 (never the name it
was asked for: ``auto`` that resolves to another model is another key), iterations, padding,
precision, warm start and the device type (``cpu`` / ``cuda`` / ``mps``: their arithmetic
differs) for networks, the DIS preset for DIS, the pair gap and backward flow, every decode
setting that selects or alters frames (backend, stride, fps, start/end, size), every output,
warp and feature setting. What it leaves out, because it only changes speed, memory or placement
(results equal to float32 rounding): ``flow.device`` among devices of one type (``auto``,
``cuda:0``, ``cuda:1``), ``flow.cpu_workers``, ``flow.memory_budget_mb``, ``flow.download``,
``flow.batch_pairs``, ``flow.encode_batch``, ``flow.corr`` and ``flow.on_demand_above_pixels``
(all-pairs and on-demand correlation agree to 5e-5 px), ``decode.chunk_size``.

Every failure here is a :class:`RunStartError` whose message is one line naming the setting or
path and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import CheckpointError, create_model
from models.weights import WEIGHTS
from stages.flow_refine import resolve_refine

from .config import RunConfig, config_to_dict
from .devices import resolve_device, resolve_precision
from .model_choice import ModelChoice, choose_model

MIN_FREE_BYTES = 1 << 20
"""A run refuses to start on a file system with less free space than this (1 MiB)."""

#: Settings left out of the results key: they change speed, memory or placement only.
PLACEMENT_SETTINGS: dict[str, tuple[str, ...]] = {
    "decode": ("chunk_size",),
    "flow": (
        "device", "cpu_workers", "memory_budget_mb", "download", "batch_pairs", "encode_batch",
        "corr", "on_demand_above_pixels",
    ),
}  # fmt: skip
NETWORK_SETTINGS = ("iters", "pad_mode", "precision", "warm_start")
"""Flow settings that only a network reads (left out of the key for DIS)."""
DIS_SETTINGS = ("dis_preset",)
"""Flow settings that only DIS reads (left out of the key for networks)."""


class RunStartError(RuntimeError):
    """The run cannot start; nothing was written. The message is one line."""


@dataclass(frozen=True)
class Estimator:
    """The flow estimator of a run, resolved once in the process that starts it.

    Attributes:
        model: ``dis`` or an architecture name (``auto`` resolved).
        checkpoint: what the workers load: a registry name or a file (``None``: DIS or random
            weights).
        sha256: SHA-256 of the checkpoint file the run was started with.
        notice: why ``auto`` fell back to DIS (recorded in every ``meta.json``).
        device_type: ``cpu``, ``cuda`` or ``mps`` (the resolved ``flow.device``; ``auto``
            when the workers run elsewhere and resolve it themselves).
    """

    model: str
    checkpoint: str | None = None
    sha256: str | None = None
    notice: str | None = None
    device_type: str = "cpu"

    @property
    def choice(self) -> ModelChoice:
        return ModelChoice(self.model, self.checkpoint, self.notice)

    @property
    def is_network(self) -> bool:
        return self.model != "dis"

    def describe(self) -> str:
        """``raft-large (raft-sintel, sha256 3f2a9c01...)``, ``dis`` ..."""
        return describe_estimator(self.model, self.checkpoint, self.sha256)


def describe_estimator(model: str, checkpoint: str | None, sha256: str | None) -> str:
    if model == "dis":
        return "dis (OpenCV DIS)"
    if checkpoint is None and sha256 is None:
        return f"{model} (random weights)"
    return f"{model} ({checkpoint or 'checkpoint'}, sha256 {(sha256 or '?')[:12]})"


def resolve_estimator(config: RunConfig, *, device_here: bool = True) -> Estimator:
    """Resolves the model, checks the device and loads the checkpoint once (on the CPU).

    ``device_here=False`` is for workers on other machines (a Ray cluster): the device and
    precision are then checked by each worker, and the device type is the one ``flow.device``
    names (``auto`` stays ``auto``).

    Raises:
        RunStartError: the model, checkpoint, device or precision cannot be used.
    """
    flow = config.flow
    try:
        choice = choose_model(flow)
    except (CheckpointError, ValueError) as exc:
        raise RunStartError(f"flow.model={flow.model!r}: {_one_line(exc)}") from None
    try:
        device = resolve_device(flow.device) if device_here else None
        device_type = device.type if device else flow.device.split(":")[0]
    except ValueError as exc:
        raise RunStartError(f"flow.device={flow.device!r}: {_one_line(exc)}") from None
    try:
        if choice.model != "dis" and device is not None:
            resolve_precision(flow.precision, device)
    except ValueError as exc:
        raise RunStartError(f"flow.precision={flow.precision!r}: {_one_line(exc)}") from None
    sha256 = None
    if choice.model != "dis" and choice.checkpoint is not None:
        try:
            network = create_model(
                choice.model, checkpoint=choice.checkpoint, device="cpu", download=flow.download
            )
        except (CheckpointError, ValueError, OSError) as exc:
            chosen = ""
            if flow.model == "auto" and flow.checkpoint is None:  # a damaged file in the cache
                chosen = (
                    f" (model 'auto' chose it from the cache: delete the file, or choose a "
                    f"model, e.g. --model {_shipped_arch()} for the shipped one)"
                )
            raise RunStartError(
                f"checkpoint {choice.checkpoint!r} for {choice.model}: {_one_line(exc)}{chosen}"
            ) from None
        sha256 = network.checkpoint_info.sha256
        del network
    return Estimator(choice.model, choice.checkpoint, sha256, choice.notice, device_type)


def _shipped_arch() -> str:
    """The architecture of the model that ships in the package."""
    return next(spec.arch for spec in WEIGHTS.values() if spec.bundled)


def check_loaded_checkpoint(estimator: Estimator, info: Any) -> None:
    """Raises :class:`CheckpointError` when a worker loaded another file than the run started
    with (``info``: the model's ``checkpoint_info``; the cache changed, or a Ray node has its
    own copy)."""
    if estimator.sha256 is None or info is None or info.sha256 == estimator.sha256:
        return
    raise CheckpointError(
        f"checkpoint {estimator.checkpoint!r} loaded here from {info.path} has SHA-256 "
        f"{info.sha256[:12]}..., but the run started with {estimator.sha256[:12]}...: every "
        "video of a run must use the same weights"
    )


LATER_SETTINGS: tuple[tuple[str, str, Any], ...] = (
    ("decode", "short_side", None),
    ("warp", "mb_difference", "central"),
    ("warp", "count_outside", False),
)
"""(section, name, default) of settings added after runs were made: in a results key only
when not at their default."""


def layout_markers(config: RunConfig) -> dict[str, Any]:
    """Flow-JPEG naming added after runs were made, in a results key's ``output`` section only
    where it applies: the dense_flow RGB frames (``rgb_ends_pairs``) and denseflow's gap names
    (``flow_jpg_template``). Videos whose meta.json lacks them were written the older way."""
    markers: dict[str, Any] = {}
    if "jpg" in config.output.formats:
        layout = config.output.jpg_layout.for_gap(config.flow.gap)
        if layout.rgb_ends_pairs and config.output.write_rgb:
            markers["rgb_ends_pairs"] = True
        if layout.gap_infix and config.flow.gap != 1:
            markers["flow_jpg_template"] = layout.x_template
    return markers


def results_key(config: RunConfig, estimator: Estimator) -> dict[str, Any]:
    """The settings that change the numbers a run writes (see the module docstring)."""
    key = config_to_dict(config)
    for section, names in PLACEMENT_SETTINGS.items():
        for name in names:
            key[section].pop(name, None)
    flow = key["flow"]
    flow.pop("checkpoint", None)
    flow["model"] = estimator.model
    # recorded only when on, so the hash of runs without refinement is what it was before
    refine = resolve_refine(flow.pop("refine", "auto"), estimator.model, estimator.checkpoint)
    if refine != "none":
        flow["refine"] = refine
    # settings added later are recorded only when they change something, so that the hash of
    # a run without them is what it was before
    for section, name, default in LATER_SETTINGS:
        if key[section].get(name) == default:
            key[section].pop(name, None)
    key["output"].update(layout_markers(config))
    if estimator.is_network:
        for name in DIS_SETTINGS:
            flow.pop(name, None)
        flow["checkpoint_sha256"] = estimator.sha256
        flow["device_type"] = estimator.device_type
    else:
        for name in NETWORK_SETTINGS:
            flow.pop(name, None)
    return key


def results_hash(key: dict[str, Any]) -> str:
    """First 12 hex digits of the SHA-256 of the canonical JSON of a :func:`results_key`."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def key_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``["flow.model 'dis' -> 'raft-large'", ...]``: dotted settings that differ."""
    found = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if isinstance(before, dict) and isinstance(after, dict):
            found.extend(key_differences(before, after, f"{prefix}{name}."))
        elif before != after:
            found.append(f"{prefix}{name} {_short(before)} -> {_short(after)}")
    return found


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:  # a SHA-256
        return repr(value[:12] + "...")
    return repr(value)


def check_output_root(out_root: str | Path) -> None:
    """Checks, without creating anything, that ``out_root`` can be created and written.

    Raises:
        RunStartError: a path component is a file, the folder (or the deepest existing folder
            above it) is not writable or on a read-only file system, or its file system has
            less than :data:`MIN_FREE_BYTES` free.
    """
    target = Path(os.path.abspath(out_root))
    if target.exists() and not target.is_dir():
        raise RunStartError(f"output folder {out_root}: {target} exists and is not a folder")
    existing = target
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise RunStartError(
            f"cannot create output folder {out_root}: {existing} is a file, not a folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only(existing) else "permission denied"
        raise RunStartError(f"cannot write to output folder {out_root}: {existing}: {why}")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise RunStartError(
            f"no space for output folder {out_root}: the file system of {existing} has "
            f"{free} bytes free (a run needs at least {MIN_FREE_BYTES // 1024} KiB)"
        )


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
