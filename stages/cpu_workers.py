"""Independent pieces of CPU work run side by side, the cores split between them.

PyTorch's intra-op parallelism scales poorly on the small tensors of RAFT's refinement loop
(a few thousand positions by 128-384 channels): on a 2-core machine one RAFT-large pair takes
about 1.6x less time with 2 threads than with 1, not 2x. Two pairs computed at the same time,
each with one thread, finish sooner than the same two pairs one after the other with two
threads each. :class:`CpuWorkers` runs such independent tasks (frames to encode, pairs to
refine) on ``workers`` threads, each with ``threads // workers`` intra-op threads.

PyTorch keeps the intra-op thread count per OS thread (OpenMP's per-thread setting, MKL's
thread-local one): each worker sets its own once, and the process-wide default that
``torch.set_num_threads`` also changes is put back for every other thread. NNPACK (the
Winograd 3x3 convolutions of ``models.encoders``) has one process-wide thread pool, sized by
the thread count of its first caller, and callers take turns on it; :func:`prime_nnpack` makes
that first call with the per-worker count, so that with one thread per worker each worker runs
NNPACK on its own thread instead of queueing for the shared pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

import torch

from models.encoders import nnpack_conv2d

Item = TypeVar("Item")
Result = TypeVar("Result")

_NNPACK_PRIMED = threading.Lock()
_nnpack_primed = False


def prime_nnpack(threads: int) -> None:
    """Creates NNPACK's process-wide thread pool with ``threads`` threads, unless a NNPACK
    convolution already ran in this process (the pool cannot be resized). The call goes through
    :func:`models.encoders.nnpack_conv2d` (not the per-shape kernel choice, which may pick
    the other kernel for this tiny shape), so a build without a working NNPACK just runs the
    ordinary convolution."""
    global _nnpack_primed
    with _NNPACK_PRIMED:
        if _nnpack_primed:
            return
        _nnpack_primed = True
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                nnpack_conv2d(torch.zeros(1, 8, 4, 4), torch.zeros(8, 8, 3, 3), None, (1, 1))
        finally:
            torch.set_num_threads(previous)


class CpuWorkers:
    """``workers`` threads, each running PyTorch ops with ``threads_per_worker`` threads.

    ``map`` runs a function over items on the workers and returns the results in the items'
    order. When a task raises, the tasks not yet started are cancelled, the running ones are
    waited for (none is left working on shared state), and the exception is raised again in
    the caller. Per-thread
    PyTorch state (``torch.inference_mode``, autocast) is not inherited from the caller: the
    tasks enter what they need themselves.
    """

    def __init__(self, workers: int, threads_per_worker: int) -> None:
        if workers < 2 or threads_per_worker < 1:
            raise ValueError("CpuWorkers needs >= 2 workers and >= 1 thread per worker")
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        prime_nnpack(threads_per_worker)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flow-worker")
        previous = torch.get_num_threads()
        # One set-up task per thread: the barrier holds each task until all have started, so
        # every worker thread exists and has set its own thread count.
        barrier = threading.Barrier(workers)

        def set_threads() -> None:
            # PyTorch sets a thread's count from the process default at the thread's first
            # parallel call, overwriting an earlier set_num_threads: trigger that first.
            torch.get_num_threads()
            torch.set_num_threads(threads_per_worker)
            barrier.wait()

        for future in [self._pool.submit(set_threads) for _ in range(workers)]:
            future.result()
        torch.set_num_threads(previous)  # the default for threads started from now on

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
        futures = [self._pool.submit(function, item) for item in items]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        if pending:  # a task failed: stop the rest before reporting it
            for future in pending:
                future.cancel()
            wait(pending)
            for future in futures:
                if not future.cancelled() and future.exception() is not None:
                    raise future.exception()
        return [future.result() for future in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
