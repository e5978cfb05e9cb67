"""Which timestamp a decoded frame gets: its pts, or its dts where the pts are in decode order.

Containers without presentation timestamps (AVI, some MPEG-PS) leave the decoder with pts in
decode order: with B-frames they jump back although the frames themselves come out in display
order, while the dts keep increasing. FFmpeg's ``best_effort_timestamp`` (which PyAV does not
expose) makes the same choice as :class:`FrameClock`: the pts, unless they have stepped back
more often than the dts. Two differences: the first frames are timed once the first
:data:`LOOKAHEAD` frames have been decoded, so a stream whose pts are in decode order is timed
by its dts from its first frame on (FFmpeg switches at the first step back, which can leave
two frames with one timestamp); and the frames flushed from the decoder at the end, which have
no dts, continue the dts clock by its last step (FFmpeg gives them their pts, which step back
once more). Later frames are timed as they are decoded, so only the first frames wait.

Timestamps are integer ticks of the stream's time base.
"""

from __future__ import annotations

#: Frames decoded before the first one is timed (B-frames reorder a few frames at most).
LOOKAHEAD = 8


class FrameClock:
    """Feed every decoded frame's ``(pts, dts)`` to :meth:`observe` in decoding order, and ask
    :meth:`ticks` for the frames' timestamps in the same order: the first ones once
    :data:`LOOKAHEAD` frames have been observed (or the stream has ended), later ones right
    after their own :meth:`observe`."""

    def __init__(self) -> None:
        self.observed = 0
        self._last: dict[str, int] = {}
        self._steps_back = {"pts": 0, "dts": 0}
        self._dts_step: int | None = None
        self._given: int | None = None

    def observe(self, pts: int | None, dts: int | None) -> None:
        self.observed += 1
        if dts is not None and "dts" in self._last and dts > self._last["dts"]:
            self._dts_step = dts - self._last["dts"]
        for clock, ticks in (("pts", pts), ("dts", dts)):
            if ticks is None:
                continue
            if clock in self._last and ticks <= self._last[clock]:
                self._steps_back[clock] += 1
            self._last[clock] = ticks

    @property
    def follows_dts(self) -> bool:
        """Whether the pts have stepped back more often than the dts so far."""
        return self._steps_back["pts"] > self._steps_back["dts"]

    def ticks(self, pts: int | None, dts: int | None) -> int | None:
        """The timestamp of an observed frame, ``None`` where it has neither pts nor dts."""
        if not self.follows_dts:
            given = pts if pts is not None else dts
        elif dts is not None:
            given = dts
        elif self._given is not None and self._dts_step is not None:
            given = self._given + self._dts_step
        else:
            given = pts
        if given is not None:
            self._given = given
        return given
