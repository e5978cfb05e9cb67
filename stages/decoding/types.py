"""Public value types of the decoding stage: options, stream facts, decoded frames, errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from types import TracebackType
from typing import TypeVar

import numpy as np

from ..settings import BACKENDS, DecodeConfig

__all__ = [
    "BACKENDS",
    "ClosingReader",
    "DecodeConfig",
    "DecodeError",
    "DecodedFrame",
    "StreamHeader",
    "VideoInfo",
]

_Reader = TypeVar("_Reader", bound="ClosingReader")


class DecodeError(Exception):
    """A video cannot be decoded at all.

    Raised by :func:`open_video` for a missing or empty file, a file that is not a media
    container, a container without a video stream, or a video stream from which not a single
    frame decodes; and by the frame iteration, after the last good frame, for a stream cut short
    by a fault (:meth:`incomplete`) unless ``DecodeConfig.keep_incomplete`` is set.
    Problems the decoder works around (concealed errors, missing timestamps) are warnings in
    :attr:`VideoReader.warnings`.

    Attributes:
        path: the path as given to :func:`open_video`.
        reason: short human-readable cause, e.g. ``"file not found"``.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot decode '{path}': {reason}")

    @classmethod
    def incomplete(cls, path: str, fault: str, delivered: int, declared: int | None) -> DecodeError:
        """The error for a stream that a ``fault`` ended after ``delivered`` frames (of the
        ``declared`` ones the header announces, when it does)."""
        count = f"{delivered} frame(s) decoded" + (
            f" of the {declared} the header declares" if declared else ""
        )
        return cls(
            path, f"incomplete video: {fault}; {count} (decode.keep_incomplete=true keeps them)"
        )

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, str]]:
        # Keep the two-argument constructor picklable (errors cross process boundaries).
        return (type(self), (self.path, self.reason))


class ClosingReader:
    """What every reader shares: :meth:`frames` once, and ``with open_video(...) as reader``
    closing it at the end of the block. Subclasses define ``_iterate()`` (the frames) and
    :meth:`close` (safe to call twice, sets ``_closed``)."""

    _closed = False
    _started = False

    def frames(self) -> Iterator[DecodedFrame]:
        """Iterate the selected frames as :class:`DecodedFrame` (upright, resized, RGB uint8).

        Raises:
            RuntimeError: when called a second time or after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("reader is closed")
        if self._started:
            raise RuntimeError("frames() can be called only once per reader")
        self._started = True
        return self._iterate()

    def __iter__(self) -> Iterator[DecodedFrame]:
        return self.frames()

    def _iterate(self) -> Iterator[DecodedFrame]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Reader) -> _Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class StreamHeader:
    """What a video stream declares about itself, before any decoding choice is made.

    Attributes:
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
        duration: the stream's length in seconds (its own duration, else the container's;
            Matroska's, which ends the segment, less the stream's start), ``None`` if unknown.
    """

    source_width: int
    source_height: int
    rotation: int
    fps: float
    header_frame_count: int | None
    codec: str
    pix_fmt: str
    duration: float | None

    def header(self) -> dict[str, object]:
        """The :class:`StreamHeader` fields of this object, by name (to build a subclass)."""
        return {f.name: getattr(self, f.name) for f in fields(StreamHeader)}


@dataclass(frozen=True)
class VideoInfo(StreamHeader):
    """Facts about the video stream being decoded, read with PyAV whatever the backend: the
    :class:`StreamHeader` fields, and

    Attributes:
        path: the path as given to :func:`open_video`.
        width, height: size of the delivered frames (after rotation, ``max_side`` and
            ``short_side``).
        stream_start: absolute timestamp (seconds) of the stream start that is subtracted from
            every frame's presentation time to give :attr:`DecodedFrame.pts`.
        backend: the backend actually used (may differ from the requested one after a fallback).
    """

    path: str
    width: int
    height: int
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
