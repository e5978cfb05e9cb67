"""Public entry point of the decoding stage; the implementation lives in :mod:`stages.decoding`
(the same names: ``open_video``, ``iter_chunks``, ``DecodeConfig``, ``VideoReader`` ...)."""

from stages import decoding
from stages.decoding import *  # noqa: F403 - this module re-exports the package's public names

__all__ = decoding.__all__
