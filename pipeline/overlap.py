"""Overlapping decode and output with compute: bounded queues served by background threads.

Decoding (FFmpeg), image encoding (OpenCV) and file writes release the GIL, so one thread
each beside the flow computation keeps the cores busy without holding more than a couple of
chunks in memory. Exceptions raised in a background thread are re-raised in the caller.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import torch

T = TypeVar("T")
_DONE = object()


class Prefetcher(Generic[T]):
    """Iterates ``source`` in a background thread, at most ``depth`` items ahead."""

    def __init__(self, source: Iterator[T], depth: int = 1) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self._thread.start()

    def _run(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer
            self._error = exc
        finally:
            self._put(_DONE)

    def _put(self, item: object) -> bool:
        """Queues ``item`` unless :meth:`close` was called first; False when stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        """Stops the producer (used when the consumer gives up early)."""
        self._stop.set()
        self._thread.join(timeout=5)


class Consumer(Generic[T]):
    """Runs ``handle(item)`` for submitted items, in order, in a background thread.

    ``threads``: PyTorch intra-op threads of that thread (default: the process default). Several
    consumers beside a flow estimator that keeps the cores busy each do best with few: two
    threads per op on a 2-core machine already busy spend more time waiting for each other
    than computing.
    """

    def __init__(self, handle: Callable[[T], None], depth: int = 2, threads: int | None = None):
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._ready = threading.Event()
        default = torch.get_num_threads()
        self._thread = threading.Thread(target=self._run, args=(threads,), daemon=True)
        self._thread.start()
        self._ready.wait()
        if threads is not None:
            # the thread's set_num_threads also changed the process default new threads take
            torch.set_num_threads(default)

    def _run(self, threads: int | None) -> None:
        if threads is not None:
            torch.get_num_threads()  # a thread takes the default at its first call: before ours
            torch.set_num_threads(threads)
        self._ready.set()
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is None:
                try:
                    self._handle(item)
                except BaseException as exc:  # re-raised by submit/close
                    self._error = exc

    def submit(self, item: T) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def cancel(self) -> None:
        """Drops the items not yet handled and waits for the thread (used on failure)."""
        self._error = self._error or RuntimeError("cancelled")
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(_DONE)
        self._thread.join()

    def close(self) -> None:
        """Waits for every submitted item; re-raises the first error."""
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error


class OutputStages:
    """The stages after flow, each in its own :class:`Consumer` thread, fed the same chunks.

    The stages only read a chunk, so they run side by side: the slowest one, not their sum,
    sets the pace beside the flow estimator. ``seconds[stage.name]`` accumulates each stage's
    time; ``on_chunk_done(chunk)`` runs once every stage has handled the chunk. Each thread
    gets an equal share of the process's PyTorch threads (at least one).
    """

    def __init__(
        self,
        stages: list,
        seconds: dict[str, float],
        on_chunk_done: Callable[[object], None],
        depth: int = 2,
    ) -> None:
        self._seconds = seconds
        self._on_chunk_done = on_chunk_done
        self._remaining: dict[int, int] = {}
        self._lock = threading.Lock()
        self._submitted = 0
        threads = max(1, torch.get_num_threads() // max(1, len(stages)))
        self._consumers = [
            Consumer(self._handler(stage), depth=depth, threads=threads) for stage in stages
        ]

    def _handler(self, stage) -> Callable[[tuple[int, object]], None]:
        def handle(item: tuple[int, object]) -> None:
            number, chunk = item
            tick = time.perf_counter()
            stage.process(chunk)
            self._seconds[stage.name] += time.perf_counter() - tick
            with self._lock:
                self._remaining[number] -= 1
                done = self._remaining[number] == 0
                if done:
                    del self._remaining[number]
            if done:
                self._on_chunk_done(chunk)

        return handle

    def submit(self, chunk: object) -> None:
        """Hands ``chunk`` to every stage; re-raises a stage's earlier error."""
        number, self._submitted = self._submitted, self._submitted + 1
        with self._lock:
            self._remaining[number] = len(self._consumers)
        for consumer in self._consumers:
            consumer.submit((number, chunk))

    def close(self) -> None:
        """Waits for every stage to finish every chunk; re-raises the first error."""
        errors = []
        for consumer in self._consumers:
            try:
                consumer.close()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def cancel(self) -> None:
        """Drops the chunks not yet handled and waits for the threads (used on failure)."""
        for consumer in self._consumers:
            consumer.cancel()
