"""The flow stage: optical flow for every pair ``(t, t + k)`` of a chunk.

Artifacts attached to each chunk (``P`` = number of pairs that start in this chunk):

- ``pairs``: ``(P, 2)`` int64 decoded-frame indices ``(t, t + k)``.
- ``flow_fw``: ``(P, 2, H, W)`` float32 CPU tensor, pixels, channel 0 = x, t -> t + k.
- ``flow_bw``: same for t + k -> t, when ``backward`` is on.
- ``features``: ``(T, C, h, w)`` float32 CPU tensor of every frame's feature-encoder map
  (network backends with ``keep_features``) on the 1/8 grid of the padded frame, less the
  cells made of padding alone (frames under the pyramid's 64 px minimum are padded by more
  than a cell): ``h = ceil(H / 8)``, or one more where the padding is split over both sides.

Each frame's encoder outputs are computed once: within a chunk they serve both pairs the frame
belongs to, and the last ``k`` frames' outputs are carried into the next chunk, whose first
``k`` frames they are.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from models import ARCHS, RAFT, Context, Padder, create_model, forward_interpolate

from .base import FrameChunk
from .cpu_workers import CpuWorkers
from .devices import resolve_device, resolve_precision
from .flow_refine import refine_flows, resolve_refine
from .settings import DIS_PRESET_NAMES, FlowConfig, correlation_kind

logger = logging.getLogger(__name__)

NETWORK_MODELS: tuple[str, ...] = ARCHS
ENCODER_BYTES_PER_PIXEL = 1024  # encoder activations per input pixel and frame (measured)
REFINE_BYTES_PER_POSITION = 12 * 1024  # refinement activations per 1/8-grid position (measured)
DIS_PRESETS = {
    name: getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{name.upper()}") for name in DIS_PRESET_NAMES
}


DIS_MIN_SIDE = 32
"""OpenCV's DIS refuses frames with both sides under 12 pixels, raises an error for frames
under 32 rows high that are wide (from 640 columns with the ``fast`` preset) and crashes the
process (SIGSEGV) for some narrower ones (14 x 64 with ``medium``, 31 x 100 with ``fast``;
OpenCV 5.1 on x86-64, every preset fine from 32 rows at any width). :class:`DisFlow` pads
shorter sides to this (border replicated, at the bottom / right) and crops the flow back, so
any frame size works."""


class DisFlow:
    """OpenCV DIS on grayscale frames: the classical backend of :class:`FlowStage`."""

    def __init__(self, preset: str = "medium") -> None:
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; expected {list(DIS_PRESETS)}")
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    @staticmethod
    def gray(frame: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> ``(H, W)`` uint8 gray, what DIS takes."""
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)

    def __call__(self, gray1: np.ndarray, gray2: np.ndarray) -> np.ndarray:
        """``(H, W, 2)`` float32 flow in pixels from ``gray1`` to ``gray2`` (any size)."""
        height, width = gray1.shape[:2]
        grow_h, grow_w = max(0, DIS_MIN_SIDE - height), max(0, DIS_MIN_SIDE - width)
        if not grow_h and not grow_w:
            return self._dis.calc(gray1, gray2, None)
        padded = [
            cv2.copyMakeBorder(g, 0, grow_h, 0, grow_w, cv2.BORDER_REPLICATE)
            for g in (gray1, gray2)
        ]
        return np.ascontiguousarray(self._dis.calc(*padded, None)[:height, :width])


def pair_starts(num_frames: int, gap: int) -> range:
    """Chunk-local indices ``t`` of the pairs ``(t, t + gap)`` that a chunk owns."""
    return range(max(num_frames - gap, 0))


@dataclass
class _Carry:
    """Per-frame encoder outputs kept across a chunk border."""

    video_id: str | None = None
    features: dict[int, torch.Tensor] = field(default_factory=dict)
    contexts: dict[int, Context] = field(default_factory=dict)
    flow_low_fw: torch.Tensor | None = None
    flow_low_bw: torch.Tensor | None = None


@dataclass
class _ChunkWork:
    """What the network steps of one chunk share: the chunk, the video frame index of each of
    its frames, the encoder outputs carried across chunk borders, the padding, the device and
    the correlation kind."""

    chunk: FrameChunk
    indices: list[int]
    carry: _Carry
    padder: Padder
    device: torch.device
    corr: str

    def images(self, frames: list[int]) -> torch.Tensor:
        """Chunk-local frames -> padded ``(n, 3, H', W')`` float32 0..255 on the device."""
        batch = torch.from_numpy(self.chunk.frames[frames]).to(self.device)
        return self.padder.pad(batch.permute(0, 3, 1, 2).float())


class FlowStage:
    """Optical flow with RAFT / RAFT-small / GMA or OpenCV DIS.

    Args:
        config: the ``flow`` section (:class:`stages.settings.FlowConfig`) with ``model``
            resolved (not ``auto``): ``checkpoint`` is a registry name or file for network
            models (``None``: random weights, only useful in tests); ``device`` (``auto``
            allowed) and ``precision`` are resolved by :func:`stages.devices.resolve_device` /
            :func:`~stages.devices.resolve_precision` at :meth:`setup`. ``warm_start``
            initialises each pair from the previous pair's flow (RAFT's Sintel submission
            procedure), pairs then run one at a time. ``memory_budget_mb`` lowers
            ``batch_pairs`` and ``encode_batch`` for large frames so that the encoder
            activations (about 1 KB per input pixel and frame) and the all-pairs volumes stay
            within it (never below 1). ``cpu_workers``: frames encoded and pairs refined side by
            side on the CPU, PyTorch's intra-op threads split evenly between them (see
            :mod:`stages.cpu_workers`); ``None``: 2 for network models on a CPU with >= 2
            threads, else 1. Where one encoder pass or one refinement per worker would exceed
            the budget (large frames), and for warm-started refinement (a chain), frames and
            pairs run one at a time with all threads.
            ``refine``: variational refinement of each network flow at full resolution
            (:mod:`stages.flow_refine`; ``auto``: where the checkpoint's registry entry asks
            for it).
        keep_features: attach the per-frame encoder maps (for the motion-feature stage).
        network: an already built network (its device wins over ``config.device``).
        **changes: fields of ``config`` to replace (``FlowStage(model="dis", backward=True)``).
    """

    name: ClassVar[str] = "flow"

    def __init__(
        self,
        config: FlowConfig | None = None,
        *,
        keep_features: bool = False,
        network: RAFT | None = None,
        **changes: Any,
    ) -> None:
        self.config = dataclasses.replace(config or FlowConfig(), **changes)
        if self.config.model not in (*NETWORK_MODELS, "dis"):
            raise ValueError(
                f"flow model {self.config.model!r} must be resolved to one of "
                f"{(*NETWORK_MODELS, 'dis')} before the stage is built"
            )
        checkpoint = self.config.checkpoint
        if checkpoint is None and getattr(network, "checkpoint_info", None) is not None:
            checkpoint = network.checkpoint_info.source  # a given network's weights decide
        self.refine = resolve_refine(self.config.refine, self.config.model, checkpoint)
        self.keep_features = keep_features
        self.network = network
        self.autocast: torch.dtype | None = None
        self._carry = _Carry()
        self._dis = None
        self._workers: CpuWorkers | None = None

    def __repr__(self) -> str:
        return f"FlowStage({self.config!r}, keep_features={self.keep_features})"

    @property
    def device(self) -> torch.device:
        """Where the network runs: its parameters' device, else the resolved ``config.device``."""
        if self.network is not None:
            return next(self.network.parameters()).device
        return resolve_device(self.config.device)

    @property
    def is_network(self) -> bool:
        return self.config.model in NETWORK_MODELS

    def setup(self) -> None:
        """Builds the network (or DIS), resolves the autocast dtype, starts the CPU workers."""
        if self.is_network and self.network is None:
            self.network = create_model(
                self.config.model, checkpoint=self.config.checkpoint, device=self.device
            )
        if not self.is_network:
            self._dis = DisFlow(self.config.dis_preset)
            return
        self.autocast = resolve_precision(self.config.precision, self.device)
        if self._workers is None:
            workers = self.resolved_cpu_workers()
            if workers > 1:
                self._workers = CpuWorkers(workers, max(1, torch.get_num_threads() // workers))

    def teardown(self) -> None:
        self.network = None
        self._dis = None
        self._carry = _Carry()
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    def resolved_cpu_workers(self) -> int:
        """Side-by-side workers for this stage's device and PyTorch's current thread count."""
        if self.network is not None or self.config.device == "auto":
            device_type = self.device.type
        else:
            device_type = torch.device(self.config.device).type  # no availability check here
        if not self.is_network or device_type != "cpu":
            return 1
        if self.config.cpu_workers is not None:
            return self.config.cpu_workers
        return 2 if torch.get_num_threads() >= 2 else 1

    def process(self, chunk: FrameChunk) -> FrameChunk:
        starts = pair_starts(chunk.num_frames, self.config.gap)
        chunk.artifacts["pairs"] = (
            np.stack(
                [chunk.indices[list(starts)], chunk.indices[[t + self.config.gap for t in starts]]],
                axis=1,
            )
            .astype(np.int64)
            .reshape(-1, 2)
        )
        if self.is_network:
            self._process_network(chunk, starts)
        else:
            self._process_dis(chunk, starts)
        return chunk

    # -- classical backend -------------------------------------------------------------------

    def _process_dis(self, chunk: FrameChunk, starts: range) -> None:
        if self._dis is None:
            self.setup()
        gray = [DisFlow.gray(frame) for frame in chunk.frames]
        directions = [("flow_fw", False)] + ([("flow_bw", True)] if self.config.backward else [])
        for key, reverse in directions:
            flows = []
            for t in starts:
                a, b = gray[t], gray[t + self.config.gap]
                flow = self._dis(b, a) if reverse else self._dis(a, b)
                flows.append(torch.from_numpy(flow).permute(2, 0, 1))
            chunk.artifacts[key] = _stack(flows, chunk)

    # -- network backend ---------------------------------------------------------------------

    def _process_network(self, chunk: FrameChunk, starts: range) -> None:
        if self.network is None:
            self.setup()
        network = self.network
        padder = network.padder(chunk.height, chunk.width, self.config.pad_mode)
        corr = self._corr_kind(padder)
        encode_batch, batch_pairs = self.batch_sizes(padder, corr)
        encode_workers, refine_workers = self._side_by_side(padder, corr, batch_pairs)
        indices = [int(i) for i in chunk.indices]
        carry = self._fresh_carry(chunk)
        device = next(network.parameters()).device
        work = _ChunkWork(chunk, indices, carry, padder, device, corr)

        features = self._encode_missing(work, encode_batch, encode_workers)
        keep = set(indices[len(indices) - self.config.gap :]) if not chunk.is_last else set()
        flows = self._refine_by_source(
            work, starts, batch_pairs, encode_batch, keep, refine_workers
        )
        if self.refine == "variational":
            gap = self.config.gap
            flows["fw"] = refine_flows(flows["fw"], chunk.frames, [(t, t + gap) for t in starts])
            if self.config.backward:
                backward = [(t + gap, t) for t in starts]
                flows["bw"] = refine_flows(flows["bw"], chunk.frames, backward)
        chunk.artifacts["flow_fw"] = flows["fw"]
        if self.config.backward:
            chunk.artifacts["flow_bw"] = flows["bw"]
        if self.keep_features:
            maps = torch.stack([features[i] for i in indices])
            chunk.artifacts["features"] = _frame_cells(maps, padder).cpu()
        # keep only what the next chunk's first frames need
        carry.features = {i: f for i, f in carry.features.items() if i in keep}
        carry.contexts = {i: c for i, c in carry.contexts.items() if i in keep}
        if chunk.is_last:
            self._carry = _Carry()

    def _fresh_carry(self, chunk: FrameChunk) -> _Carry:
        if self._carry.video_id != chunk.video_id or chunk.overlap == 0:
            self._carry = _Carry(video_id=chunk.video_id)
        return self._carry

    def batch_sizes(self, padder: Padder, corr: str) -> tuple[int, int]:
        """``(encode_batch, batch_pairs)`` for frames of this size within the memory budget."""
        height, width = padder.padded_size
        budget = self.config.memory_budget_mb * 2**20
        encode = max(
            1, min(self.config.encode_batch, budget // (ENCODER_BYTES_PER_PIXEL * height * width))
        )
        pairs = self.config.batch_pairs
        per_pair = self._pair_bytes(padder, corr)
        if per_pair:
            pairs = max(1, min(pairs, int(budget // per_pair)))
        return encode, pairs

    def _pair_bytes(self, padder: Padder, corr: str) -> float:
        """Working memory of one pair's refinement: activations, the all-pairs pyramid, GMA's
        attention matrix."""
        height, width = padder.padded_size
        positions = (height // 8) * (width // 8)
        per_pair = float(REFINE_BYTES_PER_POSITION * positions)
        if corr == "all-pairs":
            per_pair += 4 * positions**2 * 4 / 3  # float32 pyramid: 1 + 1/4 + 1/16 + 1/64
        if self.config.model == "gma":
            per_pair += 4 * positions**2  # the source frame's attention matrix
        return per_pair

    def _side_by_side(
        self, padder: Padder, corr: str, batch_pairs: int
    ) -> tuple[CpuWorkers | None, CpuWorkers | None]:
        """The workers for encoding and for refinement, or ``None`` where that step runs one
        piece at a time on the calling thread.

        Frames and pairs go side by side only where one encoder pass or one refinement batch
        per worker fits the memory budget (each worker does one of them at a time); for large
        frames memory comes first. A warm-started refinement is a chain: one pair at a time.
        """
        workers = self._workers
        if workers is None:
            return None, None
        height, width = padder.padded_size
        per_worker = max(
            ENCODER_BYTES_PER_PIXEL * height * width, batch_pairs * self._pair_bytes(padder, corr)
        )
        if workers.workers * per_worker > self.config.memory_budget_mb * 2**20:
            return None, None
        return workers, None if self.config.warm_start else workers

    def _corr_kind(self, padder: Padder) -> str:
        height, width = padder.padded_size
        return correlation_kind(
            self.config.corr, height * width, self.config.on_demand_above_pixels
        )

    def _encode_missing(
        self, work: _ChunkWork, batch: int, workers: CpuWorkers | None
    ) -> dict[int, torch.Tensor]:
        """Feature maps of the chunk's frames not carried over: in groups of ``batch``, or one
        frame per worker task."""
        indices, carry = work.indices, work.carry
        missing = [t for t, i in enumerate(indices) if i not in carry.features]
        size = 1 if workers is not None else batch
        groups = [missing[start : start + size] for start in range(0, len(missing), size)]

        def encode(group: list[int]) -> torch.Tensor:
            with torch.inference_mode():
                return self.network.encode_features(work.images(group), autocast=self.autocast)

        if workers is not None:
            encoded = workers.map(encode, groups)
        else:
            encoded = (encode(group) for group in groups)
        for group, fmaps in zip(groups, encoded, strict=True):
            for t, fmap in zip(group, fmaps, strict=True):
                carry.features[indices[t]] = fmap
        return carry.features

    def _contexts(self, work: _ChunkWork, sources: list[int], batch: int) -> None:
        """Contexts of the chunk-local ``sources`` not computed yet, ``batch`` frames at a time."""
        contexts = work.carry.contexts
        missing = [t for t in sources if work.indices[t] not in contexts]
        with torch.inference_mode():
            for start in range(0, len(missing), batch):
                group = missing[start : start + batch]
                context = self.network.encode_context(work.images(group), autocast=self.autocast)
                for n, t in enumerate(group):
                    contexts[work.indices[t]] = context.select(slice(n, n + 1))

    def _refine_by_source(
        self,
        work: _ChunkWork,
        starts: range,
        batch_pairs: int,
        encode_batch: int,
        keep: set[int],
        workers: CpuWorkers | None,
    ) -> dict[str, torch.Tensor]:
        """Forward (and backward) flow of the chunk's pairs, walking the source frames in order.

        Source frames are taken in windows: the window's contexts are computed, its forward
        and its backward pairs refined (in batches of ``batch_pairs``; a GMA window is one
        batch), and its contexts dropped unless the next chunk needs them (``keep``). So at
        most a window of contexts is alive at a time, which matters for GMA, whose context
        holds an ``(h*w, h*w)`` attention matrix (0.8 GB per frame at 1280x720). With
        ``workers``, each window is one worker task (a window of ``batch_pairs`` sources, its
        contexts computed by the task), so at most one window per worker is alive. Pairs keep
        their order within each direction.
        """
        by_source: dict[str, dict[int, tuple[int, int]]] = {
            "fw": {t: (t, t + self.config.gap) for t in starts},
            "bw": {t + self.config.gap: (t + self.config.gap, t) for t in starts}
            if self.config.backward
            else {},
        }
        sources = sorted(set(by_source["fw"]) | set(by_source["bw"]))
        batch = 1 if self.config.warm_start else batch_pairs
        if workers is not None:
            window = batch
        else:  # contexts without attention are small: compute them in encoder-sized windows
            window = batch if self.config.model == "gma" else max(batch, encode_batch)
        context_batch = window if workers is not None else encode_batch

        def run_window(group: list[int]) -> dict[str, list[torch.Tensor]]:
            self._contexts(work, group, context_batch)
            window_flows: dict[str, list[torch.Tensor]] = {"fw": [], "bw": []}
            for direction, pairs in by_source.items():
                todo = [pairs[t] for t in group if t in pairs]
                for start in range(0, len(todo), batch):
                    window_flows[direction].append(
                        self._refine_batch(work, todo[start : start + batch], direction)
                    )
            for t in group:
                if work.indices[t] not in keep:
                    work.carry.contexts.pop(work.indices[t], None)
            return window_flows

        windows = [sources[begin : begin + window] for begin in range(0, len(sources), window)]
        if workers is not None:
            results = workers.map(run_window, windows)
        else:
            results = (run_window(group) for group in windows)
        flows: dict[str, list[torch.Tensor]] = {"fw": [], "bw": []}
        for result in results:
            for direction, parts in result.items():
                flows[direction].extend(parts)
        empty = torch.zeros(0, 2, work.padder.height, work.padder.width)
        return {key: torch.cat(parts) if parts else empty for key, parts in flows.items()}

    def _refine_batch(
        self, work: _ChunkWork, pairs: list[tuple[int, int]], direction: str
    ) -> torch.Tensor:
        """Flow ``(n, 2, H, W)`` float32 on the CPU of chunk-local ``pairs`` (source, target)."""
        carry = work.carry
        src = [work.indices[a] for a, _ in pairs]
        dst = [work.indices[b] for _, b in pairs]
        with torch.inference_mode():
            context = _cat_contexts([carry.contexts[i] for i in src])
            flow_init = self._warm_start_init(carry, direction) if self.config.warm_start else None
            flow_low, flow_up = self.network.refine(
                torch.stack([carry.features[i] for i in src]),
                torch.stack([carry.features[i] for i in dst]),
                context,
                iters=self.config.iters,
                flow_init=flow_init,
                corr=work.corr,
                autocast=self.autocast,
            )
        if self.config.warm_start:
            setattr(carry, f"flow_low_{direction}", flow_low)
        return work.padder.unpad(flow_up).float().cpu()

    @staticmethod
    def _warm_start_init(carry: _Carry, direction: str) -> torch.Tensor | None:
        previous = getattr(carry, f"flow_low_{direction}")
        return None if previous is None else forward_interpolate(previous)


def _cat_contexts(contexts: list[Context]) -> Context:
    """One batched context; a single one is passed through (``torch.cat`` would copy it, and
    GMA's attention matrix is 0.8 GB at 1280x720)."""
    if len(contexts) == 1:
        return contexts[0]
    attention = None
    if contexts[0].attention is not None:
        attention = torch.cat([c.attention for c in contexts])
    return Context(
        net=torch.cat([c.net for c in contexts]),
        inp=torch.cat([c.inp for c in contexts]),
        attention=attention,
    )


def _stack(flows: list[torch.Tensor], chunk: FrameChunk) -> torch.Tensor:
    if not flows:
        return torch.zeros(0, 2, chunk.height, chunk.width)
    return torch.stack(flows).float()


def _frame_cells(maps: torch.Tensor, padder: Padder) -> torch.Tensor:
    """``(T, C, H'/8, W'/8)`` maps of padded frames without the cells that hold only padding."""
    left, right, top, bottom = (pad // 8 for pad in padder.pads)
    height, width = maps.shape[-2:]
    return maps[..., top : height - bottom, left : width - right]
