"""Resolving ``flow.model: auto`` (and a bare architecture name) to a concrete estimator."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from models import CheckpointError
from models.checkpoint_io import infer_architecture, load_checkpoint
from models.weights import (
    WEIGHTS,
    auto_order,
    default_cache_dir,
    default_checkpoint,
    resolve_checkpoint,
)

from .config import FlowConfig

logger = logging.getLogger(__name__)

#: ``flow.checkpoint`` value that asks for untrained weights (tests and speed benchmarks only).
RANDOM_WEIGHTS = "random"


@dataclass(frozen=True)
class ModelChoice:
    """The estimator a run uses, and the notice to record when ``auto`` fell back."""

    model: str
    checkpoint: str | None
    notice: str | None = None


def choose_model(flow: FlowConfig) -> ModelChoice:
    """Concrete model and checkpoint for a flow config.

    An explicit model without a checkpoint uses the architecture's default checkpoint (the
    registry entry marked ``default``); ``checkpoint: random`` gives untrained weights.
    ``auto`` with a checkpoint takes the checkpoint's architecture (:func:`architecture_of`).
    ``auto`` alone never downloads: it takes the first checkpoint of the registry's ``auto`` order
    (:func:`models.weights.auto_order`) that is available locally: an official checkpoint in
    the cache (Sintel-finetuned RAFT first: it generalises best to real video among the released
    weights), else the model that ships inside the package, else OpenCV DIS with a notice. A
    cached checkpoint that fails its published hash is skipped with a warning that names it.
    """
    if flow.model == "dis":
        if flow.checkpoint is not None:
            logger.warning(
                "flow.checkpoint %s is not used: model dis (OpenCV DIS) has no weights",
                flow.checkpoint,
            )
        return ModelChoice("dis", None)
    if flow.model != "auto":
        if flow.checkpoint == RANDOM_WEIGHTS:
            logger.warning("flow.checkpoint: random -- untrained weights, the flow is meaningless")
            return ModelChoice(flow.model, None)
        return ModelChoice(flow.model, flow.checkpoint or default_checkpoint(flow.model))
    if flow.checkpoint is not None:  # auto with a checkpoint: the checkpoint's architecture
        return ModelChoice(architecture_of(flow.checkpoint), flow.checkpoint)
    problems = []
    for spec in auto_order():
        try:
            resolve_checkpoint(spec.name, download=False)
        except CheckpointError as exc:
            if spec.bundled:
                problems.append(str(exc))
            elif (default_cache_dir() / spec.file_name).exists():  # there, but fails its hash
                logger.warning("model 'auto' skips checkpoint %s: %s", spec.name, exc)
            continue
        return ModelChoice(spec.arch, spec.name)
    reason = problems[0] if problems else "no official checkpoint in the cache"
    opt_in = [spec for spec in WEIGHTS.values() if spec.bundled and spec.auto_rank is None]
    hint = f", or use the model shipped with motionpipe: --model {opt_in[0].arch}" if opt_in else ""
    notice = (
        f"model 'auto': {reason}; using OpenCV DIS "
        f"({flow.dis_preset}). Put a checkpoint in the cache or pass --checkpoint{hint}."
    )
    logger.warning(notice)
    return ModelChoice("dis", None, notice)


def architecture_of(checkpoint: str) -> str:
    """The architecture ``checkpoint`` belongs to: a registry entry's, or the one a file's
    weights fit (the file is read to tell).

    Raises:
        ValueError: ``random`` (untrained weights of which architecture?).
        models.CheckpointError: a file that cannot be read or fits no architecture.
    """
    if checkpoint in WEIGHTS:
        return WEIGHTS[checkpoint].arch
    if checkpoint == RANDOM_WEIGHTS:
        raise ValueError(
            "checkpoint 'random' (untrained weights) needs an explicit --model / flow.model"
        )
    return infer_architecture(load_checkpoint(checkpoint))
