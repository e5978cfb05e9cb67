"""Feature and context encoders of RAFT (Teed & Deng, ECCV 2020).

Both encoders map an image ``(B, 3, H, W)`` (values in [-1, 1]) to a feature map at 1/8
resolution ``(B, C_out, H/8, W/8)``. Submodule names follow the official checkpoints
(``conv1``, ``norm1``, ``layer1.0.conv1`` ...) so that released weights load without renaming.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

NormKind = Literal["batch", "instance", "group", "none"]


def make_norm(kind: NormKind, channels: int, *, groups: int = 8) -> nn.Module:
    """The normalisation layers used by the official encoders.

    ``instance`` has no affine parameters and no running statistics (as in the official
    feature encoder), ``batch`` is evaluated with its running statistics in ``eval()`` mode.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(num_groups=max(channels // groups, 1), num_channels=channels)
    if kind == "none":
        return nn.Sequential()
    raise ValueError(f"unknown norm kind {kind!r}; expected batch, instance, group or none")


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (the large encoder's block)."""

    def __init__(self, in_planes: int, planes: int, *, norm: NormKind, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1 = make_norm(norm, planes)
        self.norm2 = make_norm(norm, planes)
        self.downsample: nn.Module | None = None
        if stride != 1:
            # The official code registers this norm twice (as ``norm3`` and inside
            # ``downsample``); keeping both names lets official checkpoints load strictly.
            self.norm3 = make_norm(norm, planes)
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm3
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with a skip connection (the small encoder's block)."""

    def __init__(self, in_planes: int, planes: int, *, norm: NormKind, stride: int = 1) -> None:
        super().__init__()
        mid = planes // 4
        self.conv1 = nn.Conv2d(in_planes, mid, kernel_size=1, padding=0)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, planes, kernel_size=1, padding=0)
        self.relu = nn.ReLU(inplace=True)
        self.norm1 = make_norm(norm, mid)
        self.norm2 = make_norm(norm, mid)
        self.norm3 = make_norm(norm, planes)
        self.downsample: nn.Module | None = None
        if stride != 1:
            self.norm4 = make_norm(norm, planes)
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm4
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        y = self.relu(self.norm3(self.conv3(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class Encoder(nn.Module):
    """A 7x7 stride-2 stem, three stages of two blocks (strides 1, 2, 2) and a 1x1 projection.

    Input ``(B, 3, H, W)`` float in [-1, 1]; output ``(B, output_dim, H/8, W/8)`` (sizes
    rounded the way strided convolutions round: ``ceil`` at each stride-2 step).

    Args:
        output_dim: channels of the output map.
        norm: normalisation kind (``instance`` for the feature encoder, ``batch`` for the
            large context encoder, ``none`` for the small context encoder).
        widths: stem width and the widths of the three stages: ``(64, 64, 96, 128)`` for the
            large encoders, ``(32, 32, 64, 96)`` for the small ones.
        bottleneck: use :class:`BottleneckBlock` (small) instead of :class:`ResidualBlock`.
    """

    def __init__(
        self,
        *,
        output_dim: int,
        norm: NormKind,
        widths: tuple[int, int, int, int] = (64, 64, 96, 128),
        bottleneck: bool = False,
    ) -> None:
        super().__init__()
        stem, w1, w2, w3 = widths
        block = BottleneckBlock if bottleneck else ResidualBlock
        self.norm1 = make_norm(norm, stem)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3)
        self.relu1 = nn.ReLU(inplace=True)
        self.layer1 = self._stage(block, stem, w1, norm, stride=1)
        self.layer2 = self._stage(block, w1, w2, norm, stride=2)
        self.layer3 = self._stage(block, w2, w3, norm, stride=2)
        self.conv2 = nn.Conv2d(w3, output_dim, kernel_size=1)
        self._init_weights()

    @staticmethod
    def _stage(block: type[nn.Module], in_planes: int, planes: int, norm: NormKind, stride: int):
        return nn.Sequential(
            block(in_planes, planes, norm=norm, stride=stride),
            block(planes, planes, norm=norm, stride=1),
        )

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)):
                if m.weight is not None:
                    nn.init.constant_(m.weight, 1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.norm1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.conv2(x)
