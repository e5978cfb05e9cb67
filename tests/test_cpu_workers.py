"""CpuWorkers: ordered results, per-worker thread counts, failures stop the rest."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from stages.cpu_workers import CpuWorkers


@pytest.fixture
def workers():
    pool = CpuWorkers(2, 1)
    yield pool
    pool.close()


def test_results_come_back_in_the_items_order(workers) -> None:
    def slow_square(n: int) -> int:
        time.sleep(0.01 * (5 - n))  # later items finish first
        return n * n

    assert workers.map(slow_square, range(5)) == [0, 1, 4, 9, 16]


def test_each_worker_has_its_own_thread_count_and_the_caller_keeps_its_own() -> None:
    before = torch.get_num_threads()
    pool = CpuWorkers(2, 1)
    try:
        barrier = threading.Barrier(2)

        def seen(_: int) -> tuple[str, int]:
            barrier.wait(timeout=10)  # both tasks at once: one per worker thread
            return threading.current_thread().name, torch.get_num_threads()

        results = pool.map(seen, range(2))
        assert len({name for name, _ in results}) == 2
        assert [count for _, count in results] == [1, 1]
        assert torch.get_num_threads() == before
        fresh: list[int] = []
        thread = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert fresh == [before]  # threads started later get the process default back
    finally:
        pool.close()


def test_tasks_run_side_by_side(workers) -> None:
    barrier = threading.Barrier(2)
    # each task waits for the other: this only finishes if both run at the same time
    assert workers.map(lambda n: barrier.wait(timeout=10) >= 0 and n, [1, 2]) == [1, 2]


def test_a_failure_is_raised_and_the_tasks_not_started_are_cancelled(workers) -> None:
    started: list[int] = []

    def task(n: int) -> int:
        started.append(n)
        if n == 1:
            raise ValueError("frame 1 is broken")
        time.sleep(0.05)
        return n

    with pytest.raises(ValueError, match="frame 1 is broken"):
        workers.map(task, range(20))
    assert len(started) < 20
    assert workers.map(lambda n: n + 1, [1]) == [2]  # still usable


def test_rejects_a_single_worker() -> None:
    with pytest.raises(ValueError, match=">= 2 workers"):
        CpuWorkers(1, 2)
