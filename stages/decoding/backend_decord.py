"""decord backend: fast batched CPU decoding, with the checks that make it safe to use.

decord 0.6.0 quirks this module works around (found by testing, see tests/test_decode.py):

* It indexes all packets when opening; its frame count and timestamps are the packets' (sorted
  pts, relative to the stream start, float32). They are snapped back to the stream time base.
  With no known stream start its timestamps are garbage; a first pts that disagrees with PyAV's
  sends the file to PyAV.
* MPEG transport and program streams (``.ts``, ``.m2ts``, ``.mpg``, ``.vob``) are mis-read:
  they have no index, and its seek to the first frame lands on a later keyframe, so it hands
  out frame 10 (say) as frame 0, silently, until a decoding error stops it. These containers
  are left to PyAV (:data:`UNINDEXED_FORMATS`).
* Rotated streams are mis-decoded: for a 90/270 display matrix (or ``rotate`` tag) it returns
  4-channel garbage from ``next()`` and raises from ``get_batch``; 180 is rotated silently. Any
  rotated stream is therefore left to PyAV.
* Its bundled FFmpeg is older than PyAV's: no AV1 decoder, GIF fails to open, and it does not
  read the display matrix that current FFmpeg writes into Matroska. Failures to open fall back.
* When a frame fails to decode it silently repeats the previous frame; ``fault_tol`` is set so
  that it raises instead.
* Its decoder thread runs ahead of the frames handed out, so an error surfaces several frames
  before the packet that caused it. After a failure the remaining selected frames are therefore
  decoded by PyAV (by pts), which delivers exactly the frames before the fault as the other
  backends do.
* Its decoder thread never waits for the consumer: once the first frame is read it decodes the
  rest of the file into memory as fast as it can (dmlc/decord#157, #208, #304; measured here:
  one ``next()`` on a 3000-frame 320x240 clip, then 2 s of sleep, holds 620 MiB). A consumer
  slower than the decoder, such as a flow model, therefore holds the decoded remainder of the
  video. This backend refuses (and the reader falls back to PyAV) when the stream's decoded
  frames would exceed :data:`MAX_READ_AHEAD_BYTES`; PyAV is the default backend for that reason.
* Decoding in-process can abort the interpreter (``LOG(FATAL)``/segfault) on some broken files:
  the batch runner isolates each video in a subprocess.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from stages.decoding.backend_base import CLOCK_TOLERANCE, BackendUnsupported, DecodeState
from stages.decoding.backend_pyav import PyAVBackend
from stages.decoding.probe import StreamProbe
from stages.decoding.selection import select_frames
from stages.decoding.types import DecodeConfig

logger = logging.getLogger(__name__)

BATCH_BYTES = 32 * 1024 * 1024
"""Upper bound on the memory of one ``get_batch`` call."""
MAX_BATCH = 8
"""Frames per ``get_batch`` call; larger batches were slower (cache misses) in benchmarks."""
MAX_READ_AHEAD_BYTES = 256 * 1024 * 1024
"""Largest decoded size (frames x height x width x 3) of a stream decord may decode: its
unbounded read-ahead can hold all of it at once, whatever range was selected."""
UNINDEXED_FORMATS = frozenset({"mpegts", "mpeg"})
"""FFmpeg demuxers (MPEG-TS, MPEG-PS) whose files decord decodes from a wrong position."""
FAULT_TOLERANCE = "0.000001"
"""decord ``fault_tol``: a fraction so small that the first substituted frame raises."""


def _import_decord() -> ModuleType:
    try:
        import decord
    except (ImportError, OSError) as exc:
        raise BackendUnsupported(f"decord is not installed ({exc})") from exc
    return decord


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = text[-1] if text else type(exc).__name__
    return detail if len(detail) <= 200 else detail[:200] + "..."


def _decoded_bytes(probe: StreamProbe) -> int:
    """RGB bytes of the whole stream: what decord's read-ahead may hold (it runs to the end of
    the file whatever range was selected)."""
    frames = probe.header_frame_count
    if frames is None and probe.duration and probe.fps:
        frames = round(probe.duration * probe.fps)
    if frames is None:
        return MAX_READ_AHEAD_BYTES + 1  # unknown length: assume long
    return frames * probe.source_height * probe.source_width * 3


class DecordBackend:
    """Decodes the selected frames with ``VideoReader.get_batch`` in bounded batches."""

    name = "decord"
    applied_rotation = 0

    def __init__(self, probe: StreamProbe, options: DecodeConfig, state: DecodeState) -> None:
        decord = _import_decord()
        if probe.rotation:
            raise BackendUnsupported(f"decord mis-decodes rotated streams ({probe.rotation} deg)")
        if probe.container_format in UNINDEXED_FORMATS:
            raise BackendUnsupported(
                f"decord starts {probe.container_format} files at a later keyframe (no index)"
            )
        self._probe = probe
        self._state = state
        read_ahead = _decoded_bytes(probe)
        if read_ahead > MAX_READ_AHEAD_BYTES:
            raise BackendUnsupported(
                f"decord decodes ahead of the consumer without bound and could hold "
                f"{read_ahead / 2**20:.0f} MiB of frames (limit {MAX_READ_AHEAD_BYTES // 2**20} MiB)"
            )
        try:
            reader = decord.VideoReader(
                probe.path,
                ctx=decord.cpu(0),
                fault_tol=FAULT_TOLERANCE,
            )
            count = len(reader)
            stamps = reader.get_frame_timestamp(range(count))[:, 0]
            first = reader.next().asnumpy()
        except Exception as exc:  # decord raises DECORDError, RuntimeError, AssertionError
            raise BackendUnsupported(f"decord cannot decode the file ({_short(exc)})") from exc
        expected = (probe.source_height, probe.source_width, 3)
        if first.shape != expected:
            raise BackendUnsupported(f"decord frame shape {first.shape} != {expected}")
        pts = [probe.clock.snap(float(t)) for t in stamps]
        if abs(pts[0] - probe.first_pts) > CLOCK_TOLERANCE:
            raise BackendUnsupported(
                f"decord's first pts {pts[0]:.6f} s differs from PyAV's {probe.first_pts:.6f} s"
                " (different or unknown stream start)"
            )
        self._reader = reader
        self._first: np.ndarray | None = first
        self._pts = pts
        frame_bytes = max(1, first.nbytes)
        self._batch = max(1, min(MAX_BATCH, BATCH_BYTES // frame_bytes))

    def close(self) -> None:
        self._reader = None
        self._first = None

    def frames(self, options: DecodeConfig) -> Iterator[tuple[float, np.ndarray]]:
        candidates = ((pts, index) for index, pts in enumerate(self._pts))
        wanted = [index for _, index in select_frames(candidates, options)]
        if wanted and wanted[0] == 0 and self._first is not None:
            self._state.decoded += 1
            yield self._pts[0], self._first
            wanted = wanted[1:]
        self._first = None
        for begin in range(0, len(wanted), self._batch):
            batch = wanted[begin : begin + self._batch]
            try:
                block = self._reader.get_batch(batch).asnumpy()
            except Exception as exc:  # DECORDError; frames of this batch are unusable
                self._state.warn(
                    f"decord failed ({_short(exc)}); frames from pts "
                    f"{self._pts[batch[0]]:.3f} s on were decoded with PyAV"
                )
                yield from self._continue_with_pyav(wanted[begin:], options)
                return
            for index, rgb in zip(batch, block, strict=True):
                self._state.decoded += 1
                yield self._pts[index], rgb.copy()  # own memory, not a view of the batch

    def _continue_with_pyav(
        self, remaining: list[int], options: DecodeConfig
    ) -> Iterator[tuple[float, np.ndarray]]:
        """Decode the frames at the pts of ``remaining`` with PyAV, from the first of them."""
        todo = {self._pts[index] for index in remaining}
        plain = dataclasses.replace(
            options, start=self._pts[remaining[0]], end=None, stride=1, target_fps=None
        )
        pyav = PyAVBackend(self._probe, plain, self._state)
        try:
            for pts, rgb in pyav.frames(plain):
                if pts in todo:
                    todo.discard(pts)
                    yield pts, rgb
                if not todo:
                    return
        finally:
            pyav.close()
