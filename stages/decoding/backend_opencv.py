"""OpenCV (``cv2.VideoCapture`` with its bundled FFmpeg) backend.

OpenCV auto-rotates by the display matrix (``CAP_PROP_ORIENTATION_AUTO`` defaults to on). The
backend switches that off so the reader applies the one rotation from the probe; should a build
refuse, it records what OpenCV applied and the reader rotates by the remainder.
``CAP_PROP_POS_MSEC`` after ``read()`` is the frame's pts relative to the stream start, the
same clock as the other backends; should OpenCV's FFmpeg see another stream start than PyAV's
(its first pts differs), the file is left to PyAV. A frame OpenCV reports at 0 ms after later
ones has no timestamp there (the last frames of an AVI with B-frames): it continues the clock
by its last step, as the PyAV backend times such frames. OpenCV reports no decode errors: a
stream that breaks just ends, which the reader notices only when the header declared more
frames.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import cv2
import numpy as np

from stages.decoding.backend_base import CLOCK_TOLERANCE, BackendUnsupported, DecodeState
from stages.decoding.probe import StreamProbe
from stages.decoding.selection import select_frames
from stages.decoding.types import DecodeConfig

logger = logging.getLogger(__name__)


class OpenCVBackend:
    """Decodes with ``VideoCapture.read()`` (BGR) and converts to RGB."""

    name = "opencv"

    def __init__(self, probe: StreamProbe, options: DecodeConfig, state: DecodeState) -> None:
        self._probe = probe
        self._state = state
        capture = cv2.VideoCapture(probe.path, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise BackendUnsupported("OpenCV cannot open the file")
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        auto = bool(capture.get(cv2.CAP_PROP_ORIENTATION_AUTO))
        meta = capture.get(cv2.CAP_PROP_ORIENTATION_META)
        self.applied_rotation = (round(meta / 90) * 90) % 360 if auto else 0
        ok, bgr = capture.read()
        if not ok:
            capture.release()
            raise BackendUnsupported("OpenCV decodes no frame")
        self._capture = capture
        self._first: tuple[float, np.ndarray] | None = (self._pts(), bgr)
        if abs(self._first[0] - probe.first_pts) > CLOCK_TOLERANCE:
            capture.release()
            raise BackendUnsupported(
                f"OpenCV's first pts {self._first[0]:.6f} s differs from PyAV's "
                f"{probe.first_pts:.6f} s (different stream start)"
            )

    def _pts(self) -> float:
        return self._probe.clock.snap(self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)

    def close(self) -> None:
        self._capture.release()

    def frames(self, options: DecodeConfig) -> Iterator[tuple[float, np.ndarray]]:
        for pts, bgr in select_frames(self._timed_frames(), options):
            yield pts, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _timed_frames(self) -> Iterator[tuple[float, np.ndarray]]:
        item = self._first
        self._first = None
        fps = self._probe.fps
        step = 1 / fps if fps > 0 else 0.0
        while item is not None:
            self._state.decoded += 1
            yield item
            ok, bgr = self._capture.read()
            if not ok:
                return
            previous, pts = item[0], self._pts()
            if pts == 0.0 and previous > 0.0:
                # OpenCV reports 0 ms for a frame without a timestamp: the frames flushed
                # from the decoder at the end of an AVI or MPEG-PS stream with B-frames.
                pts = self._probe.clock.snap(previous + step)
            elif pts > previous:
                step = pts - previous
            item = (pts, bgr)
