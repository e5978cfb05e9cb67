"""Which decoded frames to deliver: time range, then target-fps resampling, then stride.

The selection is a pure function of the sequence of frame timestamps, applied as a stream with
one frame of look-ahead, so every backend selects exactly the same frames from the same pts.
Payloads (undecoded frames, arrays or indices) travel alongside the pts untouched.

Resampling: frame ``k`` of the time range is shown during ``[pts_k, pts_{k+1})``; the last one
until the range's stop time, which is ``end`` when frames continue past it, else the last pts
plus the interval before it (the stream's last frame lasts as long as the previous one). Target
times are ``t0 + i / target_fps`` below the stop time, ``t0`` being the first frame's pts, and a
frame is kept, once, when at least one target time falls in its interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from stages.decoding.types import DecodeConfig

T = TypeVar("T")

EPS = 1e-6
"""Tolerance (seconds) for comparing pts with range bounds and target times."""


class _TimeRange(Generic[T]):
    """Iterates the frames with ``start <= pts < end``; afterwards :attr:`stop` holds the time
    the last of them stops being shown (see the module docstring), None if there was no frame."""

    def __init__(self, items: Iterable[tuple[float, T]], options: DecodeConfig) -> None:
        self._items = items
        self._start = options.start
        self._end = options.end
        self.stop: float | None = None

    def __iter__(self) -> Iterator[tuple[float, T]]:
        last: float | None = None
        before_last: float | None = None
        for pts, payload in self._items:
            if self._end is not None and pts >= self._end - EPS:
                # Frames arrive in presentation order: nothing later is in range.
                self.stop = self._end
                return
            if self._start is None or pts >= self._start - EPS:
                yield pts, payload
            before_last, last = last, pts
        if last is not None:
            self.stop = last if before_last is None else last + (last - before_last)


def _resample(frames: _TimeRange[T], fps: float) -> Iterator[tuple[float, T]]:
    """Keep each frame whose display interval contains a target time ``t0 + i / fps``."""
    pending: tuple[float, T] | None = None
    t0 = 0.0
    i = 0

    def owns_target(begin: float, until: float) -> bool:
        nonlocal i
        hit = False
        while t0 + i / fps < until - EPS:
            hit = hit or t0 + i / fps >= begin - EPS
            i += 1
        return hit

    for item in frames:
        if pending is None:
            t0 = item[0]
        elif owns_target(pending[0], item[0]):
            yield pending
        pending = item
    if pending is not None:
        stop = frames.stop if frames.stop is not None else pending[0]
        # The first target is t0 itself, so a lone frame is always kept.
        if owns_target(pending[0], max(stop, pending[0] + 2 * EPS)):
            yield pending


def select_frames(
    items: Iterable[tuple[float, T]], options: DecodeConfig
) -> Iterator[tuple[float, T]]:
    """Filter ``(pts_seconds, payload)`` pairs, given in presentation order, per ``options``.

    Stops consuming ``items`` as soon as a pts at or past ``options.end`` is seen.
    """
    in_range = _TimeRange(items, options)
    selected: Iterable[tuple[float, T]] = in_range
    if options.target_fps is not None:
        selected = _resample(in_range, float(options.target_fps))
    for n, item in enumerate(selected):
        if n % options.stride == 0:
            yield item


MAX_COUNTED_FRAMES = 1_000_000
""":func:`expected_count` walks the timestamps of at most this many frames (about a second);
a header claiming more (11 hours at 25 fps, or a damaged duration) gives ``None``."""


def expected_count(
    frame_count: int | None,
    fps: float,
    duration: float | None,
    options: DecodeConfig,
    first_pts: float = 0.0,
    time_base: float | None = None,
) -> int | None:
    """How many frames :func:`select_frames` keeps from a constant-rate stream, for progress bars.

    The stream is taken to hold ``frame_count`` frames (else ``round(duration * fps)``) at
    ``pts = first_pts + k / fps`` (rounded to the nearest ``time_base`` as the stream stores
    them); the selection (time range, ``target_fps``, ``stride``) runs on
    those timestamps, so the count is exact for constant-rate streams whose header is right and
    an estimate otherwise (variable frame rate, a wrong header). ``None`` when the stream tells
    neither its frame count nor its duration and rate, or when a time range or ``target_fps``
    would need more than :data:`MAX_COUNTED_FRAMES` timestamps walked.
    """
    if fps is None or not fps > 0:
        if frame_count and duration and duration > 0:
            fps = frame_count / duration
        elif frame_count and options.start is None and options.end is None:
            if options.target_fps is None:
                return -(-frame_count // options.stride)
            return None
        else:
            return None
    if not frame_count:
        if duration is None or not duration > 0:
            return None
        frame_count = max(1, round(duration * fps))
    first = 0
    if options.start is not None:  # skip the frames before the range without iterating them
        first = min(frame_count, max(0, math.ceil((options.start - first_pts) * fps - 1e-3) - 1))
    if options.start is None and options.end is None and options.target_fps is None:
        return -(-frame_count // options.stride)
    last = frame_count  # selection stops at the first pts past the end
    if options.end is not None:
        last = min(frame_count, max(0, math.ceil((options.end - first_pts) * fps) + 1))
    if last - first > MAX_COUNTED_FRAMES:
        return None
    if time_base:
        timed = (
            (round((first_pts + k / fps) / time_base) * time_base, None)
            for k in range(first, frame_count)
        )
    else:
        timed = ((first_pts + k / fps, None) for k in range(first, frame_count))
    return sum(1 for _ in select_frames(timed, options))
