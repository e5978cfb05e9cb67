"""The writers stage: every selected flow format for one video.

Layout inside the video's output folder (``t`` = index of the pair's first decoded frame,
0-based; backward-flow variants carry a ``_bw`` suffix):

| format  | files |
|---------|-------|
| ``npy`` | ``flow.npy``: ``(P, H, W, 2)`` float32/float16, pair ``n`` is row ``n`` |
| ``npz`` | ``flow.npz``: the same array, deflated, under the key ``flow`` |
| ``flo`` | ``flo/{t:06d}.flo`` (Middlebury) |
| ``kitti`` | ``kitti/{t:06d}.png`` (16-bit, valid channel) |
| ``jpg`` | ``rawframes/`` action-recognition flow JPEGs named by the preset (and RGB
  ``img_*.jpg`` with ``write_rgb``) |
| ``viz`` | ``viz/{t:06d}.png`` colour wheel with its legend, ``viz.mp4`` frame, flow and
  legend side by side, panels labelled |

Always: ``timestamps.csv`` (frame index, pts in seconds) and ``pairs.csv`` (pair row, t, t+k,
their pts). ``meta.json`` is written by the runner, last.

Colour pictures use one scale per video by default (``viz_scale="video"``): the magnitude that
reaches the wheel's rim is 1.1 times the 99th percentile of the flow magnitudes of the
video's first chunk (:func:`stages.flow_viz.video_scale`), at least ``viz_min_flow`` pixels,
and stays fixed for the rest of the video. The first
chunk is already in memory when its pictures are drawn, so this costs no second pass and no
memory beyond the chunk; a video whose motion grows later shows the larger motion darker (past
the rim) rather than rescaled. ``viz_scale="frame"`` normalises each picture by its own largest
motion, ``viz_max_flow`` fixes the rim in pixels. The legend strip states the rim and which
rule chose it.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from models.atomic_files import write_bytes_atomic

from .base import FrameChunk, VideoOutputStage
from .flow_io import write_flo, write_kitti_png
from .flow_jpeg import write_flow_jpegs
from .flow_viz import (
    LEGEND_MIN_HEIGHT,
    caption_height,
    flow_to_color,
    largest_magnitude,
    legend_panel,
    side_by_side,
    video_scale,
    with_caption,
)
from .image_io import write_image
from .settings import OutputConfig
from .streaming import Mp4Writer, StackedNpyWriter

logger = logging.getLogger(__name__)

VIDEO_PERCENTILE = 99.0
"""Percentile of the first chunk's flow magnitudes that reaches the rim with ``viz_scale="video"``."""


@dataclass
class FlowWriters(VideoOutputStage):
    """Writes the flow of one video in every selected format.

    Attributes:
        out_dir: the video's output folder.
        config: the ``output`` section (:class:`stages.settings.OutputConfig`): formats,
            dtypes, the flow-JPEG layout and the colour pictures (``viz_scale``: see the module
            docstring; pictures under :data:`stages.flow_viz.LEGEND_MIN_HEIGHT` pixels tall get
            no legend).
        fps: frame rate for ``viz.mp4``.
        write_backward: write the chunks' backward flow (``flow_bw``) as well. The runner
            passes ``flow.backward``: backward flow that only the warp stage's occlusion test
            asked for is used there and not written.
        gap: the pair gap ``k`` (``flow.gap``), for flow-JPEG names that depend on it.
    """

    name: ClassVar[str] = "writers"

    config: OutputConfig = field(default_factory=OutputConfig)
    fps: float = 25.0
    write_backward: bool = True
    gap: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        self.jpg_layout = self.config.jpg_layout.for_gap(self.gap)
        self._rgb = "jpg" in self.config.formats and self.config.write_rgb
        self._stacks: dict[str, StackedNpyWriter] = {}
        self._mp4: Mp4Writer | None = None
        self._timestamps: list[tuple[int, float]] = []
        self._pairs: list[tuple[int, int, float, float]] = []
        self._rim: float | None = self.config.viz_max_flow
        self.outputs: dict[str, str] = {}
        self.summary: dict[str, object] = {}

    def process(self, chunk: FrameChunk) -> FrameChunk:
        new = range(chunk.overlap, chunk.num_frames)  # frames not already seen
        self._timestamps.extend((int(chunk.indices[i]), float(chunk.pts[i])) for i in new)
        if self._rgb and not self.jpg_layout.rgb_ends_pairs:
            for i in new:
                self._write_rgb(chunk.frames[i], int(chunk.indices[i]))
        pairs = chunk.artifacts.get("pairs", np.zeros((0, 2), np.int64))
        local = {int(index): n for n, index in enumerate(chunk.indices)}
        pts = {int(index): float(p) for index, p in zip(chunk.indices, chunk.pts, strict=True)}
        self._pairs.extend((int(a), int(b), pts[int(a)], pts[int(b)]) for a, b in pairs)
        directions = [("flow_fw", "")] + ([("flow_bw", "_bw")] if self.write_backward else [])
        for key, suffix in directions:
            if key in chunk.artifacts:
                flows = chunk.artifacts[key].permute(0, 2, 3, 1).numpy()  # (P, H, W, 2)
                if (
                    not suffix
                    and self._rim is None
                    and self.config.viz_scale == "video"
                    and len(flows)
                ):
                    self._rim = video_scale(flows, VIDEO_PERCENTILE, self.config.viz_min_flow)
                self._write_flows(flows, pairs, suffix, chunk, local)
        return chunk

    def _write_flows(self, flows, pairs, suffix: str, chunk: FrameChunk, local) -> None:
        for fmt in ("npy", "npz"):
            if fmt in self.config.formats and len(flows):
                stack = self._stacks.get(fmt + suffix)
                if stack is None:
                    path = self.out_dir / f"flow{suffix}.{fmt}"
                    stack = StackedNpyWriter(path, flows.shape[1:], self.config.npy_dtype)
                    self._stacks[fmt + suffix] = stack
                stack.append(flows)
        for flow, (t, t_k) in zip(flows, pairs, strict=True):
            name = f"{int(t):06d}"
            if "flo" in self.config.formats:
                write_flo(self.out_dir / f"flo{suffix}" / f"{name}.flo", flow)
            if "kitti" in self.config.formats:
                write_kitti_png(self.out_dir / f"kitti{suffix}" / f"{name}.png", flow)
            if suffix:
                continue  # action-recognition frames and previews use forward flow only
            if "jpg" in self.config.formats:
                write_flow_jpegs(self.out_dir / "rawframes", flow, int(t), self.jpg_layout)
                if self._rgb and self.jpg_layout.rgb_ends_pairs:
                    self._write_rgb(chunk.frames[local[int(t_k)]], int(t))
            if "viz" in self.config.formats:
                self._write_viz(flow, int(t), int(t_k), chunk.frames[local[int(t)]])

    def _write_rgb(self, rgb: np.ndarray, number_index: int) -> None:
        """RGB frame ``rgb`` as the layout's image file for 0-based index ``number_index``."""
        write_image(
            self.out_dir / "rawframes" / self.jpg_layout.image_name(number_index),
            rgb,
            jpeg_quality=self.jpg_layout.jpeg_quality,
        )

    def _rim_for(self, flow: np.ndarray) -> tuple[float, str]:
        """The rim magnitude of this picture and how it was chosen (for the legend)."""
        if self.config.viz_max_flow is not None:
            return float(self.config.viz_max_flow), "fixed"
        if self.config.viz_scale == "video" and self._rim is not None:
            return self._rim, "per video"
        return largest_magnitude(flow), "frame max"

    def _write_viz(self, flow: np.ndarray, t: int, t_k: int, frame: np.ndarray) -> None:
        rim, how = self._rim_for(flow)
        colour = flow_to_color(flow, max_flow=rim)
        legible = self.config.viz_legend and colour.shape[0] >= LEGEND_MIN_HEIGHT
        legend = legend_panel(colour.shape[0], rim, how) if legible else None
        picture = colour if legend is None else np.concatenate([colour, legend], axis=1)
        write_image(self.out_dir / "viz" / f"{t:06d}.png", picture)
        if not self.config.viz_video:
            return
        bar = caption_height(frame.shape[0])
        preview = side_by_side(
            with_caption(frame, f"frame {t}", bar), with_caption(colour, f"flow {t} -> {t_k}", bar)
        )
        if legend is not None:
            legend = legend_panel(preview.shape[0], rim, how)
            preview = np.concatenate([preview, legend], axis=1)
        if self._mp4 is None:
            self._mp4 = Mp4Writer(self.out_dir / "viz.mp4", self.fps)
        self._mp4.write(preview)

    def finish(self) -> dict[str, str]:
        """Closes streamed files and writes the tables; returns ``{output name: path}``.

        With ``viz``, :attr:`summary` records the colour scale (``viz_scale``: how the rim was
        chosen, ``viz_rim_px``: the rim in pixels, ``None`` when each frame has its own).
        """
        if "viz" in self.config.formats and self._pairs:
            fixed = self.config.viz_max_flow is not None
            self.summary = {
                "viz_scale": "fixed" if fixed else self.config.viz_scale,
                "viz_rim_px": None if self.config.viz_scale == "frame" and not fixed else self._rim,
            }
        for name, stack in self._stacks.items():
            self.outputs[name] = str(stack.close())
        self._stacks.clear()
        if self._mp4 is not None:
            self.outputs["viz_mp4"] = str(self._mp4.close())
            self._mp4 = None
        for name, fmt, folder in (
            ("flo", "flo", "flo"),
            ("flo_bw", "flo", "flo_bw"),
            ("kitti", "kitti", "kitti"),
            ("kitti_bw", "kitti", "kitti_bw"),
            ("viz", "viz", "viz"),
            ("jpg", "jpg", "rawframes"),
        ):
            if fmt in self.config.formats and (self.out_dir / folder).is_dir():
                self.outputs[name] = str(self.out_dir / folder)
        self.outputs["timestamps"] = str(
            _write_csv(self.out_dir / "timestamps.csv", ("frame", "pts"), self._timestamps)
        )
        self.outputs["pairs"] = str(
            _write_csv(
                self.out_dir / "pairs.csv",
                ("frame_t", "frame_t_k", "pts_t", "pts_t_k"),
                self._pairs,
            )
        )
        return dict(self.outputs)

    def abort(self) -> None:
        """Drops unfinished streamed files (completed per-pair files stay, the video is not ok)."""
        for stack in self._stacks.values():
            stack.abort()
        self._stacks.clear()
        if self._mp4 is not None:
            self._mp4.abort()
            self._mp4 = None

    def teardown(self) -> None:
        self.abort()

    @property
    def num_frames(self) -> int:
        return len(self._timestamps)

    @property
    def num_pairs(self) -> int:
        return len(self._pairs)


def _write_csv(path: Path, header: tuple[str, ...], rows) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in row])
    write_bytes_atomic(path, buffer.getvalue().encode(), durable=False)
    return path
