"""Feature and context encoders of RAFT (Teed & Deng, ECCV 2020), and the fast convolution path.

Both encoders map an image ``(B, 3, H, W)`` (values in [-1, 1]) to a feature map at 1/8
resolution ``(B, C_out, H/8, W/8)``. Submodule names follow the official checkpoints
(``conv1``, ``norm1``, ``layer1.0.conv1`` ...) so that released weights load without renaming.

Fast kernels (``fast_kernels`` attribute of the modules, on by default, see
:meth:`models.raft.RAFT.set_fast_kernels`): in inference on CPU in float32,

- 3x3 stride-1 convolutions run through PyTorch's bundled NNPACK Winograd kernel
  (``torch._nnpack_spatial_convolution``, F(6x6, 3x3)), one image at a time, where it is the
  faster of the two on this machine for that shape (:mod:`models.kernel_choice` times both on
  first use). On the 2-core AVX2 machines this project started on it is ~2-2.5x faster than
  oneDNN's direct convolution; its float32 rounding error is ~1e-5 relative (oneDNN: ~2e-6),
  which moves RAFT flow by ~1e-4 px. NNPACK is reached through a private PyTorch op, so it is guarded: where
  it is missing (some builds), or raises anything at all (a build that lacks it, a changed
  signature, a refused shape), the public ``F.conv2d`` runs instead; a failure is logged once
  as a warning and NNPACK is not tried again in this process.
- Eval-mode BatchNorm is folded into the preceding convolution's weights (no parameters are
  changed: the folded weights are derived at call time).

With ``fast_kernels = False`` every module computes exactly what the official code computes,
operation for operation.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .kernel_choice import KERNELS, conv_key

logger = logging.getLogger(__name__)

NormKind = Literal["batch", "instance", "group", "none"]

_NNPACK_STATE: dict[str, bool] = {}
_NNPACK_LOCK = threading.Lock()


def _nnpack_ready() -> bool:
    """Whether NNPACK is compiled in and initialised (``_nnpack_available`` initialises it)
    and has not failed in this process."""
    if "ready" not in _NNPACK_STATE:
        available = getattr(torch, "_nnpack_available", None)
        op = getattr(torch, "_nnpack_spatial_convolution", None)
        try:
            ready = available is not None and callable(op) and bool(available())
        except Exception:  # private API: whatever it raises means "not here"
            ready = False
        _NNPACK_STATE["ready"] = ready
    return _NNPACK_STATE["ready"]


def _disable_nnpack(error: Exception) -> None:
    """Stop using NNPACK for the rest of the process; the first failure is logged."""
    with _NNPACK_LOCK:
        first = _NNPACK_STATE.get("ready", True)
        _NNPACK_STATE["ready"] = False
    if first:
        logger.warning(
            "NNPACK convolution failed (%s: %s); using torch's default convolution from now on",
            type(error).__name__,
            error,
        )


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``cpu``, ``cuda``...)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # pragma: no cover - torch < 2.4 has no device argument
        return device_type == "cpu" and torch.is_autocast_cpu_enabled()


def _compiling() -> bool:
    """Whether torch.compile is tracing (NNPACK has no meta kernel, so tracing cannot use it)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())


def winograd_applies(x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int]) -> bool:
    """Whether :func:`conv2d` would run ``x (B, C, H, W) * weight (O, C, kh, kw)`` on NNPACK.

    Only 3x3 kernels with padding 1 (stride 1, no groups), float32 on CPU, no autograd, no
    autocast, not under torch.compile, at least 8 output channels (below that the Winograd
    transforms dominate), a non-empty batch (an empty one would look like an NNPACK failure).
    """
    return (
        weight.shape[-2:] == (3, 3)
        and x.shape[0] > 0
        and tuple(padding) == (1, 1)
        and weight.shape[0] >= 8
        and x.ndim == 4
        and x.shape[1] == weight.shape[1]
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not autocast_enabled("cpu")
        and not _compiling()
        and _nnpack_ready()
    )


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int],
    *,
    fast: bool,
) -> torch.Tensor:
    """Stride-1 convolution ``(B, C, H, W) -> (B, O, H', W')``; with ``fast``, on the 3x3
    shapes NNPACK takes (:func:`winograd_applies`), the faster of NNPACK and PyTorch's default
    on this machine for this shape (:data:`models.kernel_choice.KERNELS`, timed on first use).

    NNPACK runs one image at a time: for a batch PyTorch would switch to NNPACK's training
    entry point, which is no faster than oneDNN here.
    """
    if fast and winograd_applies(x, weight, padding):
        return KERNELS.run(
            conv_key(x, weight),
            {
                "nnpack": lambda: nnpack_conv2d(x, weight, bias, padding),
                "onednn": lambda: F.conv2d(x, weight, bias, padding=padding),
            },
        )
    return F.conv2d(x, weight, bias, padding=padding)


def nnpack_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]
) -> torch.Tensor:
    """NNPACK, or PyTorch's convolution once NNPACK has failed (then for the whole process)."""
    if _nnpack_ready():
        try:
            return _nnpack_conv2d(x.contiguous(), weight.contiguous(), bias, padding)
        except Exception as error:  # a private op: whatever it raises, the public one takes over
            _disable_nnpack(error)
    return F.conv2d(x, weight, bias, padding=padding)


def _nnpack_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]
) -> torch.Tensor:
    """``torch._nnpack_spatial_convolution`` image by image (see :func:`conv2d`)."""
    nnpack = torch._nnpack_spatial_convolution
    if x.shape[0] == 1:
        return nnpack(x, weight, bias, padding)
    return torch.cat([nnpack(x[i : i + 1], weight, bias, padding) for i in range(x.shape[0])])


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor, *, fast: bool) -> torch.Tensor:
    """``norm(conv(x))``; with ``fast``, an eval-mode BatchNorm is folded into the convolution
    (weights derived at call time) and 3x3 stride-1 convolutions go through :func:`conv2d`."""
    if not fast or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return norm(conv(x))
    weight, bias = conv.weight, conv.bias
    folded = isinstance(norm, nn.BatchNorm2d) and not norm.training
    folded = folded and norm.running_var is not None and norm.running_mean is not None
    if folded:
        scale = torch.rsqrt(norm.running_var + norm.eps)  # (O,)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if bias is not None:
            shift = shift + bias * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        weight, bias = weight * scale.view(-1, 1, 1, 1), shift  # (O, C, kh, kw), (O,)
    padding = (int(conv.padding[0]), int(conv.padding[1]))
    if conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1:
        out = conv2d(x, weight, bias, padding, fast=True)
    else:
        out = F.conv2d(x, weight, bias, conv.stride, padding, conv.dilation, conv.groups)
    return out if folded else norm(out)


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


def _add_skip(
    block: ResidualBlock | BottleneckBlock, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """``relu(y + x)`` for a block's input ``x`` (through its ``downsample`` branch, if any)
    and residual ``y``; in place on ``y`` in fast inference."""
    fast = block.fast_kernels
    if block.downsample is not None:
        x = conv_norm(block.downsample[0], block.downsample[1], x, fast=fast)
    if fast and not torch.is_grad_enabled():
        return block.relu(y.add_(x))
    return block.relu(x + y)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (the large encoder's block)."""

    def __init__(self, in_planes: int, planes: int, *, norm: NormKind, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1 = make_norm(norm, planes)
        self.norm2 = make_norm(norm, planes)
        self.fast_kernels = True
        self.downsample: nn.Sequential | None = None
        if stride != 1:
            # The official code registers this norm twice (as ``norm3`` and inside
            # ``downsample``); keeping both names lets official checkpoints load strictly.
            self.norm3 = make_norm(norm, planes)
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm3
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.fast_kernels
        y = self.relu(conv_norm(self.conv1, self.norm1, x, fast=fast))
        y = self.relu(conv_norm(self.conv2, self.norm2, y, fast=fast))
        return _add_skip(self, x, y)


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
        self.fast_kernels = True
        self.downsample: nn.Sequential | None = None
        if stride != 1:
            self.norm4 = make_norm(norm, planes)
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm4
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.fast_kernels
        y = self.relu(conv_norm(self.conv1, self.norm1, x, fast=fast))
        y = self.relu(conv_norm(self.conv2, self.norm2, y, fast=fast))
        y = self.relu(conv_norm(self.conv3, self.norm3, y, fast=fast))
        return _add_skip(self, x, y)


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
        self.fast_kernels = True
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
        x = self.relu1(conv_norm(self.conv1, self.norm1, x, fast=self.fast_kernels))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.conv2(x)
