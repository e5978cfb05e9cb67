"""The motion-feature stage: one row of features (and optional spatial maps) per clip.

Consumes the flow stage's ``pairs``, ``flow_fw`` and, for network backends, ``features`` (the
per-frame feature-encoder maps, so no second encoder pass). With the classical backend the
frames' :func:`stages.frame_descriptor.frame_descriptor` stands in for the encoder maps.

Clips (:func:`stages.motion_features.clip_windows`) do not line up with chunks: frames and
flows are buffered until a clip is complete and dropped once no later clip needs them, so
memory is bounded by the clip length. For each clip ``c`` it writes
``clips/{c:05d}.npz`` (MotionSqueeze ``displacement`` ``(T-1, 2, h, w)`` and ``confidence``
``(T-1, 1, h, w)``, float16 by default) and collects a table row; :meth:`finish` writes the
video's table ``clips.parquet`` (or ``clips.csv``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from .base import FrameChunk, VideoOutputStage
from .feature_io import features_table, write_clip_maps, write_table
from .flow_statistics import flow_stack_to_numpy
from .frame_descriptor import frame_descriptor
from .motion_features import clip_features, clip_key, clip_windows
from .settings import FeaturesConfig

logger = logging.getLogger(__name__)


@dataclass
class ClipFeatureStage(VideoOutputStage):
    """Per-clip motion features for one video.

    Attributes:
        out_dir: the video's output folder.
        video_id: the ``video`` column of every row.
        config: the ``features`` section (:class:`stages.settings.FeaturesConfig`): clip
            windows, feature parameters, ``maps`` (write each clip's MotionSqueeze maps as
            ``clips/{c:05d}.npz``, in ``maps_dtype``) and ``table_format``.
    """

    name: ClassVar[str] = "features"

    video_id: str
    config: FeaturesConfig = field(default_factory=FeaturesConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._features: dict[int, torch.Tensor] = {}
        self._flows: dict[int, np.ndarray] = {}
        self._pts: dict[int, float] = {}
        self._rows: list[dict] = []
        self._next_start = 0
        self._seen = 0
        self.source = "encoder"

    def process(self, chunk: FrameChunk) -> FrameChunk:
        indices = [int(i) for i in chunk.indices]
        maps = chunk.artifacts.get("features")
        if maps is None:
            self.source = "descriptor"
            new = list(range(chunk.overlap, chunk.num_frames))
            if new:
                maps_new = frame_descriptor(chunk.frames[new])
                for n, t in enumerate(new):
                    self._features[indices[t]] = maps_new[n]
        else:
            for t, index in enumerate(indices):
                self._features.setdefault(index, maps[t])
        for t, index in enumerate(indices):
            self._pts[index] = float(chunk.pts[t])
        flows = flow_stack_to_numpy(chunk.artifacts["flow_fw"])  # (P, H, W, 2)
        for (a, _), flow in zip(chunk.artifacts["pairs"], flows, strict=True):
            self._flows[int(a)] = flow
        self._seen = max(self._seen, indices[-1] + 1)
        self._emit_complete(final=chunk.is_last)
        return chunk

    def _emit_complete(self, *, final: bool) -> None:
        s = self.config
        step = s.clip_len - 1 if s.clip_stride is None else s.clip_stride
        while self._next_start + s.clip_len <= self._seen:
            self._emit(self._next_start, self._next_start + s.clip_len)
            self._next_start += step
        if final:
            for start, end in clip_windows(
                self._seen, s.clip_len, s.clip_stride, drop_tail=s.drop_tail
            ):
                if start >= self._next_start:
                    self._emit(start, end)
            self._next_start = self._seen
        self._forget_before(self._next_start)

    def _emit(self, start: int, end: int) -> None:
        clip_index = len(self._rows)
        flows = np.stack([self._flows[t] for t in range(start, end - 1)])
        features = torch.stack([self._features[t] for t in range(start, end)])
        columns, clip_maps = clip_features(self.config, flows=flows, features=features)
        row = clip_key(
            self.video_id, clip_index, start, end, [self._pts[t] for t in range(start, end)]
        )
        row.update(columns)
        self._rows.append(row)
        if self.config.maps and clip_maps is not None:
            (self.out_dir / "clips").mkdir(parents=True, exist_ok=True)
            write_clip_maps(
                self.out_dir / "clips" / f"{clip_index:05d}.npz",
                displacement=clip_maps.displacement.numpy(),
                confidence=clip_maps.confidence.numpy(),
                dtype=np.dtype(self.config.maps_dtype),
                frames=np.arange(start, end),
            )

    def _forget_before(self, first_needed: int) -> None:
        for store in (self._features, self._flows, self._pts):
            for index in [i for i in store if i < first_needed]:
                del store[index]

    def finish(self) -> dict[str, str]:
        suffix = "csv" if self.config.table_format == "csv" else "parquet"
        path = self.out_dir / f"clips.{suffix}"
        write_table(features_table(self._rows), path)
        outputs = {"features_table": str(path)}
        if self.config.maps and (self.out_dir / "clips").is_dir():
            outputs["features_maps"] = str(self.out_dir / "clips")
        return outputs

    def teardown(self) -> None:
        self._features.clear()
        self._flows.clear()
