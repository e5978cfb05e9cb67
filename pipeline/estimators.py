"""Flow estimators behind one call: ``(image1, image2) -> flow``, for ``pair`` and ``evaluate``.

An estimator takes two ``(H, W, 3)`` uint8 RGB images and returns ``(H, W, 2)`` float32 flow
in pixels (channel 0 = x, image 1 -> image 2). :func:`build_estimator` makes one from a model
name as the CLI takes it (``auto``, ``dis`` or an architecture).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np
import torch

from models import RAFT, create_model
from stages.flow import DisFlow
from stages.flow_refine import refine_flow, resolve_refine
from stages.settings import correlation_kind

from .config import FlowConfig
from .devices import resolve_device, resolve_precision
from .images import to_model_input
from .model_choice import choose_model

Estimator = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(image1, image2)`` ``(H, W, 3)`` uint8 RGB -> ``(H, W, 2)`` float32 flow in pixels."""


class DisEstimator:
    """OpenCV DIS on grayscale frames, as the flow stage runs it (``medium`` preset)."""

    def __init__(self, preset: str = "medium", *, notice: str | None = None) -> None:
        self.preset = preset
        self.notice = notice
        self._dis = DisFlow(preset)

    def __call__(self, image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
        return self._dis(DisFlow.gray(image1), DisFlow.gray(image2))

    def describe(self) -> dict[str, Any]:
        """What the summary records about the estimator."""
        out: dict[str, Any] = {"model": "dis", "dis_preset": self.preset}
        if self.notice:
            out["notice"] = self.notice
        return out


@dataclass
class NetworkEstimator:
    """A RAFT-family network: ``estimate_flow`` on one pair at a time.

    ``corr`` (``auto`` as ``flow.corr``: on-demand above ``on_demand_above_pixels`` padded
    pixels) and ``autocast`` (float32 by default) are passed on.
    """

    network: RAFT = field(repr=False)
    _: KW_ONLY
    iters: int = 12
    pad_mode: str = "sintel"
    corr: str = FlowConfig.corr
    on_demand_above_pixels: int = FlowConfig.on_demand_above_pixels
    autocast: torch.dtype | None = None
    refine: str = "none"

    def __post_init__(self) -> None:
        self.device = next(self.network.parameters()).device

    @torch.inference_mode()
    def __call__(self, image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
        height, width = self.network.padder(*image1.shape[:2], mode=self.pad_mode).padded_size
        corr = correlation_kind(self.corr, height * width, self.on_demand_above_pixels)
        result = self.network.estimate_flow(
            to_model_input(image1, self.device),
            to_model_input(image2, self.device),
            iters=self.iters,
            pad_mode=self.pad_mode,
            corr=corr,
            autocast=self.autocast,
        )
        flow = result.flow[0].permute(1, 2, 0).float().cpu().numpy()  # (H, W, 2)
        return refine_flow(flow, image1, image2) if self.refine == "variational" else flow

    def describe(self) -> dict[str, Any]:
        """What the summary records about the estimator (checkpoint source and sha256)."""
        info = getattr(self.network, "checkpoint_info", None)
        return {
            "model": self.network.arch,
            "checkpoint": info.source if info else None,
            "checkpoint_path": info.path if info else None,
            "checkpoint_sha256": info.sha256 if info else None,
            "iters": self.iters,
            "pad_mode": self.pad_mode,
            "refine": self.refine,
            "device": str(self.device),
        }


def build_estimator(
    model: str,
    *,
    checkpoint: str | None = None,
    iters: int = FlowConfig.iters,
    pad_mode: str = FlowConfig.pad_mode,
    device: str = FlowConfig.device,
    corr: str = FlowConfig.corr,
    precision: str = FlowConfig.precision,
    refine: str = FlowConfig.refine,
) -> DisEstimator | NetworkEstimator:
    """The estimator for a model name (``auto``, ``dis`` or an architecture).

    ``auto`` resolves as ``run`` does (:func:`pipeline.model_choice.choose_model`: a local
    official checkpoint, else the model shipped in the package). An architecture without
    ``checkpoint`` uses its default checkpoint; ``checkpoint="random"`` gives untrained weights.
    ``refine`` as ``flow.refine`` (:mod:`stages.flow_refine`).

    Raises:
        ValueError: ``checkpoint`` with ``dis``, an unknown model or device.
        models.CheckpointError: the checkpoint cannot be found or loaded.
    """
    if model == "dis":
        if checkpoint is not None:
            raise ValueError("--checkpoint does not apply to model dis")
        return DisEstimator()
    choice = choose_model(FlowConfig(model=model, checkpoint=checkpoint))
    if choice.model == "dis":
        return DisEstimator(notice=choice.notice)
    torch_device = resolve_device(device)
    autocast = resolve_precision(precision, torch_device)
    network = create_model(choice.model, checkpoint=choice.checkpoint, device=torch_device)
    return NetworkEstimator(
        network, iters=iters, pad_mode=pad_mode, corr=corr, autocast=autocast,
        refine=resolve_refine(refine, choice.model, choice.checkpoint),
    )  # fmt: skip
