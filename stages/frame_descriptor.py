"""Per-frame feature maps for MotionSqueeze when the flow backend has no encoder (OpenCV DIS).

:func:`frame_descriptor` builds, from the RGB frames alone, maps on the same 1/8 grid as
RAFT's feature encoder, so that :func:`stages.motionsqueeze_maps.motionsqueeze_maps` can
match them the same way.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
_DESCRIPTOR_STD_FLOOR = 1e-4


def _frame_base_channels(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(5, height, width)`` float32 standardised R, G, B, d(luma)/dx, d(luma)/dy of a frame.

    The frame is area-averaged to ``height x width`` (values in ``[0, 1]``); luminance is
    BT.601 of the averaged RGB; derivatives are 3x3 Sobel / 8 (per grid cell, mirrored
    border); every channel is then shifted to zero mean and divided by its standard deviation
    (floored at 1e-4) over the frame.
    """
    small = cv2.resize(
        frame.astype(np.float32) * np.float32(1.0 / 255.0),
        (width, height),
        interpolation=cv2.INTER_AREA,
    ).reshape(height, width, 3)  # (h, w, 3) in [0, 1]
    luma = np.ascontiguousarray(small @ _LUMA_WEIGHTS)  # (h, w)
    grad_x = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT_101) / 8
    grad_y = cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT_101) / 8
    channels = np.stack([small[..., 0], small[..., 1], small[..., 2], grad_x, grad_y])
    mean = channels.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(channels.std(axis=(1, 2), keepdims=True), _DESCRIPTOR_STD_FLOOR)
    return ((channels - mean) / std).astype(np.float32)  # (5, h, w)


def frame_descriptor(
    frames: npt.NDArray[np.uint8],
    stride: int = 8,
    context: int = 3,
) -> Tensor:
    """Per-frame feature maps for MotionSqueeze when no network features exist (DIS backend).

    Per frame: the RGB frame is area-averaged onto a grid of ``ceil(H / stride) x
    ceil(W / stride)`` cells (the shape of RAFT's encoder map for ``stride = 8``; a cell is
    ``H / h`` by ``W / w`` frame pixels, exactly ``stride`` when it divides the size); five
    base channels are formed: R, G, B and the horizontal and vertical luminance derivatives
    (3x3 Sobel on the grid), each standardised over the frame (zero mean, unit variance: a
    global brightness change does not move the descriptor, and cosine similarity, which
    :func:`~stages.motionsqueeze_maps.motionsqueeze_maps` uses, becomes a normalised cross-correlation). Then the
    ``context x context`` neighbourhood of every cell is stacked (zero outside the frame), so a
    cell is matched by its local pattern, not by five numbers alone.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        stride: frame pixels per grid cell (>= 1).
        context: odd neighbourhood side in cells (1 = no neighbourhood).

    Returns:
        ``(T, 5 * context**2, ceil(H / stride), ceil(W / stride))`` float32 CPU tensor. Channel
        ``c * context**2 + i * context + j`` is base channel ``c`` (R, G, B, dx, dy) at offset
        ``(i - context // 2, j - context // 2)`` (rows, columns); values are unitless
        (standard deviations), roughly in ``[-5, 5]``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if context < 1 or context % 2 == 0:
        raise ValueError(f"context must be a positive odd integer, got {context}")
    count, height, width, _ = frames.shape
    grid_h, grid_w = math.ceil(height / stride), math.ceil(width / stride)
    base = np.empty((count, 5, grid_h, grid_w), dtype=np.float32)
    for index in range(count):
        base[index] = _frame_base_channels(frames[index], grid_h, grid_w)
    descriptor = torch.from_numpy(base)  # (T, 5, h, w)
    if context > 1:
        stacked = F.unfold(descriptor, context, padding=context // 2)  # (T, 5*k*k, h*w)
        descriptor = stacked.view(count, 5 * context * context, grid_h, grid_w)
    return descriptor.contiguous()
