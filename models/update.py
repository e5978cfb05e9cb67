"""The recurrent update operator of RAFT, RAFT-small and GMA.

Every tensor here lives on the 1/8-resolution grid ``(B, C, h, w)``. ``flow`` is
``(B, 2, h, w)`` in 1/8-resolution pixels and ``corr`` is the correlation lookup
``(B, levels * (2r+1)^2, h, w)``. Submodule names follow the official checkpoints.

How the GRU is evaluated (``fast_kernels``, the default): the GRU input is
``x = cat([inp, motion])`` (GMA: ``cat([inp, motion, global_motion])``) where the context
features ``inp`` do not change across the refinement iterations of a pair. A convolution is
linear in its input channels, so every gate convolution splits into a hidden-state part, a
context part and a motion part, each with a slice of the official weight:
``conv(cat([h, inp, m])) = conv_h(h) + conv_inp(inp) + conv_m(m)``. :meth:`UpdateBlock.prepare`
computes the context parts (plus the biases) once per pair, and each iteration convolves only
``h`` (z and r fused into one convolution), ``r * h`` and the motion features (the motion part
of z, r and q fused into one convolution). That removes a third of the GRU's multiply-adds and
every per-iteration concatenation. The derived weights are slices of the registered parameters
taken at call time, so the state dict keeps the official names and checkpoints load strictly.
On CPU in float32 inference, the separable GRU's 1x5 and 5x1 gate convolutions additionally
run as F(4, 5) Winograd convolutions along the kernel's axis (:mod:`models.winograd`): 8
batched matrix products per 4 outputs instead of 20 taps, 2.5x fewer multiply-adds, float32
error ~2x that of a direct convolution (~1e-6 on the hidden state).

With ``fast_kernels = False`` the block computes exactly the official sequence of operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import autocast_enabled, conv2d
from .gma import Aggregate
from .winograd import Winograd1d, WinogradGates


def _pad(conv: nn.Conv2d) -> tuple[int, int]:
    return (int(conv.padding[0]), int(conv.padding[1]))


def _conv(conv: nn.Conv2d, x: torch.Tensor, *, fast: bool) -> torch.Tensor:
    """``conv(x)`` for a stride-1 convolution, through :func:`models.encoders.conv2d`."""
    if not fast:
        return conv(x)
    return conv2d(x, conv.weight, conv.bias, _pad(conv), fast=True)


def _cpu_inference(x: torch.Tensor) -> bool:
    """Float32 CPU tensor, no autograd, no autocast: where the Winograd GRU path runs."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not (torch.is_grad_enabled() and x.requires_grad)
        and not autocast_enabled("cpu")
    )


class FlowHead(nn.Module):
    """Two 3x3 convolutions predicting the flow update ``(B, 2, h, w)``."""

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fast_kernels = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.fast_kernels
        hidden = self.relu(_conv(self.conv1, x, fast=fast))
        if fast and _cpu_inference(hidden):
            return _few_outputs_conv3x3(hidden, self.conv2.weight, self.conv2.bias)
        return _conv(self.conv2, hidden, fast=fast)


def _few_outputs_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A padded 3x3 convolution with few outputs (the flow head's 256 -> 2) as one matrix
    product and nine shifted sums.

    ``x (B, C, h, w)``, ``weight (O, C, 3, 3)`` -> ``(B, O, h, w)``. Each tap's contribution
    ``W[:, :, ky, kx] @ x`` is one row block of a single ``(9*O, C) @ (C, h*w)`` product; the
    output sums the nine maps shifted by their tap. oneDNN runs this 2-output convolution far
    below its usual speed (6.6 ms per call on one core at 55x128 for 65 MFLOP).
    """
    b, c, h, w = x.shape
    o = weight.shape[0]
    taps = weight.permute(2, 3, 0, 1).reshape(9 * o, c)  # rows: (ky, kx, out)
    maps = torch.matmul(taps, x.reshape(b, c, h * w)).view(b, 9 * o, h, w)
    maps = F.pad(maps, (1, 1, 1, 1)).view(b, 3, 3, o, h + 2, w + 2)
    out = bias.view(1, o, 1, 1).expand(b, o, h, w).clone()
    for ky in range(3):
        for kx in range(3):
            out += maps[:, ky, kx, :, ky : ky + h, kx : kx + w]
    return out


def _gru_step(
    h: torch.Tensor, x: torch.Tensor, convz: nn.Module, convr: nn.Module, convq: nn.Module
) -> torch.Tensor:
    """The official GRU step on ``h (B, Ch, h, w)`` and ``x (B, Cx, h, w)``."""
    hx = torch.cat([h, x], dim=1)
    z = torch.sigmoid(convz(hx))
    r = torch.sigmoid(convr(hx))
    q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))
    return (1 - z) * h + z * q


@dataclass(frozen=True)
class PreparedGates:
    """One gate group (convz, convr, convq) of a GRU, split for the per-iteration step.

    Attributes:
        weight_h_zr: ``(2*Ch, Ch, kh, kw)`` hidden-state part of z and r (stacked z, r).
        weight_h_q: ``(Ch, Ch, kh, kw)`` hidden-state part of q (applied to ``r * h``).
        weight_m: ``(3*Ch, Cm, kh, kw)`` motion part of z, r and q (stacked z, r, q).
        constant: ``(B, 3*Ch, h, w)`` context part of z, r and q plus their biases.
        padding: the gate convolutions' padding.
        winograd: the same gates in the Winograd domain, when that path applies (then the
            step uses only this field).
    """

    weight_h_zr: torch.Tensor
    weight_h_q: torch.Tensor
    weight_m: torch.Tensor
    constant: torch.Tensor
    padding: tuple[int, int]
    winograd: WinogradGates | None = None


class _GRU(nn.Module):
    """Shared logic of :class:`ConvGRU` and :class:`SepConvGRU`.

    The GRU input is ``x = cat([inp, motion])`` with ``context_dim`` channels of context
    features first; :meth:`prepare` / :meth:`step` evaluate it with the context part hoisted.
    """

    hidden_dim: int
    context_dim: int
    #: Whether the gates are 5-tap 1-D convolutions that :class:`Winograd1d` can run.
    separable: bool = False

    def gate_groups(self) -> list[tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]]:
        """``(convz, convr, convq)`` of each GRU pass, in order."""
        raise NotImplementedError

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The official GRU: ``h (B, Ch, h, w)``, ``x (B, Cx, h, w)`` -> new ``h``."""
        for convz, convr, convq in self.gate_groups():
            h = _gru_step(h, x, convz, convr, convq)
        return h

    def prepare(self, inp: torch.Tensor, *, fast: bool = True) -> list[PreparedGates]:
        """Per-pair part of the gates from the context features ``inp (B, context_dim, h, w)``."""
        ch, ci = self.hidden_dim, self.context_dim
        winograd = fast and self.separable and _cpu_inference(inp)
        prepared = []
        for convz, convr, convq in self.gate_groups():
            gates = (convz, convr, convq)
            padding = _pad(convz)
            weight_inp = torch.cat([c.weight[:, ch : ch + ci] for c in gates])  # (3Ch, Ci, k)
            bias = torch.cat([c.bias for c in gates])  # (3Ch,)
            constant = conv2d(inp, weight_inp, bias, padding, fast=fast)  # (B, 3Ch, h, w)
            weight_h_zr = torch.cat([convz.weight[:, :ch], convr.weight[:, :ch]])
            weight_m = torch.cat([c.weight[:, ch + ci :] for c in gates])
            wino = None
            if winograd:
                transform = Winograd1d(3 if padding[1] else 2, inp.device)
                weight_zr = torch.cat([weight_h_zr, weight_m[: 2 * ch]], dim=1)  # over [h, m]
                wino = WinogradGates(
                    transform=transform,
                    zr=transform.weights(weight_zr),
                    q_m=transform.weights(weight_m[2 * ch :]),
                    q_h=transform.weights(convq.weight[:, :ch]),
                    constant_zr=transform.phase(constant[:, : 2 * ch]),
                    constant_q=transform.phase(constant[:, 2 * ch :]),
                )
            prepared.append(
                PreparedGates(
                    weight_h_zr=weight_h_zr,
                    weight_h_q=convq.weight[:, :ch].contiguous(),
                    weight_m=weight_m,
                    constant=constant,
                    padding=padding,
                    winograd=wino,
                )
            )
        return prepared

    def step(
        self, h: torch.Tensor, motion: torch.Tensor, prepared: list[PreparedGates], *, fast: bool
    ) -> torch.Tensor:
        """One GRU update from ``h (B, Ch, h, w)`` and the non-context input ``motion``
        ``(B, Cx - context_dim, h, w)``, with the context part from :meth:`prepare`."""
        ch = self.hidden_dim
        for gates in prepared:
            if gates.winograd is not None:
                h = self._winograd_pass(h, motion, gates.winograd)
                continue
            xm = conv2d(motion, gates.weight_m, None, gates.padding, fast=fast)
            xm = xm.add_(gates.constant)  # (B, 3Ch, h, w): x part of z, r, q
            zr = conv2d(h, gates.weight_h_zr, None, gates.padding, fast=fast)
            zr = torch.sigmoid_(zr.add_(xm[:, : 2 * ch]))
            z, r = zr[:, :ch], zr[:, ch:]
            q = conv2d(r * h, gates.weight_h_q, None, gates.padding, fast=fast)
            q = torch.tanh_(q.add_(xm[:, 2 * ch :]))
            h = torch.lerp(h, q, z)  # (1 - z) * h + z * q
        return h

    def _winograd_pass(
        self, h: torch.Tensor, motion: torch.Tensor, gates: WinogradGates
    ) -> torch.Tensor:
        ch = self.hidden_dim
        size = (h.shape[0], h.shape[2], h.shape[3])
        wino = gates.transform
        v = wino.transform(torch.cat([h, motion], dim=1))  # (8, Ch + Cm, B*S)
        zr = wino.untransform(torch.bmm(gates.zr, v), size, gates.constant_zr)
        zr = torch.sigmoid_(zr)  # (B, 2Ch, h, w)
        z, r = zr[:, :ch], zr[:, ch:]
        q = torch.bmm(gates.q_m, v[:, ch:])  # (8, Ch, B*S)
        q = q.baddbmm_(gates.q_h, wino.transform(r * h))
        q = torch.tanh_(wino.untransform(q, size, gates.constant_q))
        return torch.lerp(h, q, z)  # (1 - z) * h + z * q


class ConvGRU(_GRU):
    """A convolutional GRU with 3x3 gates (RAFT-small)."""

    def __init__(self, hidden_dim: int, input_dim: int, *, context_dim: int = 0) -> None:
        super().__init__()
        self.hidden_dim, self.context_dim = hidden_dim, context_dim
        self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)

    def gate_groups(self) -> list[tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]]:
        return [(self.convz, self.convr, self.convq)]


class SepConvGRU(_GRU):
    """A GRU applied twice: with 1x5 (horizontal) then 5x1 (vertical) gates (RAFT, GMA)."""

    separable = True

    def __init__(self, hidden_dim: int, input_dim: int, *, context_dim: int = 0) -> None:
        super().__init__()
        self.hidden_dim, self.context_dim = hidden_dim, context_dim
        channels = hidden_dim + input_dim
        self.convz1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convr1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convq1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convz2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))
        self.convr2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))
        self.convq2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))

    def gate_groups(self) -> list[tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]]:
        return [
            (self.convz1, self.convr1, self.convq1),
            (self.convz2, self.convr2, self.convq2),
        ]


class MotionEncoder(nn.Module):
    """Encodes (correlation lookup, current flow) into motion features.

    Output ``(B, out_dim, h, w)`` whose last two channels are the input flow itself.

    Args:
        corr_levels, corr_radius: the correlation lookup it reads, ``levels * (2r + 1)^2``
            channels (RAFT: 4 levels, radius 4, or 3 for RAFT-small).
        corr_widths: widths of the correlation branch: ``(256, 192)`` (large) or ``(96,)``.
        flow_widths: widths of the flow branch: ``(128, 64)`` (large) or ``(64, 32)``.
        out_dim: channels of the output including the 2 flow channels: 128 or 82.
    """

    def __init__(
        self,
        *,
        corr_levels: int,
        corr_radius: int,
        corr_widths: tuple[int, ...],
        flow_widths: tuple[int, int],
        out_dim: int,
    ) -> None:
        super().__init__()
        if len(corr_widths) not in (1, 2):
            raise ValueError(f"corr_widths must have 1 or 2 entries, got {corr_widths}")
        self.corr_levels, self.corr_radius = corr_levels, corr_radius
        corr_planes = corr_levels * (2 * corr_radius + 1) ** 2
        self.convc1 = nn.Conv2d(corr_planes, corr_widths[0], 1, padding=0)
        self.convc2 = (
            nn.Conv2d(corr_widths[0], corr_widths[1], 3, padding=1)
            if len(corr_widths) == 2
            else None
        )
        self.convf1 = nn.Conv2d(2, flow_widths[0], 7, padding=3)
        self.convf2 = nn.Conv2d(flow_widths[0], flow_widths[1], 3, padding=1)
        self.conv = nn.Conv2d(corr_widths[-1] + flow_widths[1], out_dim - 2, 3, padding=1)
        self.fast_kernels = True

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        fast = self.fast_kernels
        cor = F.relu(self.convc1(corr))
        if self.convc2 is not None:
            cor = F.relu(_conv(self.convc2, cor, fast=fast))
        flo = F.relu(self.convf1(flow))
        flo = F.relu(_conv(self.convf2, flo, fast=fast))
        out = F.relu(_conv(self.conv, torch.cat([cor, flo], dim=1), fast=fast))
        return torch.cat([out, flow], dim=1)


@dataclass(frozen=True)
class PreparedContext:
    """What :meth:`UpdateBlock.prepare` derives once per pair from the context features.

    ``inp`` ``(B, context_dim, h, w)`` (the official path uses it directly) and ``gates`` (the
    hoisted GRU gates, ``None`` on the official path).
    """

    inp: torch.Tensor
    gates: list[PreparedGates] | None


class UpdateBlock(nn.Module):
    """One refinement step: motion encoder, GRU, flow head and (optionally) the upsampling mask.

    ``forward(net, inp, corr, flow, attention=None) -> (net, mask, delta_flow)`` with
    ``net`` the hidden state ``(B, hidden_dim, h, w)``, ``inp`` the context features
    ``(B, context_dim, h, w)`` or what :meth:`prepare` made of them (reuse that across the
    iterations of a pair), ``mask`` ``(B, 9 * 64, h, w)`` (already scaled by 0.25 as the
    official code does) or ``None`` when the block has no mask head, ``delta_flow``
    ``(B, 2, h, w)``. With ``aggregator`` (GMA), ``attention`` ``(B, heads, h*w, h*w)`` is
    required and the aggregated global motion features join the GRU input.
    """

    def __init__(
        self,
        *,
        encoder: MotionEncoder,
        gru: ConvGRU | SepConvGRU,
        flow_head: FlowHead,
        with_mask: bool,
        aggregator: Aggregate | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.gru = gru
        self.flow_head = flow_head
        self.mask = (
            nn.Sequential(
                nn.Conv2d(gru.hidden_dim, 256, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, 64 * 9, 1, padding=0),
            )
            if with_mask
            else None
        )
        self.aggregator = aggregator
        self.fast_kernels = True

    def prepare(self, inp: torch.Tensor) -> PreparedContext:
        """The per-pair context part of the GRU, from ``inp`` ``(B, context_dim, h, w)``."""
        if not self.fast_kernels:
            return PreparedContext(inp, None)
        return PreparedContext(inp, self.gru.prepare(inp, fast=True))

    def forward(
        self,
        net: torch.Tensor,
        inp: torch.Tensor | PreparedContext,
        corr: torch.Tensor,
        flow: torch.Tensor,
        attention: torch.Tensor | None = None,
        *,
        compute_mask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        prepared = inp if isinstance(inp, PreparedContext) else self.prepare(inp)
        motion = self.encoder(flow, corr)
        if self.aggregator is not None:
            if attention is None:
                raise ValueError("this update block aggregates global motion: pass attention")
            motion = torch.cat([motion, self.aggregator(attention, motion)], dim=1)
        if prepared.gates is None:
            net = self.gru(net, torch.cat([prepared.inp, motion], dim=1))
        else:
            net = self.gru.step(net, motion, prepared.gates, fast=True)
        delta_flow = self.flow_head(net)
        mask = None
        if self.mask is not None and compute_mask:
            conv1, relu, conv2 = self.mask
            hidden = relu(_conv(conv1, net, fast=self.fast_kernels))
            mask = 0.25 * conv2(hidden)
        return net, mask, delta_flow
