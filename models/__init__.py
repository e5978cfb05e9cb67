"""Pure-PyTorch optical flow (RAFT, RAFT-small, GMA) and the MotionSqueeze module.

Networks: ``raft`` (the model, its builders and ``BUILDERS``, the one table of architectures),
``flow_grid`` (grid coordinates, the initial estimate, convex / bilinear upsampling),
``encoders``, ``update`` and ``winograd`` (its blocks and their fast CPU kernels), ``gma``,
``corr`` (all-pairs and on-demand correlation), ``padding``, ``warm_start``, ``losses``,
``motionsqueeze``. Weights: ``weights`` (the registry of published checkpoints),
``download`` (cache and verified downloads), ``checkpoint_io`` (reading files, key layouts,
strict loading), ``registry`` (``create_model``: an architecture by name, with weights).
Files: ``atomic_files`` (the atomic writes every layer uses; here because this is the bottom
layer).

Imports torch and numpy only: no I/O beyond checkpoint files and that helper, no
configuration objects, no global device. See README for the API; every tensor layout is
documented where it is produced.
"""

from .corr import CORR_KINDS, AllPairsCorrelation, OnDemandCorrelation
from .motionsqueeze import (
    MotionSqueeze,
    MotionSqueezeOutput,
    local_correlation,
    soft_argmax_displacement,
    strip_training_prefix,
)
from .padding import PAD_MODES, Padder
from .raft import ARCHS, RAFT, Context, FlowOutput, gma, raft_large, raft_small, raft_small_convex
from .registry import CheckpointInfo, create_model
from .trace import RefineTrace
from .warm_start import forward_interpolate
from .weights import WEIGHTS, CheckpointError, WeightSpec, list_weights

__all__ = [
    "ARCHS",
    "CORR_KINDS",
    "PAD_MODES",
    "RAFT",
    "WEIGHTS",
    "AllPairsCorrelation",
    "CheckpointError",
    "CheckpointInfo",
    "Context",
    "FlowOutput",
    "MotionSqueeze",
    "MotionSqueezeOutput",
    "OnDemandCorrelation",
    "Padder",
    "RefineTrace",
    "WeightSpec",
    "create_model",
    "forward_interpolate",
    "gma",
    "list_weights",
    "local_correlation",
    "raft_large",
    "raft_small",
    "raft_small_convex",
    "soft_argmax_displacement",
    "strip_training_prefix",
]
