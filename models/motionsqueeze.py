"""MotionSqueeze: learnable motion features from consecutive backbone feature maps.

A re-implementation of the MotionSqueeze (MS) module of Kwon et al., "MotionSqueeze: Neural
Motion Feature Learning for Video Understanding" (ECCV 2020), following the official
``resnet_TSM.py`` of arunos728/MotionSqueeze (the block that sits between ``layer2`` and
``layer3`` of a ResNet-TSM backbone) operation by operation, with one deliberate difference:
the local correlation is computed directly for the ``P x P`` displacement window instead of
through the all-pairs ``(H*W) x (H*W)`` matrix product of the official ``Matching_layer_mm``,
so memory grows linearly, not quadratically, with the number of positions. The arithmetic is
kept the same (see :func:`local_correlation`): fed the official reduced features, the
displacement, confidence and refined outputs reproduce the parity fixture bit for bit on CPU.

Pipeline of :class:`MotionSqueeze` for a clip of ``T`` segments (TSN order, index ``n*T + t``):

1. ``chnl_reduction``: 1x1 conv ``C -> reduced_channels`` (no bias), BatchNorm, ReLU.
2. For every consecutive pair ``(t, t+1)``: :func:`local_correlation` (channel-wise L2
   normalisation, dot products over a ``P x P`` window, zero outside the image, ReLU).
3. :func:`soft_argmax_displacement`: confidence = best matching score; the scores are
   multiplied by an (unnormalised) Gaussian centred at the arg-max displacement, scaled by a
   temperature and turned into a distribution over the window by a softmax; its mean is the
   displacement, in units of the window radius.
4. ``flow_refinement``: ``[displacement, confidence]`` of the last pair is repeated so there is
   one 3-channel motion map per segment; four depthwise-separable conv stages map it to ``C``
   channels, which are added to the input features.

Everything here is plain PyTorch (differentiable, device- and dtype-agnostic, no I/O).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "MOTIONSQUEEZE_KEY_PREFIXES",
    "OFFICIAL_WINDOW",
    "FlowRefinement",
    "MotionSqueeze",
    "MotionSqueezeOutput",
    "SoftArgmaxWindow",
    "l2_normalize_channels",
    "local_correlation",
    "soft_argmax_displacement",
    "strip_training_prefix",
]

#: Epsilon added to the squared L2 norm before the square root (official value).
L2_NORM_EPS = 1e-6

#: Top-level parameter groups of the module, as named in the official ResNet-TSM.
MOTIONSQUEEZE_KEY_PREFIXES: tuple[str, ...] = ("chnl_reduction.", "flow_refinement.")

_TRAINING_PREFIXES: tuple[str, ...] = ("module.", "base_model.")


class SoftArgmaxWindow(NamedTuple):
    """The matching window of :func:`local_correlation` + :func:`soft_argmax_displacement`,
    with the official MotionSqueeze values as defaults (displacements up to 7 cells per step).

    Attributes:
        patch_size: odd window side ``P >= 3`` in cells.
        dilation: window spacing in cells.
        sigma: Gaussian width around the arg-max, in window cells.
        temperature: softmax inverse temperature.
    """

    patch_size: int = 15
    dilation: int = 1
    sigma: float = 5.0
    temperature: float = 100.0


OFFICIAL_WINDOW = SoftArgmaxWindow()
"""MotionSqueeze's official matching window (patch 15, no dilation, sigma 5, temperature 100)."""


class MotionSqueezeOutput(NamedTuple):
    """Outputs of :meth:`MotionSqueeze.forward` for ``N`` clips of ``T`` segments.

    Attributes:
        displacement: ``(N*(T-1), 2, H, W)`` soft-argmax displacement from segment ``t`` to
            ``t+1`` (pair index ``n*(T-1) + t``); channel 0 = x (right), 1 = y (down), in
            normalised units: pixels of the feature map divided by
            ``(patch_size - 1) / 2 * patch_dilation`` (range ``[-1, 1]``).
        confidence: ``(N*(T-1), 1, H, W)`` best (ReLU'd) matching score of each position,
            a cosine similarity in ``[0, 1]``.
        refined: ``(N*T, C, H, W)`` input features plus the refined motion features
            (what the official network feeds into ``layer3``).
        reduced: ``(N*T, reduced_channels, H, W)`` output of the channel reduction (the
            features that were matched).
    """

    displacement: Tensor
    confidence: Tensor
    refined: Tensor
    reduced: Tensor


def _check_window(patch_size: int, dilation: int) -> None:
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd integer, got {patch_size}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")


def l2_normalize_channels(x: Tensor, eps: float = L2_NORM_EPS) -> Tensor:
    """Divide every feature vector by its L2 norm over the channel axis.

    Computes ``x / (sum_c x^2 + eps) ** 0.5`` with the same operations as the official
    matching layer (the epsilon sits inside the square root, so an all-zero vector stays
    zero).

    Args:
        x: ``(B, C, H, W)`` features, any units.
        eps: added to the squared norm before the square root.

    Returns:
        ``(B, C, H, W)`` contiguous tensor of (near) unit-norm vectors along dim 1.
    """
    if x.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) features, got shape {tuple(x.shape)}")
    x = x.contiguous()
    norm = (x.pow(2).sum(dim=1, keepdim=True) + eps).pow(0.5)  # (B, 1, H, W)
    return x / norm


def local_correlation(
    feature1: Tensor,
    feature2: Tensor,
    patch_size: int = 15,
    dilation: int = 1,
) -> Tensor:
    """Cosine similarity of each position of ``feature1`` with a window of ``feature2``.

    For every position ``p = (y, x)`` and displacement ``d = (dy * dilation, dx * dilation)``
    with ``dy, dx in [-r, r]`` (``r = (patch_size - 1) // 2``) the output holds
    ``relu(n1(p) . n2(p + d))`` where ``n1``/``n2`` are the inputs L2-normalised over
    channels (:func:`l2_normalize_channels`). Displacements that leave the image give 0.
    The displacement index along dim 1 is ``(dy + r) * patch_size + (dx + r)`` (row-major
    over the window, y first), the official ``Matching_layer`` convention.

    Only the ``patch_size**2`` window is evaluated, never the ``(H*W) x (H*W)`` all-pairs
    matrix: the window of every position is a strided view of a zero-padded copy of ``n2``,
    and the dot products are accumulated channel by channel with fused multiply-adds
    (``addcmul_``). Memory is ``O(B * patch_size**2 * H * W)``. The per-element arithmetic
    (channels in order, one fused multiply-add each) is the one a BLAS matrix product uses for
    moderate ``C``, so on CPU the scores reproduce the official ``Matching_layer_mm`` bit for
    bit (checked for ``C <= 192``) and exact ties come out exactly tied, as in the official
    code. Works on any pair of feature maps (e.g. RAFT's feature-encoder outputs).

    Args:
        feature1: ``(B, C, H, W)`` source features (time ``t``).
        feature2: ``(B, C, H, W)`` target features (time ``t + 1``).
        patch_size: odd window side ``P`` in displacement steps.
        dilation: spacing of the window in pixels.

    Returns:
        ``(B, P*P, H, W)`` non-negative matching scores (contiguous), dtype of the inputs.
    """
    _check_window(patch_size, dilation)
    if feature1.dim() != 4 or feature1.shape != feature2.shape:
        raise ValueError(
            "local_correlation expects two (B, C, H, W) tensors of the same shape, got "
            f"{tuple(feature1.shape)} and {tuple(feature2.shape)}"
        )
    batch, channels, height, width = feature1.shape
    radius = (patch_size - 1) // 2
    reach = radius * dilation  # largest displacement in pixels

    norm1 = l2_normalize_channels(feature1)  # (B, C, H, W)
    norm2 = l2_normalize_channels(feature2)  # (B, C, H, W)
    # zeros outside the image make every out-of-range dot product exactly 0
    padded2 = F.pad(norm2, (reach, reach, reach, reach))  # (B, C, H + 2*reach, W + 2*reach)
    # windows[b, c, iy, ix, y, x] = padded2[b, c, y + iy * dilation, x + ix * dilation]
    windows = padded2.unfold(2, height, dilation)  # (B, C, P, W + 2*reach, H) view
    windows = windows.unfold(3, width, dilation)  # (B, C, P, P, H, W) view, no copy

    corr = norm1.new_zeros(batch, patch_size, patch_size, height, width)  # (B, P, P, H, W)
    for c in range(channels):
        source = norm1[:, c].view(batch, 1, 1, height, width)  # (B, 1, 1, H, W)
        corr.addcmul_(source, windows[:, c])  # += n1[c](p) * n2[c](p + d)
    corr = corr.view(batch, patch_size * patch_size, height, width)  # (B, P*P, H, W)
    return corr.relu_()


def soft_argmax_displacement(
    corr: Tensor,
    patch_size: int = 15,
    dilation: int = 1,
    sigma: float = 5.0,
    temperature: float = 100.0,
) -> tuple[Tensor, Tensor]:
    """Kernel soft-argmax of a local correlation volume (official ``match_to_flow_soft``, k=1).

    Per position: the confidence is the largest score over the window; the scores are
    multiplied by ``exp(-((i - ix*)^2 + (j - iy*)^2) / (2 sigma^2))`` (unnormalised, in window
    cells, centred at the arg-max cell ``(ix*, iy*)``; on exact ties the first index in
    ``(dy, dx)`` row-major order wins, as ``torch.max`` does in the official code), multiplied
    by ``temperature`` and passed through a softmax over the window. The displacement is the
    mean of that distribution, in pixels, divided by ``(patch_size - 1) / 2 * dilation``.

    Args:
        corr: ``(B, P*P, H, W)`` matching scores with displacement index
            ``(dy + r) * P + (dx + r)`` (see :func:`local_correlation`).
        patch_size: odd window side ``P`` (>= 3).
        dilation: window spacing in pixels used to build ``corr``.
        sigma: Gaussian width in window cells.
        temperature: softmax inverse temperature.

    Returns:
        ``displacement`` ``(B, 2, H, W)`` (channel 0 = x, 1 = y, normalised units, range
        ``[-1, 1]``) and ``confidence`` ``(B, 1, H, W)`` (max score, same units as ``corr``).
    """
    _check_window(patch_size, dilation)
    if patch_size < 3:
        raise ValueError(f"soft_argmax_displacement needs patch_size >= 3, got {patch_size}")
    if corr.dim() != 4 or corr.shape[1] != patch_size * patch_size:
        raise ValueError(
            f"expected corr of shape (B, {patch_size * patch_size}, H, W) for "
            f"patch_size={patch_size}, got {tuple(corr.shape)}"
        )
    batch, _, height, width = corr.shape
    radius = (patch_size - 1) // 2

    # max over dim 1 returns the first maximal index on ties (same as the official code)
    confidence, best = corr.max(dim=1, keepdim=True)  # (B, 1, H, W) each
    best_y = torch.div(best, patch_size, rounding_mode="floor").to(corr.dtype)  # (B, 1, H, W)
    best_x = (best % patch_size).to(corr.dtype)  # (B, 1, H, W)
    best_y = best_y.view(batch, 1, 1, height, width)  # (B, 1, 1, H, W)
    best_x = best_x.view(batch, 1, 1, height, width)  # (B, 1, 1, H, W)

    cells = torch.arange(patch_size, dtype=corr.dtype, device=corr.device)  # (P,)
    cells_x = cells.view(1, 1, patch_size, 1, 1)  # window column (dx + r)
    cells_y = cells.view(1, patch_size, 1, 1, 1)  # window row (dy + r)
    # in place on the one (B, P, P, H, W) buffer: the same operations in the same order as
    # exp(-(dx^2 + dy^2) / (2 sigma^2)) * corr * temperature, a third less time
    gauss = (cells_x - best_x) ** 2 + (cells_y - best_y) ** 2  # (B, P, P, H, W)
    gauss.neg_().div_(2 * sigma**2).exp_()
    gauss = gauss.view(batch, patch_size * patch_size, height, width)  # (B, P*P, H, W)

    logits = gauss.mul_(corr).mul_(temperature)  # (B, P*P, H, W)
    prob = torch.softmax(logits, dim=1)  # (B, P*P, H, W)
    prob = prob.view(batch, patch_size, patch_size, height, width)  # (B, P_dy, P_dx, H, W)

    offsets = (cells - radius) * dilation  # (P,) displacement of each cell in pixels
    offsets = offsets.view(1, patch_size, 1, 1)
    prob_x = prob.sum(dim=1)  # (B, P_dx, H, W) marginal over dy
    prob_y = prob.sum(dim=2)  # (B, P_dy, H, W) marginal over dx
    flow_x = (prob_x * offsets).sum(dim=1, keepdim=True)  # (B, 1, H, W) pixels
    flow_y = (prob_y * offsets).sum(dim=1, keepdim=True)  # (B, 1, H, W) pixels
    displacement = torch.cat([flow_x, flow_y], dim=1) / float(radius * dilation)  # (B, 2, H, W)
    return displacement, confidence


def strip_training_prefix(state_dict: Mapping[str, object]) -> dict[str, Tensor]:
    """Extract the MotionSqueeze weights from an official training checkpoint.

    The official TSN wrapper stores the backbone as ``base_model`` and training wraps it in
    ``DataParallel``, so the MS keys look like ``module.base_model.chnl_reduction.0.weight``.
    This removes a leading ``module.`` and then a leading ``base_model.`` (each optional) and
    keeps only the keys under ``chnl_reduction.`` and ``flow_refinement.``, ready for
    ``MotionSqueeze.load_state_dict(..., strict=True)``. A whole checkpoint dict with a
    ``"state_dict"`` entry (the usual TSN/TSM checkpoint layout) is accepted too.

    Args:
        state_dict: parameter name -> tensor (or a checkpoint holding one under
            ``"state_dict"``).

    Returns:
        A new ordered dict with the stripped MotionSqueeze keys (tensors are not copied).

    Raises:
        ValueError: if no MotionSqueeze key is found.
    """
    nested = state_dict.get("state_dict")
    if isinstance(nested, Mapping):
        state_dict = nested
    kept: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        name = key
        for prefix in _TRAINING_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        if name.startswith(MOTIONSQUEEZE_KEY_PREFIXES) and isinstance(value, Tensor):
            kept[name] = value
    if not kept:
        sample = list(state_dict)[:5]
        raise ValueError(
            f"no MotionSqueeze keys ({', '.join(MOTIONSQUEEZE_KEY_PREFIXES)}) found in a state "
            f"dict of {len(state_dict)} keys; first keys: {sample}"
        )
    logger.debug("kept %d of %d keys as MotionSqueeze weights", len(kept), len(state_dict))
    return kept


def _separable_stage(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Depthwise ``k x k`` conv, BN, ReLU, pointwise 1x1 conv, BN, ReLU (no conv biases).

    Indices 0/1/3/4 hold the parameters, matching the official ``conv{1..4}.{0,1,3,4}`` keys.
    """
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size=kernel_size,
            padding=kernel_size // 2,
            groups=in_channels,
            bias=False,
        ),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class FlowRefinement(nn.Module):
    """Official ``Flow_refinement`` conv stack: motion maps -> backbone-width features.

    Four depthwise-separable stages ``3 -> c1 -> c2 -> c3 -> out_channels`` (depthwise
    kernels 7, 3, 3, 3; each stage conv/BN/ReLU/conv/BN/ReLU). The temporal repetition and the
    residual addition live in :class:`MotionSqueeze`.

    Args:
        out_channels: channels of the output (= backbone width ``C``).
        hidden_channels: ``(c1, c2, c3)``, officially ``(16, 32, 64)``.
        in_channels: motion channels (2 displacement + 1 confidence).
    """

    def __init__(
        self,
        out_channels: int,
        hidden_channels: Sequence[int] = (16, 32, 64),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(hidden_channels) != 3:
            raise ValueError(f"hidden_channels must have 3 entries, got {tuple(hidden_channels)}")
        c1, c2, c3 = (int(c) for c in hidden_channels)
        self.conv1 = _separable_stage(in_channels, c1, kernel_size=7)
        self.conv2 = _separable_stage(c1, c2, kernel_size=3)
        self.conv3 = _separable_stage(c2, c3, kernel_size=3)
        self.conv4 = _separable_stage(c3, out_channels, kernel_size=3)

    def forward(self, motion: Tensor) -> Tensor:
        """Map ``(B, in_channels, H, W)`` motion maps to ``(B, out_channels, H, W)`` (>= 0)."""
        x = self.conv1(motion)  # (B, c1, H, W)
        x = self.conv2(x)  # (B, c2, H, W)
        x = self.conv3(x)  # (B, c3, H, W)
        return self.conv4(x)  # (B, out_channels, H, W)


class MotionSqueeze(nn.Module):
    """The MotionSqueeze module (official defaults: ResNet-TSM after ``layer2``).

    Args:
        in_channels: backbone width ``C`` of the input features (512 for ResNet-50 layer2,
            128 for ResNet-18).
        num_segments: segments ``T`` per clip; the batch is ``N*T`` in TSN order.
        reduced_channels: width of the matched features after the 1x1 reduction.
        patch_size: odd side ``P`` of the displacement window.
        patch_dilation: window spacing in feature pixels.
        sigma: width of the Gaussian around the arg-max, in window cells.
        temperature: softmax inverse temperature of the soft-argmax.
        refinement_channels: hidden widths ``(c1, c2, c3)`` of the refinement stack.

    Submodule names follow the official ``ResNet`` (``chnl_reduction.{0,1}``,
    ``flow_refinement.conv{1..4}.{0,1,3,4}``), so the official weights load with
    ``load_state_dict`` (after :func:`strip_training_prefix` for a training checkpoint).
    Call ``eval()`` to use the BatchNorm running statistics.
    """

    def __init__(
        self,
        in_channels: int,
        num_segments: int,
        reduced_channels: int = 64,
        patch_size: int = 15,
        patch_dilation: int = 1,
        sigma: float = 5.0,
        temperature: float = 100.0,
        refinement_channels: Sequence[int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if num_segments < 2:
            raise ValueError(f"num_segments must be >= 2 (pairs of segments), got {num_segments}")
        _check_window(patch_size, patch_dilation)
        if patch_size < 3:
            raise ValueError(f"patch_size must be >= 3, got {patch_size}")
        self.in_channels = int(in_channels)
        self.num_segments = int(num_segments)
        self.reduced_channels = int(reduced_channels)
        self.patch_size = int(patch_size)
        self.patch_dilation = int(patch_dilation)
        self.sigma = float(sigma)
        self.temperature = float(temperature)

        self.chnl_reduction = nn.Sequential(
            nn.Conv2d(self.in_channels, self.reduced_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(self.reduced_channels),
            nn.ReLU(inplace=True),
        )
        self.flow_refinement = FlowRefinement(self.in_channels, refinement_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: Kaiming-normal (fan_out, ReLU) convs, BatchNorm weight 1 / bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_segments={self.num_segments}, "
            f"reduced_channels={self.reduced_channels}, patch_size={self.patch_size}, "
            f"patch_dilation={self.patch_dilation}, sigma={self.sigma}, "
            f"temperature={self.temperature}"
        )

    def forward(self, features: Tensor) -> MotionSqueezeOutput:
        """Compute motion features for ``N`` clips.

        Args:
            features: ``(N*T, C, H, W)`` backbone features in TSN order (index ``n*T + t``).

        Returns:
            :class:`MotionSqueezeOutput` (displacement, confidence, refined, reduced).
        """
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"expected features of shape (N*T, {self.in_channels}, H, W), "
                f"got {tuple(features.shape)}"
            )
        batch, _, height, width = features.shape
        steps = self.num_segments
        if batch == 0 or batch % steps != 0:
            raise ValueError(
                f"batch {batch} of features {tuple(features.shape)} is not a positive multiple "
                f"of num_segments={steps}"
            )
        clips = batch // steps

        reduced = self.chnl_reduction(features)  # (N*T, R, H, W)
        # (N*T, R, H, W) -> (N, T, R, H, W)
        seq = reduced.reshape(clips, steps, self.reduced_channels, height, width)
        pair_shape = (clips * (steps - 1), self.reduced_channels, height, width)
        first = seq[:, :-1].reshape(pair_shape)  # (N*(T-1), R, H, W), index n*(T-1) + t
        second = seq[:, 1:].reshape(pair_shape)  # (N*(T-1), R, H, W), segment t + 1

        corr = local_correlation(first, second, self.patch_size, self.patch_dilation)
        displacement, confidence = soft_argmax_displacement(
            corr, self.patch_size, self.patch_dilation, self.sigma, self.temperature
        )  # (N*(T-1), 2, H, W), (N*(T-1), 1, H, W)

        motion = torch.cat([displacement, confidence], dim=1)  # (N*(T-1), 3, H, W)
        motion = motion.view(clips, steps - 1, 3, height, width)  # (N, T-1, 3, H, W)
        motion = torch.cat([motion, motion[:, -1:]], dim=1)  # (N, T, 3, H, W) last pair twice
        motion = motion.view(batch, 3, height, width)  # (N*T, 3, H, W)
        refined = features + self.flow_refinement(motion)  # (N*T, C, H, W)
        return MotionSqueezeOutput(
            displacement=displacement, confidence=confidence, refined=refined, reduced=reduced
        )
