"""Overlapping decode and output with compute: bounded queues served by background threads.

Decoding (FFmpeg), image encoding (OpenCV) and file writes release the GIL, so one thread
each beside the flow computation keeps the cores busy without holding more than a couple of
chunks in memory. Exceptions raised in a background thread are re-raised in the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

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
    """Runs ``handle(item)`` for submitted items, in order, in a background thread."""

    def __init__(self, handle: Callable[[T], None], depth: int = 2) -> None:
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
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
