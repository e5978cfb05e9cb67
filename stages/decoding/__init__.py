"""Video decoding stage: files in, upright RGB frames with stream timestamps out.

``open_video(path, DecodeConfig(...))`` returns a :class:`VideoReader` whose ``frames()``
yields :class:`DecodedFrame` s; ``iter_chunks`` groups them into overlapping
:class:`stages.base.FrameChunk` s. Backends: PyAV (default, reference and fallback), decord,
OpenCV; all deliver the same frames and pts for the same file.
"""

from stages.decoding.chunks import iter_chunks
from stages.decoding.reader import VideoReader, open_video
from stages.decoding.types import BACKENDS, DecodeConfig, DecodedFrame, DecodeError, VideoInfo

__all__ = [
    "BACKENDS",
    "DecodeConfig",
    "DecodeError",
    "DecodedFrame",
    "VideoInfo",
    "VideoReader",
    "iter_chunks",
    "open_video",
]
