"""The unit of work that flows between stages, and the stage contract.

A video is decoded into *chunks*: ``N + k`` consecutive decoded frames that overlap the previous
chunk by ``k`` frames (``k`` = the pair gap, 1 for consecutive pairs), so that every pair
``(t, t + k)`` lies wholly inside exactly one chunk and no pair is lost or duplicated at a
border. Memory is bounded by the chunk size, never by the video length.

A stage is a dataclass whose fields are its configuration, with a stable ``name`` (a class
variable) and the methods the runner calls: ``setup()`` once per worker to load heavy
resources (models), ``process(chunk) -> chunk`` once per chunk in order, ``teardown()`` once
per worker, and, where a stage writes per-video files (:class:`VideoOutputStage`),
``finish()`` once per video after its last chunk (returns ``{output name: path}``). Stages
attach their results to ``chunk.artifacts`` under documented keys and return the chunk. A
stage never prints, never decides skipping and never touches global state; the runner in
``pipeline/`` owns ordering, progress, error policy and the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class FrameChunk:
    """Consecutive decoded frames of one video plus what stages computed from them.

    Attributes:
        video_id: stable identifier of the video (its path relative to the input root).
        frames: ``(T, H, W, 3)`` uint8 RGB, C-contiguous.
        indices: ``(T,)`` int64 index of each frame in the decoded (post stride / fps
            resampling) sequence, starting at 0 for the first decoded frame of the video.
        pts: ``(T,)`` float64 presentation timestamps in seconds, read from the stream.
        overlap: how many leading frames repeat the tail of the previous chunk
            (0 for the first chunk).
        is_last: True for the final chunk of the video.
        artifacts: stage outputs keyed by name (see each stage's docstring).
    """

    video_id: str
    frames: np.ndarray
    indices: np.ndarray
    pts: np.ndarray
    overlap: int = 0
    is_last: bool = False
    artifacts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be (T, H, W, 3) uint8 RGB, got {self.frames.shape} {self.frames.dtype}"
            )
        if len(self.indices) != len(self.frames) or len(self.pts) != len(self.frames):
            raise ValueError(
                f"indices ({len(self.indices)}) and pts ({len(self.pts)}) must match "
                f"the number of frames ({len(self.frames)})"
            )

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


@dataclass
class VideoOutputStage:
    """Base of the stages that write one video's files into ``out_dir`` (a path; created by
    :meth:`setup`). Subclasses that define ``__post_init__`` call this one first."""

    out_dir: Path

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)

    def setup(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
