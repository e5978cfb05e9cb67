"""PyAV (FFmpeg) backend: the reference decoder and the fallback for the others."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from stages.decoding.backend_base import DecodeState
from stages.decoding.frame_clock import LOOKAHEAD, FrameClock
from stages.decoding.probe import StreamProbe
from stages.decoding.selection import EPS, select_frames
from stages.decoding.types import DecodeConfig

logger = logging.getLogger(__name__)

NO_SEEK_FORMATS = frozenset({"mpeg"})
"""FFmpeg demuxers whose frames get wrong timestamps after a seek: a ``start`` is reached by
decoding from the beginning."""


class PyAVBackend:
    """Decodes the stream's packets one by one and converts to ``rgb24`` with one reusable
    ``VideoReformatter`` (equivalent to ``frame.to_ndarray(format="rgb24")``, much faster).

    Conversion is FFmpeg's swscale, honouring the stream's colour range (``yuvj*`` full range)
    and colour matrix tags; gray and 10-bit formats come out as 8-bit RGB. Timestamps are the
    frames' own pts, or their dts where the pts are in decode order
    (:mod:`stages.decoding.frame_clock`). Frames the decoder flags as corrupt (errors it
    concealed) are delivered and listed in a warning; a stream that ends in a decoding error
    or inside a packet (a truncated file) is recorded as cut short
    (:meth:`DecodeState.cut_short`). A ``start`` time is reached by seeking to the keyframe
    before it; should the container seek past it, the file is reopened and decoded from the
    beginning instead. MPEG program streams (``.mpg``, ``.vob``) are always decoded from the
    beginning: after a seek FFmpeg guesses their frames' timestamps until the next keyframe,
    off by frames (:data:`NO_SEEK_FORMATS`).
    """

    name = "pyav"
    applied_rotation = 0

    def __init__(self, probe: StreamProbe, options: DecodeConfig, state: DecodeState) -> None:
        self._probe = probe
        self._state = state
        self._container, self._stream = self._open()

    def _open(self) -> tuple[av.container.InputContainer, av.VideoStream]:
        container = av.open(self._probe.path, metadata_errors="replace")
        stream = container.streams.video[0]
        for candidate in container.streams.video:
            if candidate.index == self._probe.stream_index:
                stream = candidate
        stream.thread_type = "AUTO"
        return container, stream

    def close(self) -> None:
        self._container.close()

    def frames(self, options: DecodeConfig) -> Iterator[tuple[float, np.ndarray]]:
        # One reformatter for the whole stream: ``frame.to_ndarray(format=...)`` builds a new
        # swscale context per frame, which is several times slower than decoding.
        reformatter = VideoReformatter()
        for pts, frame in select_frames(self._timed_frames(options), options):
            yield pts, reformatter.reformat(frame, format="rgb24").to_ndarray()

    def _timed_frames(self, options: DecodeConfig) -> Iterator[tuple[float, av.VideoFrame]]:
        decoded_before = self._state.decoded
        start = options.start
        if start is None or start <= self._probe.first_pts + EPS:
            yield from self._decode()
            return
        if self._probe.container_format in NO_SEEK_FORMATS:
            logger.debug(
                "%s: no seek in an MPEG program stream; decoding from the start", self._probe.path
            )
            yield from self._decode()
            return
        clock = self._probe.clock
        target = clock.start_ticks + int(start / clock.time_base)
        try:
            self._container.seek(target, stream=self._stream, backward=True)
        except av.FFmpegError as exc:
            logger.debug("%s: seek failed (%s); decoding from the start", self._probe.path, exc)
            yield from self._decode()
            return
        decoded = self._decode()
        first = next(decoded, None)
        if first is not None and first[0] <= start + EPS:
            yield first
            yield from decoded
            return
        logger.debug("%s: seek overshot %.3f s; decoding from the start", self._probe.path, start)
        decoded.close()
        self._container.close()
        self._state.decoded = decoded_before
        self._container, self._stream = self._open()
        yield from self._decode()

    def _decode(self) -> Iterator[tuple[float, av.VideoFrame]]:
        clock = self._probe.clock
        fps = self._probe.fps
        step = max(1, round(1 / (fps * clock.time_base))) if fps > 0 else 1
        last_ticks: int | None = None
        frame_clock = FrameClock()
        pending: deque[av.VideoFrame] = deque()  # the first frames, until the lookahead is seen
        pts: float | None = None
        corrupt: list[float] = []
        last_packet_corrupt = False
        failure: av.FFmpegError | None = None

        def timed(frame: av.VideoFrame) -> tuple[float, av.VideoFrame]:
            nonlocal last_ticks, pts
            ticks = frame_clock.ticks(frame.pts, frame.dts)
            if ticks is None:
                ticks = clock.start_ticks if last_ticks is None else last_ticks + step
                self._state.warn("frames without a timestamp: pts extrapolated from the fps")
            last_ticks = int(ticks)
            pts = clock.seconds(last_ticks)
            if frame.duration:
                self._state.frames_end = clock.seconds(last_ticks + int(frame.duration))
            if frame.is_corrupt:
                corrupt.append(pts)
            return pts, frame

        try:
            try:
                for packet in self._container.demux(self._stream):
                    if packet.size:  # the final, empty packet only flushes the decoder
                        last_packet_corrupt = packet.is_corrupt
                    for frame in packet.decode():
                        self._state.decoded += 1
                        frame_clock.observe(frame.pts, frame.dts)
                        pending.append(frame)
                        if frame_clock.observed >= LOOKAHEAD:
                            while pending:
                                yield timed(pending.popleft())
            except av.FFmpegError as exc:
                failure = exc
            while pending:
                yield timed(pending.popleft())
            if failure is not None:
                where = (
                    "before the first frame"
                    if pts is None
                    else f"after the frame at pts {pts:.3f} s"
                )
                self._state.cut_short(f"decoding stopped {where}: {failure}")
            elif last_packet_corrupt:  # the demuxer read fewer bytes than the packet declares
                where = "" if pts is None else f" after the frame at pts {pts:.3f} s"
                self._state.cut_short(f"the file ends inside a frame's data{where} (truncated)")
        finally:
            if corrupt:
                shown = ", ".join(f"{t:.3f}" for t in corrupt[:5])
                more = ", ..." if len(corrupt) > 5 else ""
                self._state.warn(
                    f"{len(corrupt)} frames decoded with errors (concealed by the decoder) "
                    f"at pts {shown}{more} s"
                )
