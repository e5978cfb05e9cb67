"""What every decoding backend provides, and the bookkeeping it shares with the reader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from stages.decoding.types import DecodeConfig

CLOCK_TOLERANCE = 1e-3
"""Largest difference (seconds) allowed between a backend's first pts and PyAV's."""


class BackendUnsupported(Exception):
    """The backend cannot decode this file correctly; the reader falls back to PyAV."""


@dataclass
class DecodeState:
    """Mutable per-reader bookkeeping.

    Attributes:
        warnings: human-readable problems met while decoding (shown in the manifest).
        decoded: frames the decoder produced (before selection; after any seek).
        cut_short_by: why the stream ended before its end (a decoding error, a truncated
            file), or None: the frames delivered are not the whole video.
        frames_end: where the last decoded frame ends (its pts plus its duration, seconds on
            the pts clock) when the decoder tells its duration, else None.
    """

    warnings: list[str] = field(default_factory=list)
    decoded: int = 0
    cut_short_by: str | None = None
    frames_end: float | None = None

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def cut_short(self, reason: str) -> None:
        """Record that the stream ended early (the first reason is kept) and warn."""
        self.cut_short_by = self.cut_short_by or reason
        self.warn(reason)


class Backend(Protocol):
    """A decoder for one opened video.

    Attributes:
        name: backend name as in :data:`BACKENDS`.
        applied_rotation: clockwise degrees the decoder already rotated its output by (only
            OpenCV may auto-rotate); the reader applies the rest of :attr:`VideoInfo.rotation`.
    """

    name: str
    applied_rotation: int

    def frames(self, options: DecodeConfig) -> Iterator[tuple[float, np.ndarray]]:
        """Yield ``(pts_seconds, rgb)`` for the selected frames, in presentation order.

        ``rgb`` is ``(h, w, 3)`` uint8 RGB as decoded (not yet resized nor rotated). Decoder
        errors after the first frame end the iteration and are recorded as warnings.
        """
        ...

    def close(self) -> None: ...
