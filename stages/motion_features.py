"""Per-clip motion features: how a video is cut into clips, and what one clip's row holds.

A clip is ``T`` consecutive decoded frames (:func:`clip_windows`). The motion-feature stage
(:mod:`stages.clip_features`) buffers the frames, per-frame feature maps and per-pair flows of
one clip and calls :func:`clip_features` on them, which runs

- :func:`~stages.flow_statistics.flow_statistics` on the clip's ``T - 1`` flow fields:
  magnitude statistics, a histogram of oriented flow (HOF) and motion boundary histograms
  (MBH); conventions (flow layout, orientation bins, derivatives) are documented there;
- :func:`~stages.motionsqueeze_maps.motionsqueeze_maps` on the clip's ``T`` per-frame feature
  maps (RAFT's feature-encoder output, or :func:`~stages.frame_descriptor.frame_descriptor`
  with the classical backend), then :func:`~stages.motionsqueeze_maps.motionsqueeze_statistics`
  on the maps;

and :func:`clip_key` gives the leading columns. Rows and maps go to disk through
:mod:`stages.feature_io`. The public names of those four modules are importable from here
too.

Columns (``n_bins = 8``; names are stable, see :func:`flow_feature_columns` and
:func:`motionsqueeze_feature_columns`)
-----------------------------------------------------------------------------------------------
==========================  =====================================================================
column                      meaning
==========================  =====================================================================
``video``                   video identifier (path relative to the input root)
``clip_index``              0-based index of the clip in the video
``start_frame``             first frame of the clip (index in the decoded sequence)
``end_frame``               one past the last frame of the clip (exclusive)
``start_time``              presentation time of the first frame, seconds
``end_time``                presentation time of the *last* frame (``end_frame - 1``), seconds
``flow_mag_mean``           mean flow magnitude over all pixels of all pairs, px/frame
``flow_mag_std``            standard deviation of the magnitude, px/frame
``flow_mag_p10`` .. p99     10th, 50th, 90th, 99th percentiles of the magnitude, px/frame
``flow_mag_max``            largest magnitude, px/frame
``moving_fraction``         fraction of pixels with magnitude ``> static_threshold``
``flow_mean_x``             mean x component (+ = right), px/frame; global/camera pan
``flow_mean_y``             mean y component (+ = down), px/frame
``flow_coherence``          ``|mean flow vector| / flow_mag_mean`` in ``[0, 1]``: 1 = everything
                            moves the same way (pan), 0 = motions cancel (zoom, rotation,
                            opposite movers) or nothing moves
``flow_div_mean``           mean divergence ``du/dx + dv/dy``, 1/frame; > 0 expansion (zoom in)
``flow_curl_mean``          mean curl ``dv/dx - du/dy``, 1/frame; > 0 clockwise on screen
``hof_00`` .. ``hof_07``    HOF orientation bins: moving pixels vote with their magnitude (px)
``hof_static``              HOF "no motion" bin: static pixels vote 1 each; HOF bins sum to 1
``mbhx_00`` .. ``mbhx_07``  orientation histogram of the gradient of u (magnitude-weighted);
                            sums to ~1 with motion boundaries, ~0 without
``mbhx_mag_mean``           mean ``|grad u|``, 1/frame (how much horizontal-motion boundary)
``mbhy_00`` .. ``mbhy_07``  orientation histogram of the gradient of v
``mbhy_mag_mean``           mean ``|grad v|``, 1/frame
``ms_disp_mean_x``          mean MotionSqueeze x displacement, window-radius units (``[-1, 1]``)
``ms_disp_mean_y``          mean y displacement (+ = down), window-radius units
``ms_disp_mag_mean``        mean displacement length, window-radius units (``[0, sqrt 2]``)
``ms_disp_mean_x_px``       ``ms_disp_mean_x * radius * dilation``: feature-grid cells per frame
``ms_disp_mean_y_px``       ``ms_disp_mean_y * radius * dilation``: feature-grid cells per frame
``ms_disp_mag_mean_px``     mean displacement length in feature-grid cells per frame
``ms_conf_mean``            mean matching confidence (best cosine similarity, ``[0, 1]``)
``ms_conf_p10``             10th percentile of the confidence
``ms_conf_p50``             median confidence
``ms_dir_00`` .. ``07``     orientation histogram of the displacement, weighted by confidence
``ms_dir_static``           confidence mass of cells moving ``<= ms_static_threshold`` cells;
                            the ``ms_dir`` bins sum to 1 (0 when all confidences are 0)
==========================  =====================================================================

One feature-grid cell is ``stride`` frame pixels (8 for RAFT's encoder and the default
:func:`frame_descriptor`), so ``*_px`` columns times 8 are frame pixels per frame.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from torch import Tensor

from models.motionsqueeze import SoftArgmaxWindow

from .feature_io import (
    LEADING_COLUMNS,
    ClipMaps,
    features_table,
    read_clip_maps,
    read_table,
    write_clip_maps,
    write_table,
)
from .flow_statistics import (
    DEFAULT_MBH_EPS,
    DEFAULT_N_BINS,
    DEFAULT_STATIC_THRESHOLD,
    flow_feature_columns,
    flow_stack_to_numpy,
    flow_statistics,
)
from .frame_descriptor import frame_descriptor
from .motionsqueeze_maps import (
    DEFAULT_MS_STATIC_THRESHOLD,
    MotionMaps,
    motionsqueeze_feature_columns,
    motionsqueeze_maps,
    motionsqueeze_statistics,
)
from .settings import FeaturesConfig

__all__ = [
    "DEFAULT_CLIP_LEN",
    "DEFAULT_MBH_EPS",
    "DEFAULT_MS_STATIC_THRESHOLD",
    "DEFAULT_N_BINS",
    "DEFAULT_STATIC_THRESHOLD",
    "LEADING_COLUMNS",
    "ClipMaps",
    "MotionMaps",
    "clip_features",
    "clip_key",
    "clip_windows",
    "features_table",
    "flow_feature_columns",
    "flow_stack_to_numpy",
    "flow_statistics",
    "frame_descriptor",
    "motionsqueeze_feature_columns",
    "motionsqueeze_maps",
    "motionsqueeze_statistics",
    "read_clip_maps",
    "read_table",
    "write_clip_maps",
    "write_table",
]

DEFAULT_CLIP_LEN: int = FeaturesConfig.clip_len
"""Frames per clip: the ``T = 8`` frames per clip of TSN/TSM/MotionSqueeze and 8x8 SlowFast."""


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------


def clip_windows(
    num_frames: int,
    clip_len: int = DEFAULT_CLIP_LEN,
    stride: int | None = None,
    *,
    drop_tail: bool = False,
) -> list[tuple[int, int]]:
    """Split a video of ``num_frames`` decoded frames into clips ``[start, end)``.

    A clip of ``T`` frames holds the ``T - 1`` consecutive pairs ``(t, t + 1)``,
    ``start <= t < end - 1``. Windows start at ``0, stride, 2 * stride, ...`` while a full clip
    fits. The default stride is ``clip_len - 1``: consecutive clips share one frame, so their
    pairs partition the pairs of the video (every flow field is counted in exactly one clip;
    with ``stride = clip_len`` the pair joining two clips would belong to neither, 1 pair in
    ``clip_len``).

    Why 8: TSN/TSM, and MotionSqueeze (built on TSM), feed ``T = 8`` frames per clip, and so
    does the 8x8 SlowFast recipe; one row per 8 frames lines up with what those networks see.
    Those models space their frames (one per segment, or every 8th frame); here spacing is the
    decoder's frame stride, because flow and MotionSqueeze pairs are always consecutive
    *decoded* frames: decode every 8th frame and keep ``clip_len=8`` for the 8x8 layout.
    I3D-style clips are ``clip_len=16`` or ``32`` (with ``stride`` 15 / 31, or 16 / 32 for
    non-overlapping clips).

    Edge cases: fewer than 2 frames give no clip (no pair); a video shorter than ``clip_len``
    gives one clip of all its frames (even with ``drop_tail``); frames left after the last full
    clip form a final shorter clip when it holds at least one pair and ``drop_tail`` is False
    (set ``drop_tail`` when every clip must have exactly ``clip_len`` frames).

    Args:
        num_frames: frames in the decoded sequence (>= 0).
        clip_len: frames per clip ``T`` (>= 2).
        stride: frames between clip starts (>= 1); None for ``clip_len - 1``.
        drop_tail: drop the final shorter clip.

    Returns:
        ``(start, end)`` frame indices, ``end`` exclusive, in increasing ``start`` order.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if clip_len < 2:
        raise ValueError(f"clip_len must be >= 2 (a clip needs one pair), got {clip_len}")
    step = clip_len - 1 if stride is None else stride
    if step < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if num_frames < 2:
        return []
    if num_frames <= clip_len:
        return [(0, num_frames)]
    windows: list[tuple[int, int]] = []
    start = 0
    while start + clip_len <= num_frames:
        windows.append((start, start + clip_len))
        start += step
    if not drop_tail and windows[-1][1] < num_frames and num_frames - start >= 2:
        windows.append((start, num_frames))
    return windows


def clip_key(
    video: str,
    clip_index: int,
    start_frame: int,
    end_frame: int,
    clip_pts: npt.ArrayLike,
) -> dict[str, str | int | float]:
    """The leading columns of one clip's row (:data:`LEADING_COLUMNS`, in order).

    Args:
        video: video identifier.
        clip_index: 0-based clip number within the video.
        start_frame: first frame (decoded-sequence index).
        end_frame: one past the last frame.
        clip_pts: ``(end_frame - start_frame,)`` presentation times of the clip's frames, s.

    Returns:
        ``{"video", "clip_index", "start_frame", "end_frame", "start_time", "end_time"}`` with
        ``start_time = clip_pts[0]`` and ``end_time = clip_pts[-1]`` (the last frame's time).
    """
    pts = np.asarray(clip_pts, dtype=np.float64).reshape(-1)
    if end_frame - start_frame < 1 or len(pts) != end_frame - start_frame:
        raise ValueError(
            f"clip [{start_frame}, {end_frame}) needs {end_frame - start_frame} timestamps, "
            f"got {len(pts)}"
        )
    return {
        "video": str(video),
        "clip_index": int(clip_index),
        "start_frame": int(start_frame),
        "end_frame": int(end_frame),
        "start_time": float(pts[0]),
        "end_time": float(pts[-1]),
    }


# --------------------------------------------------------------------------------------------
# Per-clip bundle
# --------------------------------------------------------------------------------------------


def clip_features(
    config: FeaturesConfig,
    *,
    flows: npt.ArrayLike | None = None,
    features: Tensor | None = None,
) -> tuple[dict[str, float], MotionMaps | None]:
    """Feature columns (and MotionSqueeze maps) of one clip.

    Args:
        config: the ``features`` section (:class:`stages.settings.FeaturesConfig`): bins,
            thresholds and the MotionSqueeze window; the rest are the defaults of
            :func:`flow_statistics`, :func:`motionsqueeze_maps` and
            :func:`motionsqueeze_statistics`.
        flows: ``(T-1, H, W, 2)`` flow of the clip, or None to skip the flow columns.
        features: ``(T, C, h, w)`` feature maps of the clip (encoder or
            :func:`frame_descriptor`), or None to skip the MotionSqueeze columns.

    Returns:
        Ordered columns (flow columns then MotionSqueeze columns) and the maps (None without
        ``features``).
    """
    columns: dict[str, float] = {}
    if flows is not None:
        columns.update(
            flow_statistics(
                flows,
                n_bins=config.hof_bins,
                static_threshold=config.static_threshold,
            )
        )
    maps = None
    if features is not None:
        window = SoftArgmaxWindow(
            patch_size=config.patch_size, sigma=config.sigma, temperature=config.temperature
        )
        maps = motionsqueeze_maps(features, window)
        columns.update(
            motionsqueeze_statistics(
                maps.displacement,
                maps.confidence,
                patch_size=config.patch_size,
                n_bins=config.hof_bins,
            )
        )
    return columns, maps
