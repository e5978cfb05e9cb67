"""Public entry point of the decoding stage; the implementation lives in :mod:`stages.decoding`."""

from stages.decoding import (
    BACKENDS,
    DecodeConfig,
    DecodedFrame,
    DecodeError,
    VideoInfo,
    VideoReader,
    iter_chunks,
    open_video,
)

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
