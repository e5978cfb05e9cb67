"""Group delivered frames into overlapping :class:`FrameChunk` s.

With chunk size ``N`` and overlap ``k``, chunk ``c`` holds delivered frames
``[c*N, min(c*N + N + k, T))`` of a video of ``T`` frames: every chunk after the first starts
with the last ``k`` frames of the previous one, and the pair ``(t, t + k)`` lies wholly inside
exactly one chunk, chunk ``t // N``. Chunks are produced while they contain at least one pair;
the one after which no pair remains has ``is_last=True``. A video with ``T <= k`` frames gives
a single chunk with all its frames (the flow stage refuses it); one with no frame gives none.
At most ``N + k + 1`` frames are held at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from stages.base import FrameChunk
from stages.decoding.reader import VideoReader
from stages.decoding.types import DecodedFrame


def _make_chunk(video_id: str, frames: list[DecodedFrame], overlap: int, last: bool) -> FrameChunk:
    return FrameChunk(
        video_id=video_id,
        frames=np.stack([frame.rgb for frame in frames]),
        indices=np.array([frame.index for frame in frames], dtype=np.int64),
        pts=np.array([frame.pts for frame in frames], dtype=np.float64),
        overlap=overlap,
        is_last=last,
    )


def iter_chunks(
    reader: VideoReader | Iterable[DecodedFrame],
    video_id: str,
    chunk_size: int,
    overlap: int = 1,
) -> Iterator[FrameChunk]:
    """Yield the frames of ``reader`` (a :class:`VideoReader`, or any iterable of
    :class:`DecodedFrame` in order) as overlapping chunks; see the module docstring.

    Args:
        reader: the frame source; a reader's :meth:`VideoReader.frames` is consumed.
        video_id: stored in every chunk.
        chunk_size: ``N >= 1``, number of pairs per chunk (frames per chunk is ``N + overlap``).
        overlap: ``k >= 0``, the pair gap; leading frames repeated from the previous chunk.
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0:
        raise ValueError(f"overlap must be an int >= 0, got {overlap!r}")
    frames = reader.frames() if isinstance(reader, VideoReader) else iter(reader)
    span = chunk_size + overlap
    buffer: list[DecodedFrame] = []
    carried = 0
    for frame in frames:
        if len(buffer) == span:
            # A frame beyond the full buffer exists, so the buffered chunk is not the last.
            yield _make_chunk(video_id, buffer, carried, last=False)
            buffer = buffer[chunk_size:]
            carried = overlap
        buffer.append(frame)
    if buffer:
        yield _make_chunk(video_id, buffer, carried, last=True)
