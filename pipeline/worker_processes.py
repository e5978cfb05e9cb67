"""Local worker processes: ``--workers N`` isolated ``spawn`` processes, one model each.

A worker receives one video at a time over a pipe and runs :func:`pipeline.executors.run_task`.
A worker that dies (a native crash: SIGSEGV, SIGABRT, out-of-memory kill) or exceeds the
per-video timeout fails that video alone, with a clear error, and a fresh worker takes its
place. Workers die with the main process (``PR_SET_PDEATHSIG`` on Linux, a parent watchdog
elsewhere), so a killed run leaves no worker writing into the output folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from tqdm import tqdm

from .config import RunConfig
from .executors import (
    Executor,
    Job,
    VideoTask,
    WorkerStartupError,
    describe_exit,
    failed_result,
    pinned,
    run_task,
)
from .progress import ShowProgress
from .run_start import Estimator
from .runner import VideoResult, build_flow_session
from .startup import worker_entry

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """Sets (or, with ``None``, leaves alone) an environment variable for the block."""
    previous = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


def _die_with_parent(parent_pid: int) -> None:
    """Make this process end when the process that started it ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _worker_main(
    conn: Connection,
    config: RunConfig,
    device: str | None,
    number: int,
    progress: ShowProgress,
    log_level: int,
    parent_pid: int,
    threads: int | None,
    estimator: Estimator | None,
    job: Job,
) -> None:
    """Entry point of a worker process: load the model once, then process tasks until told to
    stop (``None``) or the pipe closes."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's business
    logging.basicConfig(
        level=log_level,
        format=f"%(levelname)s %(name)s [worker {number}]: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # tqdm's default lock is a named semaphore that a killed worker would leak; bars of one
    # worker only need a thread lock.
    tqdm.set_lock(threading.RLock())
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        session = build_flow_session(pinned(config, device), estimator)
    except Exception as exc:
        conn.send(("startup_error", f"{type(exc).__name__}: {exc}"))
        return
    info = {"pid": os.getpid(), "model": session.choice.model, "device": session.device}
    conn.send(("ready", info))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        conn.send(("result", job(task, config, session, progress=progress)))


@dataclass
class _Worker:
    number: int
    device: str | None
    process: Any
    conn: Connection
    ready: bool = False
    task: VideoTask | None = None
    deadline: float | None = None


class ProcessExecutor(Executor):
    """Isolated worker processes (``spawn``), one model each, one video at a time each.

    Args:
        config: the run configuration.
        devices: one entry per worker, see :func:`worker_devices`.
        estimator: the run's resolved estimator (``None``: each worker resolves ``auto``).
        timeout: seconds a video may take before its worker is killed (``None``: no limit).
        progress: per-video frame bars in the workers.
        job: what a worker does with each video (:data:`pipeline.executors.Job`).
    """

    def __init__(
        self,
        config: RunConfig,
        devices: Sequence[str | None],
        *,
        estimator: Estimator | None = None,
        timeout: float | None = None,
        progress: ShowProgress = None,
        job: Job = run_task,
    ) -> None:
        if not devices:
            raise ValueError("ProcessExecutor needs at least one worker")
        self.config = config
        self.estimator = estimator
        self.devices = list(devices)
        self.timeout = timeout
        self.progress = progress
        self.job = job
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker | None] = [None] * len(self.devices)
        cpus = os.cpu_count() or 1
        cpu_workers = sum(d is None or d == "cpu" for d in self.devices)
        self._threads = max(1, cpus // cpu_workers) if cpu_workers > 1 else None

    def _start(self, number: int) -> _Worker:
        parent_conn, child_conn = self._context.Pipe()
        # the arguments travel pickled: the worker imports what they need under
        # startup.imports (the collector off), not while multiprocessing unpickles them
        payload = pickle.dumps(
            (
                self.config,
                self.devices[number],
                number,
                self.progress,
                logging.getLogger().getEffectiveLevel(),
                os.getpid(),
                self._threads,
                self.estimator,
                self.job,
            )
        )
        process = self._context.Process(
            target=worker_entry,
            args=(child_conn, payload),
            name=f"motionpipe-worker-{number}",
            daemon=True,
        )
        # tqdm reads TQDM_* overrides when it is imported, before any code of ours runs in the
        # child: the worker's frame bars go below the overall bar through its environment.
        with _environment("TQDM_POSITION", str(number + 1) if self.progress is not False else None):
            process.start()
        child_conn.close()
        worker = _Worker(number, self.devices[number], process, parent_conn)
        self._workers[number] = worker
        logger.debug("started worker %d (PID %s)", number, process.pid)
        return worker

    def _discard(self, worker: _Worker, *, kill: bool) -> int | None:
        if kill and worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        worker.conn.close()
        self._workers[worker.number] = None
        return worker.process.exitcode

    def results(self, tasks: Sequence[VideoTask]) -> Iterator[tuple[VideoTask, VideoResult]]:
        queue = list(tasks)
        queue.reverse()  # pop() from the end takes them in order
        try:
            yield from self._loop(queue)
        finally:
            self.close()

    def _loop(self, queue: list[VideoTask]) -> Iterator[tuple[VideoTask, VideoResult]]:
        while True:
            self._assign(queue)
            live = [w for w in self._workers if w is not None and (w.task or not w.ready)]
            if not live:
                if not queue:
                    return
                continue
            deadlines = [w.deadline for w in live if w.deadline is not None]
            wait_for = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            wait([w.conn for w in live] + [w.process.sentinel for w in live], wait_for)
            for worker in live:
                outcome = self._check(worker)
                if outcome is not None:
                    yield outcome

    def _assign(self, queue: list[VideoTask]) -> None:
        """Sends tasks to idle ready workers, then starts workers for what is still queued."""
        for worker in self._workers:
            if worker is not None and worker.ready and worker.task is None and queue:
                task = queue.pop()
                try:
                    worker.conn.send(task)
                except OSError:  # it died while idle: requeue the task, replace the worker
                    queue.append(task)
                    cause = describe_exit(self._discard(worker, kill=True))
                    logger.warning("idle worker %d died with %s", worker.number, cause)
                    continue
                worker.task = task
                worker.deadline = time.monotonic() + self.timeout if self.timeout else None
        starting = sum(1 for w in self._workers if w is not None and not w.ready)
        for number, worker in enumerate(self._workers):
            if worker is None and len(queue) > starting:
                self._start(number)
                starting += 1

    def _check(self, worker: _Worker) -> tuple[VideoTask, VideoResult] | None:
        """Handles whatever happened to one worker: a message, its death, or its timeout."""
        if worker.conn.poll():
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):  # the pipe closed: the worker is gone
                return self._died(worker)
            return self._handle(worker, message)
        if not worker.process.is_alive():
            return self._died(worker)
        if worker.deadline is not None and time.monotonic() >= worker.deadline:
            task = worker.task
            assert task is not None
            self._discard(worker, kill=True)
            logger.error("%s: no result after %g s; worker stopped", task.label, self.timeout)
            return task, failed_result(
                task,
                "TimeoutError",
                f"no result within the {self.timeout:g} s limit (--timeout) while processing "
                f"{task.label}; its worker was stopped",
            )
        return None

    def _handle(self, worker: _Worker, message: tuple) -> tuple[VideoTask, VideoResult] | None:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            logger.debug("worker %d ready: %s", worker.number, message[1])
            return None
        if kind == "startup_error":
            self._discard(worker, kill=True)
            raise WorkerStartupError(message[1])
        task = worker.task
        assert kind == "result" and task is not None
        worker.task, worker.deadline = None, None
        return task, message[1]

    def _died(self, worker: _Worker) -> tuple[VideoTask, VideoResult] | None:
        task = worker.task
        cause = describe_exit(self._discard(worker, kill=True))
        if task is None:
            raise WorkerStartupError(f"a worker process died with {cause} while loading the model")
        logger.error("worker died with %s while processing %s", cause, task.label)
        return task, failed_result(
            task,
            "WorkerCrash",
            f"worker died with {cause} while processing {task.label} (a crash in native code: "
            "the decoder, OpenCV or PyTorch; or the process was killed); a fresh worker "
            "continues",
        )

    def close(self) -> None:
        for worker in self._workers:
            if worker is None:
                continue
            if worker.task is None and worker.process.is_alive():
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
                worker.process.join(2)
            self._discard(worker, kill=True)
