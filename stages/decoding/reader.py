"""``open_video``: probe a file, pick a backend (with fallback to PyAV) and deliver frames.

Every backend yields the same frames for the same file and options: the same selection (a pure
function of the pts, see :mod:`stages.decoding.selection`), the same pts (stream timestamps,
relative to the stream start, snapped to the stream time base), the same upright orientation
and the same resize. Pixel values agree exactly for 8-bit sources on the CPUs measured (each
backend bundles its own FFmpeg, which picks its YUV->RGB code per CPU, so another CPU may see
a level or two); for 10-bit 4:2:0 sources the backends' FFmpeg versions convert chroma
differently (a few levels on average, more at sharp colour edges).

Corrupt streams: when the decoder fails after at least one frame, or the file ends inside a
frame's data (a truncated file) or well before the duration its Matroska header declares, the
frames decoded so far are delivered and the iteration then
raises :class:`DecodeError` naming the fault, so that a cut-short video never passes for a
whole one; with ``DecodeConfig.keep_incomplete`` the iteration just ends and
:attr:`VideoReader.warnings` says why. Frames after the fault are not recovered (backends
disagree on what follows a fault). Errors the decoder conceals (frames flagged corrupt) only
warn. A stream that yields no frame at all raises :class:`DecodeError` from
:func:`open_video`.

Decoding runs in-process; decord (and, rarely, FFmpeg) can abort the interpreter on some broken
files, so the batch runner isolates each video in a subprocess.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from stages.decoding.backend_base import Backend, BackendUnsupported, DecodeState
from stages.decoding.backend_decord import DecordBackend
from stages.decoding.backend_opencv import OpenCVBackend
from stages.decoding.backend_pyav import PyAVBackend
from stages.decoding.frames_folder import FrameFolderReader, open_frames_folder
from stages.decoding.probe import StreamProbe, probe_video
from stages.decoding.selection import expected_count
from stages.decoding.transform import FrameTransform, fit_size
from stages.decoding.types import ClosingReader, DecodeConfig, DecodedFrame, DecodeError, VideoInfo

logger = logging.getLogger(__name__)

_fallback_warned: set[str] = set()


def _warn_fallback(backend: str, reason: str) -> None:
    """Log the first fallback from each backend as a warning, later ones at debug level."""
    level = logging.DEBUG if backend in _fallback_warned else logging.WARNING
    _fallback_warned.add(backend)
    logger.log(level, "%s unavailable: %s; falling back to PyAV", backend, reason)


def _make_backend(probe: StreamProbe, options: DecodeConfig, state: DecodeState) -> Backend:
    try:
        if options.backend == "decord":
            return DecordBackend(probe, options, state)
        if options.backend == "opencv":
            return OpenCVBackend(probe, options, state)
    except Exception as exc:  # BackendUnsupported, or an unexpected library error
        reason = str(exc) if isinstance(exc, BackendUnsupported) else f"{type(exc).__name__}: {exc}"
        _warn_fallback(options.backend, reason)
        state.warn(f"{options.backend} unavailable: {reason}; decoded with PyAV")
    try:
        return PyAVBackend(probe, options, state)
    except Exception as exc:  # the probe opened it a moment ago: only a vanished/changed file
        raise DecodeError(probe.path, f"PyAV cannot reopen the file ({exc})") from exc


class VideoReader(ClosingReader):
    """An opened video. Use as a context manager; :meth:`frames` may be iterated once.

    Attributes:
        info: stream facts (:class:`VideoInfo`), ``info.backend`` is the backend in use.
        options: the :class:`DecodeConfig` it was opened with.
        warnings: problems met so far (fallbacks, early end of a corrupt stream, resolution
            changes, ...); complete once :meth:`frames` is exhausted.
    """

    def __init__(self, path: str, options: DecodeConfig) -> None:
        self.options = options
        self._state = DecodeState()
        self.warnings: list[str] = self._state.warnings
        probe = probe_video(path)
        self._backend = _make_backend(probe, options, self._state)
        self._header_frame_count = probe.header_frame_count
        self._track_duration = probe.track_duration
        self._container_format = probe.container_format
        self._last_pts: float | None = None
        self._first_pts = probe.first_pts
        self._time_base = float(probe.clock.time_base)

        if probe.rotation % 180:
            upright = (probe.source_height, probe.source_width)
        else:
            upright = (probe.source_width, probe.source_height)
        width, height = fit_size(*upright, max_side=options.max_side, short_side=options.short_side)
        applied = self._backend.applied_rotation
        source = (probe.source_width, probe.source_height)
        decoder_size = source[::-1] if applied % 180 else source
        self._transform = FrameTransform(
            decoder_size, (probe.rotation - applied) % 360, (width, height)
        )
        self.info = VideoInfo(
            **probe.header(),
            path=path,
            width=width,
            height=height,
            stream_start=probe.clock.start_seconds,
            backend=self._backend.name,
        )
        self.frames_delivered = 0
        logger.debug("opened %s: %s", path, self.info)

    def expected_frames(self) -> int | None:
        """How many frames :meth:`frames` should deliver with this reader's options, from the
        header's frame count (else the duration and frame rate), for progress bars: exact for a
        constant-rate stream with a truthful header, an estimate otherwise; ``None`` when the
        container tells neither (see :func:`stages.decoding.selection.expected_count`)."""
        info = self.info
        return expected_count(
            self._header_frame_count,
            info.fps,
            info.duration,
            self.options,
            self._first_pts,
            self._time_base,
        )

    @property
    def frames_decoded(self) -> int:
        """Frames the decoder produced so far (before selection; excludes frames skipped by a
        seek, and for decord only the frames it was asked for)."""
        return self._state.decoded

    def _iterate(self) -> Iterator[DecodedFrame]:
        interval = self._selected_interval()
        gaps: list[tuple[float, float]] = []  # (gap, pts after it)
        out_of_order = False
        for pts, rgb in self._backend.frames(self.options):
            if self._last_pts is not None and pts <= self._last_pts:
                self._state.warn("timestamps are not strictly increasing")
                out_of_order = True
            elif self._last_pts is not None and interval and pts - self._last_pts > 3 * interval:
                gaps.append((pts - self._last_pts, pts))
            self._last_pts = pts
            yield DecodedFrame(index=self.frames_delivered, pts=pts, rgb=self._transform(rgb))
            self.frames_delivered += 1
        # Gaps: lost packets, a capture that dropped frames, or a variable frame rate; the pairs
        # across one span more time than the others. Meaningless once timestamps jump back
        # (decode-order pts of B-frames in AVI / MPEG-PS).
        if gaps and not out_of_order:
            largest, after = max(gaps)
            self._state.warn(
                f"{len(gaps)} gap(s) longer than 3 frame intervals between frames (largest "
                f"{largest:.3f} s, before the frame at pts {after:.3f} s): frames missing from "
                "the stream, or a variable frame rate"
            )
        self._check_after_end()

    def _selected_interval(self) -> float | None:
        """The pts step between the frames this selection delivers from a constant-rate
        stream (``None`` when the rate is unknown)."""
        rate = self.info.fps
        if not rate or rate <= 0:
            return None
        return 1 / self.options.selected_fps(rate)

    def _check_after_end(self) -> None:
        if self._transform.size_changes:
            width, height = self._transform.input_size
            self._state.warn(
                f"{self._transform.size_changes} frames differ from the stream size {width}x{height}"
                " (resolution change); they were resized"
            )
        opts = self.options
        unselected = opts.stride == 1 and opts.target_fps is None
        unselected = unselected and opts.start is None and opts.end is None
        header = self._header_frame_count
        if unselected and header is not None and self.frames_delivered < header:
            self._check_shortfall(header)
        if self.frames_delivered == 0:
            self._state.warn("no frame in the selected range")
        if unselected and header is None:
            self._check_track_duration()
        if self._state.cut_short_by and not opts.keep_incomplete:
            raise DecodeError.incomplete(
                self.info.path, self._state.cut_short_by, self.frames_delivered, header
            )

    def _check_shortfall(self, header: int) -> None:
        """Fewer frames came than the header counts: a warning with the cause where the reader
        can tell it. After a fault, the fault's own warning says why. PyAV delivers every frame
        it can, so an MP4 / MOV file hides frames behind an edit list (as a stream-copy cut
        leaves); in other containers (AVI) frames were lost to damage, or were placeholders
        that decode to nothing (DivX's packed B-frames), which a count alone cannot tell apart.
        Other decoders report no faults."""
        shortfall = f"decoded {self.frames_delivered} frames, fewer than the {header} the header"
        if self._state.cut_short_by:
            cause = ""
        elif self.info.backend != "pyav":
            backend = self.info.backend
            cause = f" (hidden frames, or a file cut short: {backend} does not report faults)"
        elif "mov" in self._container_format.split(","):
            cause = " (frames the container hides, e.g. behind the edit list of a stream-copy cut)"
        else:
            cause = (
                f" ({self._container_format} has no edit lists: frames lost to damage, or "
                "placeholders that decode to nothing)"
            )
        self._state.warn(f"{shortfall} declares{cause}")

    def _check_track_duration(self) -> None:
        """A stream without a frame count whose frames end well before the duration its track
        declares (a Matroska file cut short keeps its header) was cut short. The tag counts
        from time 0 of the file (FFmpeg writes the track's end time), so the frames' end is
        taken on that clock too, which can only make the check more lenient for a muxer that
        counts from the first frame. The last frame lasts its own duration where the decoder
        tells it (a long still at the end of a variable-rate video), else one frame interval;
        three intervals (at least 0.1 s) of slack allow for rounding. Backends that do not tell
        frame durations (OpenCV, decord) only warn."""
        declared, last = self._track_duration, self._last_pts
        if declared is None or last is None or not self.info.fps:
            return
        interval = 1.0 / self.info.fps
        frames_end = max(last + interval, self._state.frames_end or 0.0)
        end = max(self.info.stream_start, 0.0) + frames_end
        if declared - end <= max(3 * interval, 0.1):
            return
        message = f"the frames end at {end:.3f} s, the track declares {declared:.3f} s"
        if self._state.frames_end is None:  # OpenCV, decord: a long last frame looks the same
            self._state.warn(f"{message} (truncated file?)")
        else:
            self._state.cut_short(f"{message} (truncated file)")

    def close(self) -> None:
        """Release the decoder. Safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._backend.close()


def open_video(
    path: str | os.PathLike[str], options: DecodeConfig | None = None
) -> VideoReader | FrameFolderReader:
    """Probe ``path`` and open it for decoding with ``options`` (defaults: PyAV, all frames).

    A folder is read as a sequence of images (:mod:`stages.decoding.frames_folder`).

    Raises:
        DecodeError: the file is missing, empty, not a media file, has no video stream or no
            decodable frame; the folder holds no readable image.
    """
    if os.path.isdir(path):
        return open_frames_folder(path, options or DecodeConfig())
    return VideoReader(os.fspath(path), options or DecodeConfig())
