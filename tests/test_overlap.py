"""Background prefetch / consumer threads: order, bounded memory, error propagation; the
output stages side by side."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
import torch

from pipeline.overlap import Consumer, OutputStages, Prefetcher


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


class _Recorder:
    """A stage that records the chunks it saw, the thread it ran on and its torch threads."""

    def __init__(self, name: str, fail_on: int | None = None, delay: float = 0.0) -> None:
        self.name, self.fail_on, self.delay = name, fail_on, delay
        self.seen: list[int] = []
        self.threads: set[int] = set()
        self.torch_threads: set[int] = set()

    def process(self, chunk: int) -> None:
        if chunk == self.fail_on:
            raise OSError(f"{self.name} could not write chunk {chunk}")
        time.sleep(self.delay)
        self.seen.append(chunk)
        self.threads.add(threading.get_ident())
        self.torch_threads.add(torch.get_num_threads())


def test_output_stages_run_side_by_side_and_report_each_chunk_once() -> None:
    default = torch.get_num_threads()
    stages = [_Recorder("writers", delay=0.01), _Recorder("warp"), _Recorder("features")]
    seconds: dict[str, float] = defaultdict(float)
    done: list[int] = []
    outputs = OutputStages(stages, seconds, done.append)
    for chunk in range(6):
        outputs.submit(chunk)
    outputs.close()
    assert all(stage.seen == list(range(6)) for stage in stages)  # every chunk, in order
    assert sorted(done) == list(range(6))  # once each, after every stage had it
    assert len(set.union(*(stage.threads for stage in stages))) == 3  # a thread per stage
    share = max(1, default // 3)
    assert all(stage.torch_threads == {share} for stage in stages)
    assert torch.get_num_threads() == default  # the caller's count is untouched
    assert set(seconds) == {"writers", "warp", "features"} and seconds["writers"] > 0


def test_output_stages_reraise_a_stage_error_and_cancel() -> None:
    stages = [_Recorder("writers"), _Recorder("warp", fail_on=1)]
    outputs = OutputStages(stages, defaultdict(float), lambda chunk: None)
    with pytest.raises(OSError, match="warp could not write chunk 1"):
        for chunk in range(50):
            outputs.submit(chunk)
            time.sleep(0.002)
        outputs.close()
    outputs.cancel()
    assert stages[1].seen == [0]
