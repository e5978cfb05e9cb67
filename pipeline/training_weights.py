"""Weight files of training runs: the official layout, atomic writes, and exports for
distribution with a JSON sidecar that says how they were made."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from models.atomic_files import write_bytes_atomic

from .json_files import write_json


def official_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under the official key names with the ``module.`` prefix that the
    official scripts expect (they load into ``nn.DataParallel``)."""
    return {f"module.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` through memory, then one atomic write: a full disk is an ``OSError``
    naming ``path`` (torch's own file writer reports it as a RuntimeError without errno)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getbuffer())


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Writes :func:`official_state_dict` atomically."""
    save_torch(official_state_dict(model), path)


def export_weights(
    source: Path, target: Path, *, half: bool, provenance: dict[str, Any]
) -> dict[str, Any]:
    """Writes a checkpoint for distribution and a JSON sidecar that says how it was made.

    ``source``: any checkpoint :func:`models.weights.load_checkpoint` reads (a run's
    ``model.pth`` or ``checkpoints/step_*.pth``). ``target``: the new ``.pth`` (official layout
    with the ``module.`` prefix; float16 tensors with ``half``, which halves the file and loads
    into float32 models unchanged otherwise). The sidecar ``target.with_suffix(".json")`` holds
    ``provenance`` plus the architecture, dtype, parameter count (the architecture's learned
    parameters: BatchNorm running statistics and the aliases the official layout gives some
    BatchNorm layers are not parameters) and the file's SHA-256 (the value a registry entry
    needs).
    """
    from models.weights import infer_architecture, load_checkpoint, sha256_file

    state = load_checkpoint(source)
    arch = infer_architecture(state)
    out = {}
    for key, tensor in state.items():
        floating = tensor.is_floating_point()
        out[f"module.{key}"] = tensor.half() if half and floating else tensor
    target.parent.mkdir(parents=True, exist_ok=True)
    save_torch(out, target)
    record = {
        **provenance,
        "architecture": arch,
        "dtype": "float16" if half else "float32",
        "parameters": parameter_count(arch),
        "file": target.name,
        "bytes": target.stat().st_size,
        "sha256": sha256_file(target),
    }
    write_json(target.with_suffix(".json"), record)
    return record


def parameter_count(arch: str) -> int:
    """Learned parameters of an architecture (``model.parameters()``, as papers count them)."""
    from models import create_model

    return sum(parameter.numel() for parameter in create_model(arch).parameters())
