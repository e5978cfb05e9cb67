"""Background prefetch / consumer threads: order, bounded memory, error propagation."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.overlap import Consumer, Prefetcher


def test_prefetcher_keeps_order_and_reraises() -> None:
    assert list(Prefetcher(iter(range(20)), depth=2)) == list(range(20))

    def failing():
        yield 1
        raise ValueError("decoder broke")

    with pytest.raises(ValueError, match="decoder broke"):
        list(Prefetcher(failing()))


def test_prefetcher_stays_bounded() -> None:
    produced = []

    def source():
        for i in range(100):
            produced.append(i)
            yield i

    prefetch = Prefetcher(source(), depth=1)
    time.sleep(0.2)
    assert len(produced) <= 3  # one queued, one waiting to be queued
    prefetch.close()


def test_consumer_handles_in_order_and_reports_errors() -> None:
    seen = []
    consumer = Consumer(seen.append, depth=1)
    for i in range(10):
        consumer.submit(i)
    consumer.close()
    assert seen == list(range(10))

    def handle(item):
        if item == 2:
            raise OSError("disk full")

    consumer = Consumer(handle)
    with pytest.raises(OSError, match="disk full"):
        for i in range(10):
            consumer.submit(i)
            time.sleep(0.01)
        consumer.close()


def test_consumer_cancel_stops_the_thread() -> None:
    release = threading.Event()
    consumer = Consumer(lambda item: release.wait(1))
    consumer.submit(1)
    consumer.submit(2)
    release.set()
    consumer.cancel()
    assert not consumer._thread.is_alive()
