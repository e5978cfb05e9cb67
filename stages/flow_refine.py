"""Variational refinement of a network's flow at full resolution.

RAFT-family networks estimate flow on a 1/8 grid and upsample it; a small model in particular
leaves sub-pixel errors on smooth texture and a band of about one grid cell along motion
boundaries. OpenCV's ``VariationalRefinement`` (the last step of DIS: a few fixed-point
iterations of a brightness / gradient constancy energy with a smoothness term, solved by SOR
from the given flow) removes much of both at a small cost (56 ms per pair at 1024x436 on two
cores, OpenCV's default 5 + 5 iterations). Measured on the shipped model
(``benchmarks/trained_model.py``, benchmarks/RESULTS.md): quickstart scene 0.24 -> 0.13 px,
held-out ``photo`` 0.37 -> 0.32 px and ``layered`` 1.82 -> 1.74 px (32 pairs each).

``flow.refine``: ``auto`` refines after the checkpoints whose registry entry asks for it
(:attr:`models.weights.WeightSpec.refine`), ``variational`` always, ``none`` never. DIS
already ends with this step and is never refined again.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from models.weights import WEIGHTS

REFINE_CHOICES: tuple[str, ...] = ("auto", "none", "variational")


def resolve_refine(refine: str, model: str, checkpoint: str | None) -> str:
    """``none`` or ``variational`` for a resolved ``model`` and ``checkpoint`` (a registry name
    or a file; files and random weights get ``none`` under ``auto``)."""
    if refine not in REFINE_CHOICES:
        raise ValueError(f"refine must be one of {REFINE_CHOICES}, got {refine!r}")
    if model == "dis":
        return "none"
    if refine != "auto":
        return refine
    spec = WEIGHTS.get(checkpoint) if checkpoint is not None else None
    return spec.refine if spec is not None else "none"


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def refine_flow(flow: np.ndarray, image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
    """Refined copy of ``flow`` ``(H, W, 2)`` float32 pixels (channel 0 = x) from ``image1``
    to ``image2``, ``(H, W, 3)`` uint8 RGB."""
    if flow.shape != (*image1.shape[:2], 2) or image1.shape != image2.shape:
        raise ValueError(
            f"flow {flow.shape} and images {image1.shape}, {image2.shape} do not match"
        )
    refined = np.array(flow, dtype=np.float32, order="C", copy=True)
    return cv2.VariationalRefinement.create().calc(_gray(image1), _gray(image2), refined)


def refine_flows(
    flows: torch.Tensor, frames: np.ndarray, pairs: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """Refines ``flows`` ``(n, 2, H, W)`` float32 pixels of the chunk-local ``pairs`` (source,
    target) of ``frames`` ``(T, H, W, 3)`` uint8 RGB; returns ``(n, 2, H, W)`` float32 on the
    device of ``flows`` (the refinement itself runs on the CPU)."""
    gray = {t: _gray(frames[t]) for pair in pairs for t in pair}
    host = flows.detach().float().cpu().permute(0, 2, 3, 1).contiguous().numpy()  # (n, H, W, 2)
    refiner = cv2.VariationalRefinement.create()
    for n, (a, b) in enumerate(pairs):
        # a copy, not np.ascontiguousarray: numpy calls a view with a side of 1 contiguous
        # whatever its strides, and OpenCV refuses such strides
        flow = np.array(host[n], copy=True)
        host[n] = refiner.calc(gray[a], gray[b], flow)
    return torch.from_numpy(host).permute(0, 3, 1, 2).contiguous().to(flows.device)
