"""Reading checkpoint files and fitting their state dicts to our models.

Our model modules use exactly the state-dict key names of the official implementations
(princeton-vl/RAFT, zacjiang/GMA) without the ``module.`` prefix that ``DataParallel`` adds,
e.g. ``fnet.conv1.weight``, ``cnet.layer2.0.norm3.running_mean`` or ``att.to_qk.weight``.

Here live

* :func:`load_checkpoint`: a file read without ever executing pickled code, its key names
  normalised (errors say in words what is wrong with the file);
* the key layouts: :func:`strip_module_prefix`, :func:`official_to_torchvision`,
  :func:`torchvision_to_official`, :func:`to_official_layout`;
* :func:`infer_architecture` and :func:`gma_num_heads`, read from the key names and shapes;
* :func:`load_into`: a strict load into a model with readable errors;
* :class:`CheckpointError`, raised by everything that finds, fetches or loads checkpoints.

Nothing here knows the registry of published checkpoints (:mod:`models.weights`) or how
files are downloaded (:mod:`models.download`).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .raft import ARCHS

#: The architecture names a checkpoint can belong to.
ARCHITECTURES: tuple[str, ...] = ARCHS
_MAX_LISTED = 5
_GMA_DIM_HEAD = 128


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found, downloaded, read or loaded into a model."""


def check_architecture(arch: str) -> None:
    """Raise ``ValueError`` unless ``arch`` is one of :data:`ARCHITECTURES`."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")


# --------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a state dict with official key names.

    The file is always read with ``torch.load(..., weights_only=True)``, so pickled code is
    refused, never run. Accepted contents: a plain state dict, one wrapped in
    ``{"state_dict": ...}`` / ``{"model": ...}``, keys with the ``module.`` prefix of
    ``DataParallel`` (stripped) and torchvision's RAFT layout (converted). Anything else
    raises :class:`CheckpointError` saying what was expected.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise CheckpointError(
            f"checkpoint file not found: {file}. Pass an existing .pth file with "
            f"--checkpoint PATH, or a checkpoint name from the registry (models.weights.WEIGHTS)"
        )
    if not file.is_file():
        raise CheckpointError(f"checkpoint path {file} is not a file")
    raw = _torch_load(file)
    state = _extract_state(raw, file)
    return to_official_layout(state)


def _torch_load(file: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` and errors translated to plain language."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(_load_failure_message(file, exc)) from exc


def _load_failure_message(file: Path, exc: Exception) -> str:
    """Explain why ``torch.load`` rejected ``file``."""
    text = str(exc)
    size = file.stat().st_size
    if size == 0 or isinstance(exc, EOFError):
        return (
            f"{file} is empty or cut short ({size} bytes): the download or copy was probably "
            f"interrupted. Delete it and fetch the checkpoint again."
        )
    code = re.search(r"GLOBAL ([\w.]+)", text)
    if code is not None:
        return (
            f"{file} is not a plain weights file: it contains a pickled reference to the "
            f"Python object {code.group(1)!r}. Unpickling such references can run arbitrary "
            f"code, so motionpipe reads checkpoints with torch.load(weights_only=True), which "
            f"accepts only tensors and plain containers, and refuses this file. If it comes "
            f"from a source you trust, re-save only its tensors: "
            f"torch.save(model.state_dict(), 'clean.pth')."
        )
    header = file_header(file)
    if header.startswith(b"PK"):
        return (
            f"{file} is truncated or corrupt (PyTorch could not read its zip container: "
            f"{_first_line(text)}). Delete it and fetch the checkpoint again."
        )
    if header[:1] == b"\x80":
        return (
            f"{file} is not a plain weights file: torch.load(weights_only=True) refused its "
            f"pickle ({_first_reason(text)}). It is either damaged or holds Python objects "
            f"other than tensors, whose unpickling can run arbitrary code, so motionpipe will "
            f"not load it. Re-save just the state dict with torch.save(state_dict, PATH)."
        )
    return (
        f"{file} is not a PyTorch checkpoint (unrecognised header {header[:8]!r}); expected a "
        f"file written by torch.save. It may be damaged, or an HTML error page saved instead "
        f"of the download."
    )


def file_header(file: Path) -> bytes:
    """First bytes of ``file`` (empty on error)."""
    try:
        with open(file, "rb") as handle:
            return handle.read(16)
    except OSError:
        return b""


def _first_line(text: str) -> str:
    """First line of an exception message."""
    return text.strip().splitlines()[0] if text.strip() else "no details"


def _first_reason(text: str) -> str:
    """The most specific line of a ``weights_only`` unpickler message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Unsupported", "Trying to load", "Can only", "Unpickler")):
            return line
    return lines[0] if lines else "no details"


def _extract_state(raw: Any, file: Path) -> dict[str, torch.Tensor]:
    """Unwrap ``raw`` to a ``{name: tensor}`` dict or explain what is wrong with it."""
    expected = "expected a state dict (a dict of parameter name -> tensor)"
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            f"{file} holds a {type(raw).__name__}, not a state dict; {expected}, as written by "
            f"torch.save(model.state_dict(), PATH)."
        )
    for key in _WRAPPER_KEYS:
        inner = raw.get(key)
        if isinstance(inner, Mapping):
            raw = inner
            break
    if len(raw) == 0:
        raise CheckpointError(f"{file} holds an empty dict; {expected}.")
    bad = [(k, v) for k, v in raw.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        shown = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in bad[:_MAX_LISTED])
        more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise CheckpointError(
            f"{file} is not a state dict: {len(bad)} of its {len(raw)} entries are not "
            f"tensors ({shown}{more}); {expected}."
        )
    return dict(raw)


# --------------------------------------------------------------------------------------
# Key layouts: DataParallel prefix and torchvision
# --------------------------------------------------------------------------------------

_ENCODER_TO_TV = {"fnet": "feature_encoder", "cnet": "context_encoder"}
_MOTION_TO_TV = {
    "convc1": "convcorr1.0",
    "convc2": "convcorr2.0",
    "convf1": "convflow1.0",
    "convf2": "convflow2.0",
    "conv": "conv.0",
}
_MASK_TO_TV = {
    "update_block.mask.0": "mask_predictor.convrelu.0",
    "update_block.mask.2": "mask_predictor.conv",
}
_TV_PREFIXES = ("feature_encoder.", "context_encoder.", "mask_predictor.")
_BLOCK_RE = re.compile(r"^(layer\d+\.\d+)\.([a-z_]+?)(\d*)\.(.+)$")


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that ``torch.nn.DataParallel`` puts on every key."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def is_torchvision_layout(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` uses torchvision's RAFT key names (``feature_encoder.`` ...)."""
    return any(k.startswith(_TV_PREFIXES) for k in state)


def to_official_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official key names: ``module.`` stripped and torchvision names converted."""
    plain = strip_module_prefix(state)
    return torchvision_to_official(plain) if is_torchvision_layout(plain) else plain


def _bottleneck_blocks(keys: Iterable[str], third_conv: str) -> set[str]:
    """``"<encoder>.layerL.B"`` prefixes of blocks that have a third convolution."""
    found = set()
    for key in keys:
        parts = key.split(".")
        if len(parts) > 3 and parts[1].startswith("layer") and parts[3] == third_conv:
            found.add(".".join(parts[:3]))
    return found


def official_to_torchvision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official RAFT / RAFT-small state dict to torchvision's key names.

    The second registration of each downsample BatchNorm (``norm3`` in residual blocks,
    ``norm4`` in bottleneck blocks) is dropped: torchvision stores it once, as
    ``downsample.1``. GMA has no torchvision counterpart.
    """
    plain = strip_module_prefix(state)
    bottlenecks = _bottleneck_blocks(plain, "conv3")
    out: dict[str, torch.Tensor] = {}
    for key, value in plain.items():
        new = _official_key_to_tv(key, bottlenecks)
        if new is not None:
            out[new] = value
    return out


def _official_key_to_tv(key: str, bottlenecks: set[str]) -> str | None:
    """torchvision name of one official key (``None`` for the dropped norm alias)."""
    head, _, rest = key.partition(".")
    if head in _ENCODER_TO_TV:
        block = ".".join(key.split(".")[:3])
        converted = _encoder_key_to_tv(rest, block in bottlenecks)
        return None if converted is None else f"{_ENCODER_TO_TV[head]}.{converted}"
    for official, tv in _MASK_TO_TV.items():
        if key.startswith(official + "."):
            return tv + key[len(official) :]
    if key.startswith("update_block.encoder."):
        name, _, param = key.removeprefix("update_block.encoder.").partition(".")
        if name in _MOTION_TO_TV:
            return f"update_block.motion_encoder.{_MOTION_TO_TV[name]}.{param}"
    if key.startswith("update_block.gru."):
        name, _, param = key.removeprefix("update_block.gru.").partition(".")
        match = re.fullmatch(r"conv([zrq])([12]?)", name)
        if match is not None:
            index = match.group(2) or "1"
            return f"update_block.recurrent_block.convgru{index}.conv{match.group(1)}.{param}"
    if key.startswith("update_block.flow_head."):
        return key
    raise CheckpointError(
        f"key {key!r} has no torchvision equivalent (torchvision has RAFT and RAFT-small only)"
    )


def _encoder_key_to_tv(rest: str, bottleneck: bool) -> str | None:
    """torchvision name of a key inside ``fnet`` / ``cnet`` (without that prefix)."""
    for official, tv in (
        ("conv1.", "convnormrelu.0."),
        ("norm1.", "convnormrelu.1."),
        ("conv2.", "conv."),
    ):
        if rest.startswith(official):
            return tv + rest[len(official) :]
    match = _BLOCK_RE.match(rest)
    if match is None:
        raise CheckpointError(f"unexpected encoder key {rest!r}")
    block, kind, index, param = match.groups()
    n_convs = 3 if bottleneck else 2
    if kind == "conv" and index:
        return f"{block}.convnormrelu{index}.0.{param}"
    if kind == "norm" and index and int(index) <= n_convs:
        return f"{block}.convnormrelu{index}.1.{param}"
    if kind == "norm" and index and int(index) == n_convs + 1:
        return None  # same BatchNorm as downsample.1
    if kind == "downsample" and not index:
        return f"{block}.downsample.{param}"
    raise CheckpointError(f"unexpected encoder key {rest!r}")


def torchvision_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``raft_large`` / ``raft_small`` state dict to official key names.

    Each downsample BatchNorm (``downsample.1``) is also exposed under the name the official
    code registers it a second time (``norm3`` for residual blocks, ``norm4`` for bottleneck
    blocks); both names share the same tensors.
    """
    plain = strip_module_prefix(state)
    bottlenecks = _bottleneck_blocks(plain, "convnormrelu3")
    separable_gru = any(k.startswith("update_block.recurrent_block.convgru2.") for k in plain)
    out: dict[str, torch.Tensor] = {}
    for key, value in plain.items():
        for new in _tv_key_to_official(key, bottlenecks, separable_gru):
            out[new] = value
    return out


def _tv_key_to_official(key: str, bottlenecks: set[str], separable_gru: bool) -> list[str]:
    """Official name(s) of one torchvision key (two for a downsample BatchNorm)."""
    head, _, rest = key.partition(".")
    official_encoder = {tv: off for off, tv in _ENCODER_TO_TV.items()}
    if head in official_encoder:
        enc = official_encoder[head]
        in_bottleneck = any(key.startswith(b + ".") for b in bottlenecks)
        return [f"{enc}.{name}" for name in _tv_encoder_key_to_official(rest, in_bottleneck)]
    for official, tv in _MASK_TO_TV.items():
        if key.startswith(tv + "."):
            return [official + key[len(tv) :]]
    if key.startswith("update_block.motion_encoder."):
        rest = key.removeprefix("update_block.motion_encoder.")
        for official, tv in _MOTION_TO_TV.items():
            if rest.startswith(tv + "."):
                return [f"update_block.encoder.{official}{rest[len(tv) :]}"]
    match = re.fullmatch(r"update_block\.recurrent_block\.convgru([12])\.conv([zrq])\.(\w+)", key)
    if match is not None:
        index, gate, param = match.groups()
        suffix = index if separable_gru else ""
        return [f"update_block.gru.conv{gate}{suffix}.{param}"]
    if key.startswith("update_block.flow_head."):
        return [key]
    raise CheckpointError(f"unexpected torchvision RAFT key {key!r}")


def _tv_encoder_key_to_official(rest: str, bottleneck: bool) -> list[str]:
    """Official name(s) of a key inside torchvision's feature / context encoder."""
    for tv, official in (
        ("convnormrelu.0.", "conv1."),
        ("convnormrelu.1.", "norm1."),
        ("conv.", "conv2."),
    ):
        if rest.startswith(tv):
            return [official + rest[len(tv) :]]
    match = re.fullmatch(r"(layer\d+\.\d+)\.(convnormrelu(\d)|downsample)\.([01])\.(\w+)", rest)
    if match is None:
        raise CheckpointError(f"unexpected torchvision encoder key {rest!r}")
    block, part, index, position, param = match.groups()
    if part.startswith("convnormrelu"):
        layer = "conv" if position == "0" else "norm"
        return [f"{block}.{layer}{index}.{param}"]
    if position == "0":
        return [f"{block}.downsample.0.{param}"]
    alias = "norm4" if bottleneck else "norm3"
    return [f"{block}.{alias}.{param}", f"{block}.downsample.1.{param}"]


# --------------------------------------------------------------------------------------
# Architecture checks and loading into a model
# --------------------------------------------------------------------------------------


def infer_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """The architecture (:data:`ARCHITECTURES`) of ``state``, from its key names.

    Accepts official, ``module.``-prefixed and torchvision layouts.
    """
    keys = set(to_official_layout(state))
    if "att.to_qk.weight" in keys or any(k.startswith("update_block.aggregator.") for k in keys):
        return "gma"
    if "update_block.gru.convz1.weight" in keys:
        return "raft-large"
    if "update_block.gru.convz.weight" in keys:
        return "raft-small-convex" if "update_block.mask.0.weight" in keys else "raft-small"
    sample = ", ".join(sorted(keys)[:_MAX_LISTED])
    raise CheckpointError(
        "cannot tell which model this checkpoint belongs to: it has none of the update-block "
        f"keys of RAFT, RAFT-small or GMA (first keys: {sample}). Expected a checkpoint of "
        f"one of {ARCHITECTURES}."
    )


def gma_num_heads(state: Mapping[str, torch.Tensor]) -> int:
    """Number of attention heads of a GMA state dict (``att.to_qk.weight`` has
    ``heads * 128 * 2`` output channels)."""
    official = to_official_layout(state)
    weight = official.get("att.to_qk.weight")
    if weight is None:
        raise CheckpointError("not a GMA checkpoint: it has no 'att.to_qk.weight'")
    out_channels = int(weight.shape[0])
    per_head = 2 * _GMA_DIM_HEAD
    if out_channels % per_head != 0 or out_channels == 0:
        raise CheckpointError(
            f"att.to_qk.weight has {out_channels} output channels, expected a positive "
            f"multiple of {per_head} (heads x 128 x 2)"
        )
    return out_channels // per_head


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, arch: str) -> None:
    """Load ``state`` strictly into ``model`` (a model of architecture ``arch``).

    Raises :class:`CheckpointError` naming the right architecture when the checkpoint is of
    another architecture, or listing missing / unexpected keys and shape mismatches.
    """
    check_architecture(arch)
    official = to_official_layout(state)
    try:
        found = infer_architecture(official)
    except CheckpointError:
        found = None
    if found is not None and found != arch:
        raise CheckpointError(
            f"this checkpoint is a {found} checkpoint but the model is {arch}; use the "
            f"{found} architecture (--model {found}, create_model({found!r}, ...)) or a {arch} "
            "checkpoint"
        )
    problems = _key_problems(model.state_dict(), official)
    if problems:
        raise CheckpointError(f"checkpoint does not fit the {arch} model: " + "; ".join(problems))
    model.load_state_dict(official, strict=True)


def _key_problems(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> list[str]:
    """Readable descriptions of missing keys, unexpected keys and shape mismatches."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(given[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    problems = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if items:
            problems.append(f"{len(items)} {label} ({_preview(items)})")
    if any(item.startswith("att.to_qk.weight:") for item in mismatched):
        heads = int(given["att.to_qk.weight"].shape[0]) / (2 * _GMA_DIM_HEAD)
        problems.append(f"the checkpoint's GMA attention has {heads:g} head(s)")
    return problems


def _preview(items: list[str]) -> str:
    """The first few items, comma separated, with a count of the rest."""
    shown = ", ".join(items[:_MAX_LISTED])
    return shown if len(items) <= _MAX_LISTED else f"{shown}, ... {len(items) - _MAX_LISTED} more"
