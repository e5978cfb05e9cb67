"""The recurrent update operator of RAFT, RAFT-small and GMA.

Every tensor here lives on the 1/8-resolution grid ``(B, C, h, w)``. ``flow`` is
``(B, 2, h, w)`` in 1/8-resolution pixels and ``corr`` is the correlation lookup
``(B, levels * (2r+1)^2, h, w)``. Submodule names follow the official checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gma import Aggregate


class FlowHead(nn.Module):
    """Two 3x3 convolutions predicting the flow update ``(B, 2, h, w)``."""

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x)))


def _gru_step(
    h: torch.Tensor, x: torch.Tensor, convz: nn.Module, convr: nn.Module, convq: nn.Module
) -> torch.Tensor:
    hx = torch.cat([h, x], dim=1)
    z = torch.sigmoid(convz(hx))
    r = torch.sigmoid(convr(hx))
    q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))
    return (1 - z) * h + z * q


class ConvGRU(nn.Module):
    """A convolutional GRU with 3x3 gates (RAFT-small)."""

    def __init__(self, hidden_dim: int, input_dim: int) -> None:
        super().__init__()
        self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _gru_step(h, x, self.convz, self.convr, self.convq)


class SepConvGRU(nn.Module):
    """A GRU applied twice: with 1x5 (horizontal) then 5x1 (vertical) gates (RAFT, GMA)."""

    def __init__(self, hidden_dim: int, input_dim: int) -> None:
        super().__init__()
        channels = hidden_dim + input_dim
        self.convz1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convr1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convq1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convz2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))
        self.convr2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))
        self.convq2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = _gru_step(h, x, self.convz1, self.convr1, self.convq1)
        return _gru_step(h, x, self.convz2, self.convr2, self.convq2)


class MotionEncoder(nn.Module):
    """Encodes (correlation lookup, current flow) into motion features.

    Output ``(B, out_dim, h, w)`` whose last two channels are the input flow itself.

    Args:
        corr_planes: channels of the correlation lookup, ``levels * (2r + 1)^2``.
        corr_widths: widths of the correlation branch: ``(256, 192)`` (large) or ``(96,)``.
        flow_widths: widths of the flow branch: ``(128, 64)`` (large) or ``(64, 32)``.
        out_dim: channels of the output including the 2 flow channels: 128 or 82.
    """

    def __init__(
        self,
        *,
        corr_planes: int,
        corr_widths: tuple[int, ...],
        flow_widths: tuple[int, int],
        out_dim: int,
    ) -> None:
        super().__init__()
        if len(corr_widths) not in (1, 2):
            raise ValueError(f"corr_widths must have 1 or 2 entries, got {corr_widths}")
        self.convc1 = nn.Conv2d(corr_planes, corr_widths[0], 1, padding=0)
        self.convc2 = (
            nn.Conv2d(corr_widths[0], corr_widths[1], 3, padding=1)
            if len(corr_widths) == 2
            else None
        )
        self.convf1 = nn.Conv2d(2, flow_widths[0], 7, padding=3)
        self.convf2 = nn.Conv2d(flow_widths[0], flow_widths[1], 3, padding=1)
        self.conv = nn.Conv2d(corr_widths[-1] + flow_widths[1], out_dim - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc1(corr))
        if self.convc2 is not None:
            cor = F.relu(self.convc2(cor))
        flo = F.relu(self.convf1(flow))
        flo = F.relu(self.convf2(flo))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)


class UpdateBlock(nn.Module):
    """One refinement step: motion encoder, GRU, flow head and (optionally) the upsampling mask.

    ``forward(net, inp, corr, flow, attention=None) -> (net, mask, delta_flow)`` with
    ``net`` the hidden state ``(B, hidden_dim, h, w)``, ``inp`` the context features
    ``(B, context_dim, h, w)``, ``mask`` ``(B, 9 * 64, h, w)`` (already scaled by 0.25 as the
    official code does) or ``None`` when the block has no mask head, ``delta_flow``
    ``(B, 2, h, w)``. With ``aggregator`` (GMA), ``attention`` ``(B, heads, h*w, h*w)`` is
    required and the aggregated global motion features join the GRU input.
    """

    def __init__(
        self,
        *,
        encoder: MotionEncoder,
        gru: nn.Module,
        flow_head: FlowHead,
        hidden_dim: int,
        with_mask: bool,
        aggregator: Aggregate | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.gru = gru
        self.flow_head = flow_head
        self.mask = (
            nn.Sequential(
                nn.Conv2d(hidden_dim, 256, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, 64 * 9, 1, padding=0),
            )
            if with_mask
            else None
        )
        self.aggregator = aggregator

    def forward(
        self,
        net: torch.Tensor,
        inp: torch.Tensor,
        corr: torch.Tensor,
        flow: torch.Tensor,
        attention: torch.Tensor | None = None,
        *,
        compute_mask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        motion = self.encoder(flow, corr)
        if self.aggregator is not None:
            if attention is None:
                raise ValueError("this update block aggregates global motion: pass attention")
            gru_input = torch.cat([inp, motion, self.aggregator(attention, motion)], dim=1)
        else:
            gru_input = torch.cat([inp, motion], dim=1)
        net = self.gru(net, gru_input)
        delta_flow = self.flow_head(net)
        mask = None
        if self.mask is not None and compute_mask:
            mask = 0.25 * self.mask(net)
        return net, mask, delta_flow
