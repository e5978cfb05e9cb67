"""Start-up of a command or a worker process without the cyclic garbage collector's passes.

Importing torch, pandas and the stages creates a few hundred thousand objects that live until
the process exits. The collector walks them again and again while they are created (about
0.5 s of a 2.5 s import on a 2-core EPYC) and once more when the interpreter exits (another
0.5 s, in every process). :func:`imports` keeps it off while they are imported and then moves
them out of its sight (``gc.freeze``); objects made later are collected as usual. Standard
library only, so that a spawned worker imports nothing heavy before :func:`worker_entry`.
"""

from __future__ import annotations

import contextlib
import gc
import pickle
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiprocessing.connection import Connection


@contextlib.contextmanager
def imports() -> Iterator[None]:
    """The collector off for the block; after it, what the block created is frozen and the
    collector is on again (if it was before)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def worker_entry(conn: Connection, payload: bytes) -> None:
    """Target of a spawned worker process: ``payload`` is the pickled arguments of
    :func:`pipeline.worker_processes._worker_main` after ``conn``. Unpickled here, under
    :func:`imports`, rather than by multiprocessing before the target runs, so the heavy
    modules they need load with the collector off."""
    with imports():
        from .worker_processes import _worker_main

        args = pickle.loads(payload)
    _worker_main(conn, *args)
