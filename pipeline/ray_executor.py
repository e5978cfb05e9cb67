"""The Ray executor (``--executor ray``): one Ray actor per worker, each holding the model.

Videos are sent one at a time; a worker lost in the middle of a video (its node died, the actor
was killed) costs only that attempt (see :class:`RayExecutor`). Ray is imported when the
executor is built, so the rest of motionpipe runs without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .config import RunConfig
from .executors import (
    Executor,
    Job,
    VideoTask,
    WorkerStartupError,
    failed_result,
    pinned,
    run_task,
)
from .run_start import Estimator
from .runner import VideoResult, build_flow_session

logger = logging.getLogger(__name__)


class FlowActor:
    """One Ray actor: the model, loaded once, and the job run on every video it is sent."""

    def __init__(
        self, config: RunConfig, device: str | None, estimator: Estimator | None, job: Job
    ) -> None:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        self.config = config
        self.job = job
        self.session = build_flow_session(pinned(config, device), estimator)

    def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "model": self.session.choice.model}

    def process(self, task: VideoTask) -> VideoResult:
        return self.job(task, self.config, self.session, progress=False)


def _project_root() -> str:
    return str(Path(__file__).resolve().parents[1])


RAY_RETRIES = 1
"""Times a video whose Ray worker was lost (node or actor died) is tried again elsewhere."""

RAY_REPLACEMENT_WAIT_S = 600.0
"""How long queued videos wait for a replacement worker when no worker is left."""


def _check_reachable(address: str, seconds: float = 5.0) -> None:
    """Raises :class:`WorkerStartupError` when nothing accepts a connection at a
    ``host:port`` / ``ray://host:port`` address (``ray.init`` would retry for minutes);
    other forms (``auto``) are left to Ray."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise WorkerStartupError(
            f"cannot reach Ray at {address!r}: nothing answers at {host}:{port} "
            f"({exc.strerror or exc}); is the cluster up?"
        ) from None


class RayExecutor(Executor):
    """One Ray actor per worker, each holding the model; videos are sent one at a time.

    A worker lost in the middle of a video (its node died, the actor was killed) costs only that
    attempt: the video's partial output is deleted and it is sent again, to another worker, up
    to :data:`RAY_RETRIES` times before it fails with ``WorkerCrash``. A replacement actor is
    started for the lost one and joins as soon as the cluster can place it; until then the
    remaining workers take the queue.

    Args:
        config: the run configuration.
        workers: number of actors (default: the cluster's GPUs, at least 1).
        address: Ray address (``"auto"``, ``"ray://host:10001"``, ...); ``None`` or ``"local"``
            starts a local Ray instance for this run.
        timeout: seconds a video may take before its actor is killed and replaced.
        estimator: the run's resolved estimator, used by every actor.
        job: what an actor does with each video (:data:`pipeline.executors.Job`).

    Input and output paths must be visible under the same names on every node (a shared file
    system), and motionpipe must be importable there.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        workers: int | None = None,
        address: str | None = None,
        timeout: float | None = None,
        estimator: Estimator | None = None,
        job: Job = run_task,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise WorkerStartupError(
                "--executor ray needs Ray: pip install 'motionpipe[ray]'"
            ) from None
        self._ray = ray
        self.config = config
        self.timeout = timeout
        self.estimator = estimator
        self.job = job
        self._started_ray = False
        if not ray.is_initialized():
            local = address in (None, "local")
            options: dict[str, Any] = {"logging_level": logging.WARNING}
            if local:
                cpus = max(os.cpu_count() or 1, workers or 1)
                options.update(
                    address="local",
                    num_cpus=cpus,
                    include_dashboard=False,
                    runtime_env={"env_vars": {"PYTHONPATH": _project_root()}},
                )
            else:
                options["address"] = address
                _check_reachable(address)
            # ray.init replaces the SIGTERM handler (a local instance's ends the process with
            # status 1 at once): the run's own handler stops it as Ctrl-C does
            main_thread = threading.current_thread() is threading.main_thread()
            sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
            try:
                ray.init(**options)
            except Exception as exc:  # ConnectionError, TimeoutError, RuntimeError, ...
                where = "start a local Ray instance" if local else f"reach Ray at {address!r}"
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise WorkerStartupError(
                    f"cannot {where}: {type(exc).__name__}: {first_line}"
                ) from None
            finally:
                if sigterm is not None:
                    signal.signal(signal.SIGTERM, sigterm)
            self._started_ray = True
        gpus = int(ray.cluster_resources().get("GPU", 0))
        use_gpus = gpus > 0 and config.flow.device in ("auto", "cuda")
        self.count = workers if workers else max(1, gpus if use_gpus else 1)
        self._actor_class = ray.remote(num_cpus=1, num_gpus=1 if use_gpus else 0)(FlowActor)
        self._device = "cuda" if use_gpus else None  # Ray sets CUDA_VISIBLE_DEVICES per actor
        self._lost_errors = (
            ray.exceptions.RayActorError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.ObjectLostError,
        )
        self._actors: list[Any] = [None] * self.count
        self._ready = [False] * self.count
        self._starting: dict[Any, int] = {}  # ready() ref of an actor being started -> slot

    def _start(self, number: int) -> Any:
        """Creates the actor of slot ``number``; returns its ``ready()`` reference."""
        actor = self._actor_class.remote(self.config, self._device, self.estimator, self.job)
        self._actors[number], self._ready[number] = actor, False
        ref = actor.ready.remote()
        self._starting[ref] = number
        return ref

    def _replace(self, number: int) -> None:
        """Drops the actor of slot ``number`` (killing it if it still runs) and starts another."""
        with contextlib.suppress(Exception):  # already dead with its node
            self._ray.kill(self._actors[number])
        self._start(number)

    def _start_first(self, numbers: Sequence[int]) -> None:
        refs = [self._start(number) for number in numbers]
        try:
            self._ray.get(refs)
        except self._ray.exceptions.RayError as exc:
            raise WorkerStartupError(f"a Ray worker could not load the model: {exc}") from exc
        for ref in refs:
            self._ready[self._starting.pop(ref)] = True

    def results(self, tasks: Sequence[VideoTask]) -> Iterator[tuple[VideoTask, VideoResult]]:
        ray = self._ray
        queue = list(reversed(tasks))  # pop() from the end takes them in order
        lost: dict[int, int] = {}  # task index -> workers lost while processing it
        inflight: dict[Any, tuple[int, VideoTask, float | None]] = {}
        stranded_since: float | None = None
        try:
            self._start_first(range(min(self.count, len(queue))))
            while queue or inflight:
                busy = {number for number, _, _ in inflight.values()}
                for number in range(self.count):
                    if queue and self._ready[number] and number not in busy:
                        task = queue.pop()
                        ref = self._actors[number].process.remote(task)
                        deadline = time.monotonic() + self.timeout if self.timeout else None
                        inflight[ref] = (number, task, deadline)
                if queue and not inflight:  # every worker lost: wait for a replacement
                    stranded_since = stranded_since or time.monotonic()
                    if not self._starting or (
                        time.monotonic() - stranded_since > RAY_REPLACEMENT_WAIT_S
                    ):
                        yield from self._fail_stranded(queue)
                        return
                else:
                    stranded_since = None
                deadlines = [d for _, _, d in inflight.values() if d is not None]
                if stranded_since is not None:
                    deadlines.append(stranded_since + RAY_REPLACEMENT_WAIT_S)
                wait_for = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                done, _ = ray.wait([*inflight, *self._starting], num_returns=1, timeout=wait_for)
                if done and done[0] in self._starting:
                    self._joined(done[0])
                elif done:
                    number, task, _ = inflight.pop(done[0])
                    outcome = self._collect(done[0], number, task, lost)
                    if outcome is None:
                        queue.append(task)  # tried again, first in line
                    else:
                        yield task, outcome
                else:
                    yield from self._expire(inflight)
        finally:
            self.close()

    def _joined(self, ref: Any) -> None:
        """A replacement actor finished loading (or failed to)."""
        number = self._starting.pop(ref)
        try:
            self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:
            logger.error("a replacement Ray worker could not start: %s", _first_line(exc))
            self._actors[number] = None
            return
        self._ready[number] = True
        logger.info("a replacement Ray worker joined (slot %d)", number)

    def _collect(
        self, ref: Any, number: int, task: VideoTask, lost: dict[int, int]
    ) -> VideoResult | None:
        """The video's result; ``None`` when its worker was lost and it is to be tried again."""
        ray = self._ray
        try:
            return ray.get(ref)
        except self._lost_errors as exc:
            reason = _first_line(exc)
            self._replace(number)
            lost[task.index] = lost.get(task.index, 0) + 1
            if lost[task.index] <= RAY_RETRIES:
                logger.warning(
                    "lost the Ray worker processing %s (%s); trying it again on another worker",
                    task.label,
                    reason,
                )
                shutil.rmtree(task.out_dir, ignore_errors=True)  # partial output of the attempt
                return None
            return failed_result(
                task,
                "WorkerCrash",
                f"lost its Ray worker {lost[task.index]} times while processing {task.label} "
                f"(last: {reason}); fresh workers continue with the other videos",
            )
        except ray.exceptions.RayError as exc:
            return failed_result(task, type(exc).__name__, _first_line(exc))

    def _expire(
        self, inflight: dict[Any, tuple[int, VideoTask, float | None]]
    ) -> Iterator[tuple[VideoTask, VideoResult]]:
        """Stops the workers whose video passed its deadline (``--timeout``)."""
        now = time.monotonic()
        for ref, (number, task, deadline) in list(inflight.items()):
            if deadline is not None and now >= deadline:
                inflight.pop(ref)
                self._replace(number)
                yield (
                    task,
                    failed_result(
                        task,
                        "TimeoutError",
                        f"no result within the {self.timeout:g} s limit (--timeout) while "
                        f"processing {task.label}; its Ray worker was stopped",
                    ),
                )

    def _fail_stranded(self, queue: list[VideoTask]) -> Iterator[tuple[VideoTask, VideoResult]]:
        """Every worker is gone and none could be replaced: the queued videos fail."""
        why = (
            f"no replacement could be placed within {RAY_REPLACEMENT_WAIT_S:g} s"
            if self._starting
            else "no replacement could start"
        )
        while queue:
            task = queue.pop()
            yield (
                task,
                failed_result(
                    task, "WorkerCrash", f"not processed: every Ray worker was lost and {why}"
                ),
            )

    def close(self) -> None:
        for number, actor in enumerate(self._actors):
            if actor is not None:
                with contextlib.suppress(Exception):  # already dead
                    self._ray.kill(actor)
                self._actors[number] = None
        self._starting.clear()
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
