"""Public entry point of the decoding stage; the implementation lives in :mod:`stages.decoding`."""

from stages.decoding import (
    BACKENDS,
    DecodedFrame,
    DecodeError,
    DecodeOptions,
    VideoInfo,
    VideoReader,
    iter_chunks,
    open_video,
)

__all__ = [
    "BACKENDS",
    "DecodeError",
    "DecodeOptions",
    "DecodedFrame",
    "VideoInfo",
    "VideoReader",
    "iter_chunks",
    "open_video",
]
