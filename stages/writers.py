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
| ``viz`` | ``viz/{t:06d}.png`` colour wheel, ``viz.mp4`` frame and flow side by side |

Always: ``timestamps.csv`` (frame index, pts in seconds) and ``pairs.csv`` (pair row, t, t+k,
their pts). ``meta.json`` is written by the runner, last.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from .base import FrameChunk
from .flow_io import (
    FLOW_JPEG_PRESETS,
    FlowJpegLayout,
    write_bytes_atomic,
    write_flo,
    write_flow_jpegs,
    write_image,
    write_kitti_png,
)
from .flow_viz import flow_to_color, side_by_side
from .streaming import Mp4Writer, StackedNpyWriter

logger = logging.getLogger(__name__)


@dataclass
class FlowWriters:
    """Writes the flow of one video in every selected format.

    Attributes:
        out_dir: the video's output folder.
        formats: any of ``flo``, ``npy``, ``npz``, ``kitti``, ``jpg``, ``viz``.
        npy_dtype: ``float32`` or ``float16`` for ``npy`` / ``npz``.
        jpg_layout: naming and quantisation of action-recognition JPEGs.
        write_rgb: also write the RGB frames (``img_*.jpg``) next to the flow JPEGs.
        viz_max_flow: fixed colour-wheel scale in pixels (``None``: each frame's maximum).
        viz_video: also encode ``viz.mp4``.
        fps: frame rate for ``viz.mp4``.
    """

    name: ClassVar[str] = "writers"

    out_dir: Path
    formats: tuple[str, ...] = ("npy",)
    npy_dtype: str = "float32"
    jpg_layout: FlowJpegLayout = field(default_factory=lambda: FLOW_JPEG_PRESETS["mmaction2"])
    write_rgb: bool = False
    viz_max_flow: float | None = None
    viz_video: bool = True
    fps: float = 25.0

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self._stacks: dict[str, StackedNpyWriter] = {}
        self._mp4: Mp4Writer | None = None
        self._timestamps: list[tuple[int, float]] = []
        self._pairs: list[tuple[int, int, float, float]] = []
        self.outputs: dict[str, str] = {}

    def setup(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def process(self, chunk: FrameChunk) -> FrameChunk:
        new = range(chunk.overlap, chunk.num_frames)  # frames not already seen
        self._timestamps.extend((int(chunk.indices[i]), float(chunk.pts[i])) for i in new)
        if "jpg" in self.formats and self.write_rgb:
            for i in new:
                write_image(
                    self.out_dir / "rawframes" / self.jpg_layout.image_name(int(chunk.indices[i])),
                    chunk.frames[i],
                    jpeg_quality=self.jpg_layout.jpeg_quality,
                )
        pairs = chunk.artifacts.get("pairs", np.zeros((0, 2), np.int64))
        local = {int(index): n for n, index in enumerate(chunk.indices)}
        pts = {int(index): float(p) for index, p in zip(chunk.indices, chunk.pts, strict=True)}
        self._pairs.extend((int(a), int(b), pts[int(a)], pts[int(b)]) for a, b in pairs)
        for key, suffix in (("flow_fw", ""), ("flow_bw", "_bw")):
            if key in chunk.artifacts:
                flows = chunk.artifacts[key].permute(0, 2, 3, 1).numpy()  # (P, H, W, 2)
                self._write_flows(flows, pairs, suffix, chunk, local)
        return chunk

    def _write_flows(self, flows, pairs, suffix: str, chunk: FrameChunk, local) -> None:
        for fmt in ("npy", "npz"):
            if fmt in self.formats and len(flows):
                stack = self._stacks.get(fmt + suffix)
                if stack is None:
                    path = self.out_dir / f"flow{suffix}.{fmt}"
                    stack = StackedNpyWriter(path, flows.shape[1:], self.npy_dtype)
                    self._stacks[fmt + suffix] = stack
                stack.append(flows)
        for flow, (t, _) in zip(flows, pairs, strict=True):
            name = f"{int(t):06d}"
            if "flo" in self.formats:
                write_flo(self.out_dir / f"flo{suffix}" / f"{name}.flo", flow)
            if "kitti" in self.formats:
                write_kitti_png(self.out_dir / f"kitti{suffix}" / f"{name}.png", flow)
            if suffix:
                continue  # action-recognition frames and previews use forward flow only
            if "jpg" in self.formats:
                write_flow_jpegs(self.out_dir / "rawframes", flow, int(t), self.jpg_layout)
            if "viz" in self.formats:
                colour = flow_to_color(flow, max_flow=self.viz_max_flow)
                write_image(self.out_dir / "viz" / f"{name}.png", colour)
                if self.viz_video:
                    if self._mp4 is None:
                        self._mp4 = Mp4Writer(self.out_dir / "viz.mp4", self.fps)
                    self._mp4.write(side_by_side(chunk.frames[local[int(t)]], colour))

    def finish(self) -> dict[str, str]:
        """Closes streamed files and writes the tables; returns ``{output name: path}``."""
        for name, stack in self._stacks.items():
            self.outputs[name] = str(stack.close())
        self._stacks.clear()
        if self._mp4 is not None:
            self.outputs["viz_mp4"] = str(self._mp4.close())
            self._mp4 = None
        for fmt, folder in (
            ("flo", "flo"),
            ("kitti", "kitti"),
            ("viz", "viz"),
            ("jpg", "rawframes"),
        ):
            if fmt in self.formats and (self.out_dir / folder).is_dir():
                self.outputs[fmt] = str(self.out_dir / folder)
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
    write_bytes_atomic(path, buffer.getvalue().encode())
    return path
