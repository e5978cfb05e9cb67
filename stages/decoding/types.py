"""Public value types of the decoding stage: options, stream facts, decoded frames, errors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BACKENDS: tuple[str, ...] = ("decord", "pyav", "opencv")
"""Names accepted by :attr:`DecodeOptions.backend`."""


class DecodeError(Exception):
    """A video cannot be decoded at all.

    Raised for a missing or empty file, a file that is not a media container, a container without
    a video stream, or a video stream from which not a single frame decodes. Problems that appear
    after some frames decoded are not errors: they end the stream early and are recorded in
    :attr:`VideoReader.warnings`.

    Attributes:
        path: the path as given to :func:`open_video`.
        reason: short human-readable cause, e.g. ``"file not found"``.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot decode '{path}': {reason}")

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, str]]:
        # Keep the two-argument constructor picklable (errors cross process boundaries).
        return (type(self), (self.path, self.reason))


def _is_finite_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True)
class DecodeOptions:
    """What to decode and how.

    Frame selection is applied in this order: time range, then ``target_fps`` resampling, then
    ``stride``. All times are in seconds on the same clock as :attr:`DecodedFrame.pts` (the
    stream's own timestamps, relative to the stream start).

    Attributes:
        backend: ``"pyav"`` (default), ``"decord"`` (falls back to PyAV where it cannot decode
            the file correctly or its unbounded read-ahead could hold more than
            ``backend_decord.MAX_READ_AHEAD_BYTES``) or ``"opencv"``.
        stride: keep every ``stride``-th frame of the selection (1 keeps all).
        target_fps: resample by timestamp. Target times are ``t0 + i / target_fps``, ``t0``
            being the pts of the first frame in the time range, up to (excluding) the range's
            stop time: ``end`` when frames continue past it, otherwise the end of the last frame
            (its pts plus the interval before it). For each target time the last frame whose pts
            is ``<=`` it is kept. A frame is kept at most once: a target rate above the source
            rate delivers every frame, never duplicates, and nothing past the end is invented.
        start: keep frames with ``pts >= start`` (``None``: from the beginning).
        end: keep frames with ``pts < end`` (``None``: to the end). The range is half-open.
        max_side: if the delivered frame's longer side exceeds this, shrink it (``cv2.INTER_AREA``,
            aspect ratio kept, each side rounded to the nearest integer, at least 1). Frames are
            never enlarged. Sizes need not be even.
        threads: decoder threads (0: library default). Ignored by the OpenCV backend.
        frames_fps: frame rate assigned to a folder of image frames (pts = index / fps).
    """

    backend: str = "pyav"
    stride: int = 1
    target_fps: float | None = None
    start: float | None = None
    end: float | None = None
    max_side: int | None = None
    threads: int = 0
    frames_fps: float = 25.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.stride, int) or isinstance(self.stride, bool) or self.stride < 1:
            raise ValueError(f"stride must be an int >= 1, got {self.stride!r}")
        if self.target_fps is not None and (
            not _is_finite_number(self.target_fps) or self.target_fps <= 0
        ):
            raise ValueError(f"target_fps must be a finite number > 0, got {self.target_fps!r}")
        if self.start is not None and (not _is_finite_number(self.start) or self.start < 0):
            raise ValueError(f"start must be a finite number >= 0 (seconds), got {self.start!r}")
        if self.end is not None and (not _is_finite_number(self.end) or self.end <= 0):
            raise ValueError(f"end must be a finite number > 0 (seconds), got {self.end!r}")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be < end ({self.end})")
        if self.max_side is not None and (
            not isinstance(self.max_side, int)
            or isinstance(self.max_side, bool)
            or self.max_side < 1
        ):
            raise ValueError(f"max_side must be an int >= 1 or None, got {self.max_side!r}")
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 0:
            raise ValueError(f"threads must be an int >= 0, got {self.threads!r}")


@dataclass(frozen=True)
class VideoInfo:
    """Facts about the video stream being decoded, read with PyAV whatever the backend.

    Attributes:
        path: the path as given to :func:`open_video`.
        width, height: size of the delivered frames (after rotation and ``max_side``).
        source_width, source_height: coded frame size as stored in the stream (before rotation).
        rotation: clockwise rotation in degrees (0, 90, 180 or 270) applied to stored frames to
            display them upright, from the stream's display matrix or, failing that, a legacy
            ``rotate`` tag. Same convention as the ``rotate`` tag and OpenCV's
            ``CAP_PROP_ORIENTATION_META``. Other angles are snapped to the nearest quarter turn;
            mirroring in a display matrix is not applied.
        fps: average frame rate declared by the stream (0.0 if unknown); a hint, not used for pts.
        header_frame_count: frame count declared by the container, ``None`` if absent. A hint only:
            the real count is the number of frames actually decoded.
        codec: decoder name, e.g. ``"h264"``.
        pix_fmt: stored pixel format, e.g. ``"yuv420p"``, ``"yuvj420p"``, ``"gray"``.
        duration: stream (or container) duration in seconds, ``None`` if unknown.
        stream_start: absolute timestamp (seconds) of the stream start that is subtracted from
            every frame's presentation time to give :attr:`DecodedFrame.pts`.
        backend: the backend actually used (may differ from the requested one after a fallback).
    """

    path: str
    width: int
    height: int
    source_width: int
    source_height: int
    rotation: int
    fps: float
    header_frame_count: int | None
    codec: str
    pix_fmt: str
    duration: float | None
    stream_start: float
    backend: str


@dataclass(frozen=True)
class DecodedFrame:
    """One delivered frame.

    Attributes:
        index: position in the delivered sequence (after time range / fps / stride selection),
            starting at 0.
        pts: presentation time in seconds read from the stream's timestamps, relative to the
            stream start (:attr:`VideoInfo.stream_start`), snapped to the stream time base so that
            all backends report bit-identical values. Not ``index / fps``.
        rgb: ``(H, W, 3)`` uint8 RGB, C-contiguous, values 0-255, upright (rotation applied).
    """

    index: int
    pts: float
    rgb: np.ndarray
