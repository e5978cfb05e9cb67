"""glibc malloc settings for CPU inference: large blocks are reused instead of mapped anew.

glibc serves every allocation above 32 MB with a fresh ``mmap`` and returns it with
``munmap`` when freed. The flow models allocate a few such tensors for every pair (RAFT's
correlation volume and its pyramid, 264 MB at 1024x436; GMA's attention scores, 198 MB per
frame), so every pair pays the kernel's page faults on them again: measured on one core, a
198 MB ``bmm`` took 257 ms into a new tensor and 146 ms into a reused one. With
``M_MMAP_MAX = 0`` large blocks come from the heap and, once freed, are reused by the next
pair; ``M_TRIM_THRESHOLD`` keeps up to 1 GiB of freed memory at the top of the heap instead
of handing it back after every pair. Memory between pairs stays at the working set's
high-water mark instead of dropping.

The heap fragments more than ``mmap`` does, so the peak grows with frame size: RAFT-large,
whole ``run`` command, 1080p 2137 -> 2701 MiB (and 11% faster), 4K 5475 -> 8304 MiB (past
the 8 GiB bound). ``run`` therefore turns the reuse on per video only for frames up to
``flow.on_demand_above_pixels`` (the all-pairs regime, where the per-pair volumes are the
large blocks), and off, handing the kept memory back, for larger ones.

Where the user already tunes malloc (``GLIBC_TUNABLES`` with ``glibc.malloc``, or the
``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_`` variables), nothing is changed. Other C
libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
KEEP_FREE_BYTES = 1 << 30
#: glibc's defaults (mmap threshold: where its dynamic threshold settles for blocks this size)
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_THRESHOLD = 32 * 1024 * 1024
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")

_lock = threading.Lock()
_state: dict[str, bool] = {}


def set_large_block_reuse(enabled: bool) -> bool:
    """Turns the reuse of large blocks on or off for this process; whether it is on now.

    Turning it off restores glibc's defaults for new blocks and hands the memory kept so far
    back to the system (``malloc_trim``). Nothing happens where the environment tunes malloc
    or the C library is not glibc.
    """
    with _lock:
        libc = _glibc()
        if libc is None or _user_tuned():
            return False
        if _state.get("enabled", False) == enabled:
            return enabled
        if enabled:
            ok = libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES)
        else:
            ok = (
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                and libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD)
                and libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
            )
            libc.malloc_trim(0)
        _state["enabled"] = enabled and bool(ok)
        logger.debug("glibc malloc: reuse of large blocks %s", "on" if enabled else "off")
        return _state["enabled"]


def _user_tuned() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "glibc.malloc" in tunables or any(name in os.environ for name in USER_SETTINGS)


@functools.cache
def _glibc():
    """glibc loaded once (``find_library`` runs ``ldconfig``), or ``None``."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl has mallopt as a stub)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc
