"""Resolving ``flow.model: auto`` to a concrete estimator."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from models import CheckpointError
from models.registry import DEFAULT_CHECKPOINTS
from models.weights import WEIGHTS, resolve_checkpoint

from .config import FlowConfig

logger = logging.getLogger(__name__)

#: Preference order for ``auto``: Sintel-finetuned RAFT generalises best to real video among
#: the released weights and keeps memory bounded at high resolution (GMA's attention is
#: quadratic in the number of positions), then GMA, then the FlyingThings models.
AUTO_CHECKPOINTS: tuple[str, ...] = (
    "raft-sintel",
    "gma-sintel",
    "tv-raft-large-c-t-skht-v2",
    "raft-things",
    "gma-things",
    "tv-raft-large-c-t-v2",
)


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

    An explicit model without a checkpoint uses the architecture's default checkpoint
    (:data:`models.registry.DEFAULT_CHECKPOINTS`); ``checkpoint: random`` gives untrained weights.
    ``auto``: the first of :data:`AUTO_CHECKPOINTS` already in the cache; otherwise one attempt
    to download the first (when ``flow.download``); otherwise OpenCV DIS with a notice.
    """
    if flow.model == "dis":
        return ModelChoice("dis", None)
    if flow.model != "auto":
        if flow.checkpoint == RANDOM_WEIGHTS:
            logger.warning("flow.checkpoint: random -- untrained weights, the flow is meaningless")
            return ModelChoice(flow.model, None)
        return ModelChoice(flow.model, flow.checkpoint or DEFAULT_CHECKPOINTS[flow.model][0])
    if flow.checkpoint is not None:
        raise ValueError(
            "flow.checkpoint needs an explicit flow.model (raft-large, raft-small, gma)"
        )
    for name in AUTO_CHECKPOINTS:
        try:
            resolve_checkpoint(name, download=False)
        except CheckpointError:
            continue
        return ModelChoice(WEIGHTS[name].arch, name)
    first = AUTO_CHECKPOINTS[0]
    if flow.download:
        try:
            resolve_checkpoint(first, download=True)
            return ModelChoice(WEIGHTS[first].arch, first)
        except CheckpointError as exc:
            reason = str(exc).split(". ")[0]
    else:
        reason = "downloads are disabled (flow.download: false)"
    notice = (
        f"model 'auto': no pretrained RAFT/GMA checkpoint available ({reason}); using OpenCV DIS "
        f"({flow.dis_preset}). Put a checkpoint in the cache or pass --checkpoint for RAFT/GMA."
    )
    logger.warning(notice)
    return ModelChoice("dis", None, notice)
