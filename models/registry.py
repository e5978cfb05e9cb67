"""One entry point to build a flow network by name, with or without weights.

>>> model = create_model("raft-large", checkpoint="raft-things")       # doctest: +SKIP
>>> model = create_model("gma", checkpoint="/path/to/gma-sintel.pth")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from .checkpoint_io import (
    CheckpointError,
    check_architecture,
    gma_num_heads,
    load_checkpoint,
    load_into,
)
from .download import sha256_file
from .gma import AttentionMode
from .raft import BUILDERS, RAFT, gma
from .weights import resolve_checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointInfo:
    """Where a model's weights came from (recorded in run metadata)."""

    source: str
    path: str
    sha256: str


def create_model(
    name: str,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    gma_heads: int | None = None,
    gma_attention_mode: AttentionMode = "content",
) -> RAFT:
    """Builds an architecture of :data:`models.raft.BUILDERS` (``raft-large``, ``raft-small``,
    ``raft-small-convex``, ``gma``), loads weights, returns it in eval mode.

    Args:
        name: architecture name.
        checkpoint: a registry name (see :data:`models.weights.WEIGHTS`), a local ``.pth``
            path (official, ``module.``-prefixed or torchvision layout), or ``None`` for
            randomly initialised weights.
        device: where to put the model.
        cache_dir: checkpoint cache (default :func:`models.weights.default_cache_dir`).
        download: allow downloading registry checkpoints that are not cached.
        gma_heads: GMA attention heads; by default read from the checkpoint (1 otherwise).
        gma_attention_mode: ``content`` (official default), ``position`` or
            ``position-and-content``. Checkpoints do not record it; it must match training.

    The model's ``checkpoint_info`` attribute is a :class:`CheckpointInfo` or ``None``.
    """
    check_architecture(name)
    state = None
    info = None
    if checkpoint is not None:
        path = resolve_checkpoint(checkpoint, cache_dir=cache_dir, download=download)
        state = load_checkpoint(path)
        info = CheckpointInfo(source=str(checkpoint), path=str(path), sha256=sha256_file(path))
    if name == "gma":
        heads = gma_heads
        if state is not None and "att.to_qk.weight" in state:
            found = gma_num_heads(state)
            if heads is not None and heads != found:
                raise CheckpointError(
                    f"the checkpoint has {found} GMA attention head(s) but {heads} were requested"
                )
            heads = found
        model = gma(heads=heads or 1, attention_mode=gma_attention_mode)
    else:
        model = BUILDERS[name]()
    if state is not None:
        load_into(model, state, arch=name)
        logger.info("loaded %s weights from %s", name, info.path if info else checkpoint)
    model.checkpoint_info = info
    return model.to(device).eval()
