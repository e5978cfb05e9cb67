"""Read a video's stream facts with PyAV and turn failures into :class:`DecodeError`.

The probe opens the container, picks the best video stream (as FFmpeg's ``av_find_best_stream``
does, which decord and OpenCV also use) and decodes its first frame: that gives the real coded
size, the display rotation and the proof that at least one frame decodes. Every backend relies on
the probe, so the metadata in :class:`VideoInfo` is identical whichever backend decodes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction

import av

from stages.decoding.frame_clock import LOOKAHEAD, FrameClock
from stages.decoding.types import DecodeError, StreamHeader

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamClock:
    """Converts between stream ticks and seconds relative to the stream start.

    Attributes:
        time_base: seconds per tick of the stream's timestamps.
        start_ticks: absolute pts (ticks) of the stream start, subtracted from every pts.
    """

    time_base: Fraction
    start_ticks: int

    @property
    def start_seconds(self) -> float:
        return float(self.start_ticks * self.time_base)

    def seconds(self, pts_ticks: int) -> float:
        """Seconds relative to the stream start for an absolute pts in ticks (exact, float64)."""
        return float((pts_ticks - self.start_ticks) * self.time_base)

    def snap(self, relative_seconds: float) -> float:
        """Round a relative time (from another decoder) to the nearest tick, as :meth:`seconds`."""
        ticks = round(Fraction(relative_seconds) / self.time_base)
        return float(ticks * self.time_base)


@dataclass(frozen=True)
class StreamProbe(StreamHeader):
    """What the probe learned: the stream's header, which stream it is, its clock, the
    presentation time of its first frame (seconds from the stream start) and, where the
    container states it for the video track alone (Matroska's per-track ``DURATION`` tag), the
    track's duration in seconds (``track_duration``; also the segment's duration of a
    Matroska file that holds the video stream alone; None elsewhere) and the container format
    (FFmpeg's demuxer name, ``container_format``)."""

    path: str
    stream_index: int
    clock: StreamClock
    first_pts: float
    track_duration: float | None = None
    container_format: str = ""


def _tag_seconds(metadata: dict[str, str], key: str) -> float | None:
    """An ``HH:MM:SS.fraction`` tag (any case) in seconds, or None."""
    for name, value in metadata.items():
        if name.lower() == key.lower():
            try:
                hours, minutes, seconds = value.split(":")
                return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            except ValueError:
                return None
    return None


def _normalise_rotation(clockwise_degrees: float, path: str) -> int:
    snapped = (round(clockwise_degrees / 90.0) * 90) % 360
    off_by = abs((clockwise_degrees - snapped + 180.0) % 360.0 - 180.0)
    if off_by > 1.0:
        logger.warning(
            "%s: display rotation %.1f deg is not a multiple of 90; using %d",
            path,
            clockwise_degrees,
            snapped,
        )
    return snapped


def _tag_rotation(metadata: dict[str, str]) -> float | None:
    """Clockwise degrees from a legacy ``rotate`` tag (any case), or None."""
    for key, value in metadata.items():
        if key.lower() == "rotate":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _open_reason(exc: BaseException, path: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "empty file"
    if isinstance(exc, EOFError):
        return "the file ends before its first frame (no frame stored, or cut short)"
    if _mp4_without_index(path):
        return "an MP4/MOV file without its index (moov box): a recording or download cut short"
    detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"not a readable media file ({detail})"


def _mp4_without_index(path: str) -> bool:
    """Whether ``path`` starts like an ISO media file (``ftyp`` box) but its top-level boxes,
    read up to where the file ends, hold no ``moov``: the index a muxer writes last."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            position, names = 0, []
            while position + 8 <= size and len(names) < 10_000:
                handle.seek(position)
                header = handle.read(16)
                length, name = int.from_bytes(header[:4], "big"), header[4:8]
                if length == 1 and len(header) == 16:  # 64-bit size follows
                    length = int.from_bytes(header[8:16], "big")
                names.append(name)
                if length < 8:  # 0: "to the end of the file"; others are damage
                    break
                position += length
    except OSError:
        return False
    return bool(names) and names[0] == b"ftyp" and b"moov" not in names


def probe_video(path: str) -> StreamProbe:
    """Open ``path`` with PyAV, check it holds a decodable video stream and describe it.

    Raises:
        DecodeError: missing/empty/unreadable file, no video stream, no decodable frame.
    """
    if not os.path.exists(path):
        raise DecodeError(path, "file not found")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file")
    try:
        container = av.open(path, metadata_errors="replace")
    except Exception as exc:  # PyAV raises many types here (FFmpegError, IndexError, ...)
        raise DecodeError(path, _open_reason(exc, path)) from exc
    try:
        return _probe_container(container, path)
    finally:
        container.close()


def _probe_container(container: av.container.InputContainer, path: str) -> StreamProbe:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise DecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.best("video") or container.streams.video[0]
    time_base = stream.time_base or Fraction(1, 1_000_000)

    first = None
    error: str | None = None
    frame_clock = FrameClock()  # the first frame's pts as the backends will time it
    try:
        for frame in container.decode(stream):
            frame_clock.observe(frame.pts, frame.dts)
            if first is None:
                first = frame
            if frame_clock.observed >= LOOKAHEAD:
                break
    except Exception as exc:  # decoder or demuxer failure (before the first frame: fatal)
        error = str(exc) or type(exc).__name__
    if first is None:
        suffix = f" ({error})" if error else ""
        raise DecodeError(path, f"no decodable frames{suffix}")
    try:
        first.reformat(format="rgb24")
    except Exception as exc:
        raise DecodeError(path, f"cannot convert {first.format.name} to RGB ({exc})") from exc

    first_ticks = frame_clock.ticks(first.pts, first.dts)
    if stream.start_time is not None:
        start_ticks = int(stream.start_time)
    elif first_ticks is not None:
        start_ticks = first_ticks
    else:
        start_ticks = 0
    clock = StreamClock(time_base=time_base, start_ticks=start_ticks)

    matrix_ccw = first.rotation  # counter-clockwise degrees from the display matrix, 0 if none
    if matrix_ccw:
        rotation = _normalise_rotation(-float(matrix_ccw), path)
    else:
        tag = _tag_rotation(dict(stream.metadata))
        rotation = _normalise_rotation(tag, path) if tag else 0

    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.duration is not None:
        duration: float | None = float(stream.duration * time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
        if "matroska" in container.format.name:  # the segment's end, counted from 0
            duration = max(0.0, duration - clock.start_seconds)
    else:
        duration = None
    codec_ctx = stream.codec_context
    pix_fmt = codec_ctx.pix_fmt or first.format.name
    return StreamProbe(
        path=path,
        stream_index=stream.index,
        source_width=int(first.width),
        source_height=int(first.height),
        rotation=rotation,
        fps=fps,
        header_frame_count=int(stream.frames) if stream.frames else None,
        codec=codec_ctx.name,
        pix_fmt=str(pix_fmt),
        duration=duration,
        clock=clock,
        first_pts=clock.seconds(first_ticks) if first_ticks is not None else 0.0,
        track_duration=_track_duration(container, stream),
        container_format=container.format.name,
    )


def _track_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """The video track's duration where Matroska states it: its ``DURATION`` tag, which FFmpeg
    writes when it closes the file, else the segment's duration when the file holds this
    stream alone (a recording killed before it was closed may have declared one up front)."""
    tagged = _tag_seconds(dict(stream.metadata), "DURATION")
    if tagged is not None or "matroska" not in container.format.name:
        return tagged
    if len(container.streams) == 1 and container.duration is not None:
        return container.duration / 1_000_000
    return None
