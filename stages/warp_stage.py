"""The warp stage: warped frames, occlusion / motion-boundary masks and consistency metrics.

For every pair ``(t, t + k)`` of a chunk (flow stage artifacts ``pairs``, ``flow_fw`` and, for
occlusion, ``flow_bw``) it computes ``warped_t(p) = frame_{t+k}(p + flow(p))`` and the metrics
of :func:`stages.consistency.batch_metrics`, and writes (``t`` zero-padded to 6 digits):

- ``warped/{t}.png`` and ``warped.mp4`` (with the source frame ``t`` on the left when
  ``with_source``): what frame ``t`` looks like rebuilt from frame ``t + k``; each panel of
  the video is labelled (``frame t``, ``frame t+k warped to t``); black where ``p + flow(p)``
  leaves the frame;
- ``occlusion/{t}.png`` (255 = occluded or leaving the frame) and ``boundaries/{t}.png``
  (255 = motion boundary);
- ``consistency.csv`` / ``consistency.parquet``: one row per pair; ``consistency.png``: the
  per-pair warping error over time with the worst pairs marked.

:func:`pair_products` is shared with the ``consistency`` command, which applies a source
video's flow to a processed copy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from models.atomic_files import atomic_path, write_bytes_atomic

from .base import FrameChunk, VideoOutputStage
from .consistency import (
    FlowMasks,
    batch_metrics,
    flow_masks,
    plot_error_over_time,
    summarize_video,
)
from .flow_viz import caption_height, side_by_side, with_caption
from .image_io import write_image
from .settings import WarpConfig
from .streaming import Mp4Writer
from .warp import backward_warp

logger = logging.getLogger(__name__)


def frame_tensor(frames: np.ndarray, positions: list[int]) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 frames at ``positions`` -> ``(n, 3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(frames[positions]).permute(0, 3, 1, 2).float().div_(255.0)


@dataclass(frozen=True)
class PairProducts:
    """What the warp stage measures and draws for one pair ``(t, t + k)`` of a chunk.

    Attributes:
        row: the pair's metrics (:func:`stages.consistency.batch_metrics` keys) with
            ``frame_t``, ``frame_t_k`` and ``pts_t``.
        warped: ``(1, 3, H, W)`` float32 in [0, 1], frame ``t + k`` warped onto frame ``t``
            (border padding); ``inside``: ``(1, 1, H, W)`` bool, where ``p + flow(p)`` lies in
            the frame.
        masks: the pair's :class:`stages.consistency.FlowMasks`, ``(1, 1, H, W)`` each.
    """

    row: dict[str, float]
    warped: torch.Tensor
    inside: torch.Tensor
    masks: FlowMasks

    def picture(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 warped frame, black where ``p + flow(p)`` leaves the frame."""
        scaled = (self.warped[0] * 255.0).round_().clamp_(0, 255).mul_(self.inside[0])
        return scaled.to(torch.uint8).permute(1, 2, 0).numpy()


def pair_products(
    chunk: FrameChunk,
    frames: np.ndarray,
    config: WarpConfig,
    masks: Sequence[FlowMasks] | None = None,
) -> Iterator[PairProducts]:
    """Metrics, warped frame and masks of every pair of ``chunk``, one pair at a time, measured
    on ``frames`` (the chunk's own frames, or a processed copy aligned with them) with the
    chunk's flow and ``config``'s thresholds. ``masks``: one per pair, when the caller has
    them already (a processed copy is measured with the source's flow).

    Pair by pair, the dozen full-frame temporaries of the metrics stay in the CPU caches: a
    16-pair 768x432 chunk took about 2x longer as one batch.
    """
    local = {int(index): n for n, index in enumerate(chunk.indices)}
    unit = frame_tensor(frames, list(range(len(frames))))  # each frame converted once
    flow_fw = chunk.artifacts["flow_fw"]
    # backward flow written for its own sake (--backward) does not switch the test on
    flow_bw = chunk.artifacts.get("flow_bw") if config.occlusion else None
    for n, (a, b) in enumerate(chunk.artifacts["pairs"]):
        fw = flow_fw[n : n + 1]
        bw = None if flow_bw is None else flow_bw[n : n + 1]
        first = unit[local[int(a)] : local[int(a)] + 1]
        second = unit[local[int(b)] : local[int(b)] + 1]
        if masks is not None:
            pair_masks = masks[n]
            warped, inside = backward_warp(second, fw, padding="border")
        elif bw is not None and bw.dtype == second.dtype:
            # frame and backward flow share the sample points: one warp for both
            both, inside = backward_warp(torch.cat([second, bw], dim=1), fw, padding="border")
            warped = both[:, :-2]
            pair_masks = flow_masks(fw, bw, config, warped_bw=(both[:, -2:], inside))
        else:
            pair_masks = flow_masks(fw, bw, config)
            warped, inside = backward_warp(second, fw, padding="border")
        metrics = batch_metrics(
            first, second, fw, bw, config, masks=pair_masks, warped=(warped, inside)
        )
        row: dict[str, float] = {
            "frame_t": int(a),
            "frame_t_k": int(b),
            "pts_t": float(chunk.pts[local[int(a)]]),
        }
        row.update({key: float(value[0]) for key, value in metrics.items()})
        yield PairProducts(row, warped, inside, pair_masks)


def _mask_png(mask: torch.Tensor) -> np.ndarray:
    return (mask[0].numpy().astype(np.uint8)) * 255


@dataclass
class WarpStage(VideoOutputStage):
    """Warped frames, masks and per-pair consistency metrics for one video.

    Attributes:
        out_dir: the video's output folder.
        config: the ``warp`` section: ``frames`` (write ``warped/*.png``), ``video``
            (``warped.mp4``), ``with_source`` (the source frame beside the warped one in
            ``warped.mp4``), ``masks`` (``occlusion/*.png``, which needs backward flow, and
            ``boundaries/*.png``) and the thresholds of the occlusion / motion-boundary tests.
        fps: frame rate of ``warped.mp4``.
    """

    name: ClassVar[str] = "warp"

    config: WarpConfig = field(default_factory=WarpConfig)
    fps: float = 25.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._rows: list[dict[str, float]] = []
        self._mp4: Mp4Writer | None = None

    def process(self, chunk: FrameChunk) -> FrameChunk:
        pairs = chunk.artifacts["pairs"]
        if len(pairs) == 0:
            return chunk
        local = {int(index): n for n, index in enumerate(chunk.indices)}
        products_per_pair = pair_products(chunk, chunk.frames, self.config)
        for (a, b), products in zip(pairs, products_per_pair, strict=True):
            self._rows.append(products.row)
            name = f"{int(a):06d}.png"
            picture = products.picture()
            if self.config.frames:
                write_image(self.out_dir / "warped" / name, picture)
            if self.config.video:
                if self._mp4 is None:
                    self._mp4 = Mp4Writer(self.out_dir / "warped.mp4", self.fps)
                self._mp4.write(self._preview(chunk.frames[local[int(a)]], picture, a, b))
            if self.config.masks and products.masks.occluded is not None:
                write_image(
                    self.out_dir / "occlusion" / name, _mask_png(products.masks.occluded[0])
                )
            if self.config.masks:
                write_image(
                    self.out_dir / "boundaries" / name, _mask_png(products.masks.boundaries[0])
                )
        return chunk

    def _preview(self, source: np.ndarray, warped: np.ndarray, a: int, b: int) -> np.ndarray:
        """One labelled frame of ``warped.mp4``: frame ``a`` | frame ``b`` warped onto it."""
        bar = caption_height(source.shape[0])
        rebuilt = with_caption(warped, f"frame {int(b)} warped to {int(a)}", bar)
        if not self.config.with_source:
            return rebuilt
        return side_by_side(with_caption(source, f"frame {int(a)}", bar), rebuilt)

    def finish(self) -> dict[str, str]:
        outputs: dict[str, str] = {}
        if self._mp4 is not None:
            outputs["warped_mp4"] = str(self._mp4.close())
            self._mp4 = None
        for folder in ("warped", "occlusion", "boundaries"):
            if (self.out_dir / folder).is_dir():
                outputs[folder] = str(self.out_dir / folder)
        table = pd.DataFrame(self._rows)
        write_bytes_atomic(
            self.out_dir / "consistency.csv", table.to_csv(index=False).encode(), durable=False
        )
        with atomic_path(self.out_dir / "consistency.parquet", durable=False) as temporary:
            table.to_parquet(temporary, index=False)
        outputs["consistency_table"] = str(self.out_dir / "consistency.parquet")
        outputs["consistency_csv"] = str(self.out_dir / "consistency.csv")
        if len(table):
            outputs["consistency_plot"] = str(
                plot_error_over_time(
                    table,
                    "e_warp",
                    self.out_dir / "consistency.png",
                    x="frame_t",
                    title="Warping error per frame pair",
                )
            )
        self.summary = summarize_video(table) if len(table) else {}
        return outputs

    def teardown(self) -> None:
        if self._mp4 is not None:
            self._mp4.abort()
            self._mp4 = None
