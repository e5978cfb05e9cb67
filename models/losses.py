"""Training loss and flow error metrics.

Flows are ``(B, 2, H, W)`` float32 in pixels (channel 0 = x); ``valid`` is ``(B, H, W)`` with
1 where the ground truth is defined (sparse data sets such as KITTI) and 0 elsewhere.
"""

from __future__ import annotations

import torch

#: Ground-truth vectors at least this long (pixels) are left out of the loss, as in RAFT.
MAX_FLOW = 400.0


def sequence_loss(
    predictions: list[torch.Tensor],
    flow_gt: torch.Tensor,
    valid: torch.Tensor,
    *,
    gamma: float = 0.8,
    max_flow: float = MAX_FLOW,
) -> torch.Tensor:
    """RAFT's sequence loss: exponentially weighted L1 over every iteration's prediction.

    ``sum_i gamma^(N - i - 1) * mean(valid * |pred_i - gt|)`` where the mean runs over every
    pixel and both channels, invalid ones included as zeros (the official normalisation: a
    sparse batch is not reweighted by its number of valid pixels). Pixels whose ground truth
    is ``max_flow`` pixels or longer count as invalid.

    Args:
        predictions: ``N`` flows ``(B, 2, H, W)``, first iteration first.
        flow_gt: ``(B, 2, H, W)`` ground truth.
        valid: ``(B, H, W)`` validity (bool or 0/1 float).

    Returns:
        A scalar tensor.
    """
    if not predictions:
        raise ValueError("predictions is empty")
    if predictions[-1].shape != flow_gt.shape:
        raise ValueError(
            f"prediction {tuple(predictions[-1].shape)} and ground truth {tuple(flow_gt.shape)} "
            "differ in shape"
        )
    mask = loss_mask(flow_gt, valid, max_flow=max_flow)[:, None].float()  # (B, 1, H, W)
    count = len(predictions)
    total = flow_gt.new_zeros(())
    for i, prediction in enumerate(predictions):
        weight = gamma ** (count - i - 1)
        total = total + weight * (mask * (prediction - flow_gt).abs()).mean()
    return total


def loss_mask(flow_gt: torch.Tensor, valid: torch.Tensor, *, max_flow: float = MAX_FLOW):
    """``(B, H, W)`` bool: valid ground truth shorter than ``max_flow`` pixels."""
    magnitude = torch.linalg.vector_norm(flow_gt, dim=1)
    return (valid >= 0.5) & (magnitude < max_flow)


def endpoint_error(flow: torch.Tensor, flow_gt: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` Euclidean distance between two flows ``(B, 2, H, W)``, in pixels."""
    return torch.linalg.vector_norm(flow - flow_gt, dim=1)


def flow_metrics(
    flow: torch.Tensor, flow_gt: torch.Tensor, valid: torch.Tensor, *, max_flow: float = MAX_FLOW
) -> dict[str, float]:
    """EPE and outlier rates over the valid pixels of a batch.

    Returns ``epe`` (mean end-point error, px), ``1px``, ``3px``, ``5px`` (fraction of pixels
    with EPE below that many pixels, as RAFT's training log reports them).
    """
    epe = endpoint_error(flow, flow_gt)[loss_mask(flow_gt, valid, max_flow=max_flow)]
    if epe.numel() == 0:
        return {"epe": float("nan"), "1px": float("nan"), "3px": float("nan"), "5px": float("nan")}
    return {
        "epe": float(epe.mean()),
        "1px": float((epe < 1).float().mean()),
        "3px": float((epe < 3).float().mean()),
        "5px": float((epe < 5).float().mean()),
    }
