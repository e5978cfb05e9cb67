"""Where videos are processed: in this process, in isolated worker processes, or on Ray.

Every executor runs the same job, :func:`run_task` (``process_video`` with a session built once
per worker by ``build_flow_session``), and yields ``(task, result)`` pairs as videos finish.

* :class:`InProcessExecutor` (``--workers 0``): no isolation, for debugging. A native crash
  ends the run; ``--timeout`` is not available.
* :class:`ProcessExecutor` (``--workers N``, default): ``N`` worker processes started with the
  ``spawn`` method, each loading the model once and receiving one video at a time. A worker that
  dies (a native crash: SIGSEGV, SIGABRT, out-of-memory kill) or exceeds the per-video timeout
  fails that video alone, with a clear error, and a fresh worker takes its place. Workers die
  with the main process (``PR_SET_PDEATHSIG`` on Linux, a parent watchdog elsewhere), so a killed
  run leaves no worker writing into the output folder.
* :class:`RayExecutor` (``--executor ray``): one Ray actor per worker, each holding the model.

Test hooks (for the test suite only; never set them in production): when the environment
variable ``MOTIONPIPE_TEST_CRASH_ON`` is a substring of a video's path, the worker calls
``os.abort()`` as it starts that video (a real native crash); ``MOTIONPIPE_TEST_HANG_ON`` makes
it sleep instead (a video that never finishes). ``MOTIONPIPE_TEST_HANG_ONCE_ON`` is
``SUBSTRING@MARKER``: the first worker to start a matching video creates the file ``MARKER``
(JSON: its PID and, on Ray, its node id) and sleeps; later attempts run normally (a worker or
node lost in the middle of a video).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .config import RunConfig
from .run_start import Estimator
from .runner import FlowSession, VideoResult, build_flow_session, process_video

logger = logging.getLogger(__name__)

CRASH_HOOK = "MOTIONPIPE_TEST_CRASH_ON"
HANG_HOOK = "MOTIONPIPE_TEST_HANG_ON"
HANG_ONCE_HOOK = "MOTIONPIPE_TEST_HANG_ONCE_ON"
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class VideoTask:
    """One video to process (plain strings: it crosses process boundaries).

    Attributes:
        index: position of the job in the run (results are matched back by it).
        path: the video file or frame folder.
        out_dir: the video's output folder.
        video_id: its id (output folder relative to the output root).
        label: how messages name the video (its path relative to the input root).
    """

    index: int
    path: str
    out_dir: str
    video_id: str
    label: str


class WorkerStartupError(RuntimeError):
    """A worker could not load the flow model (bad checkpoint, device, ...): nothing can run."""


def failed_result(task: VideoTask, error_type: str, error: str) -> VideoResult:
    return VideoResult(
        path=task.path, video_id=task.video_id, status="failed", error_type=error_type, error=error
    )


def _test_hooks(path: str) -> None:
    crash_on = os.environ.get(CRASH_HOOK)
    if crash_on and crash_on in path:
        logger.error("test hook %s: aborting while starting %s", CRASH_HOOK, path)
        os.abort()
    hang_on = os.environ.get(HANG_HOOK)
    if hang_on and hang_on in path:
        _hang(HANG_HOOK, path)
    substring, _, marker = os.environ.get(HANG_ONCE_HOOK, "").partition("@")
    if substring and marker and substring in path:
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        ray = sys.modules.get("ray")
        node = ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else None
        os.write(fd, json.dumps({"pid": os.getpid(), "node": node}).encode())
        os.close(fd)
        _hang(HANG_ONCE_HOOK, path)


def _hang(hook: str, path: str) -> None:
    logger.error("test hook %s: hanging while starting %s", hook, path)
    while True:
        time.sleep(3600)


def run_task(
    task: VideoTask, config: RunConfig, session: FlowSession, *, progress: bool
) -> VideoResult:
    """Processes one video; never raises for a bad video (the error is on the result)."""
    _test_hooks(task.path)
    try:
        return process_video(
            Path(task.path),
            Path(task.out_dir),
            task.video_id,
            config,
            session,
            progress=progress,
        )
    except Exception as exc:  # process_video records its errors; this is a safety net
        logger.exception("unexpected error on %s", task.path)
        return failed_result(task, type(exc).__name__, str(exc) or repr(exc))


def pinned(config: RunConfig, device: str | None) -> RunConfig:
    """``config`` with ``flow.device`` set to ``device`` (unchanged when ``device`` is None).

    Only the session is built from the pinned config: ``process_video`` gets the run's config,
    so ``meta.json`` and its config hash do not depend on which worker ran the video.
    """
    if device is None:
        return config
    return dataclasses.replace(config, flow=dataclasses.replace(config.flow, device=device))


def cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install must not stop a CPU run
        return 0


def worker_devices(config: RunConfig, workers: int | None) -> list[str | None]:
    """The device of each worker (``None``: as configured).

    With ``flow.device`` ``auto`` or ``cuda`` and CUDA GPUs present, workers are pinned to
    ``cuda:0``, ``cuda:1``, ... in turn, and the default is one worker per GPU; otherwise the
    default is one worker and every worker uses the configured device.
    """
    gpus = cuda_device_count() if config.flow.device in ("auto", "cuda") else 0
    count = workers if workers is not None else max(1, gpus)
    if gpus == 0:
        return [None] * count
    return [f"cuda:{n % gpus}" for n in range(count)]


def describe_exit(exitcode: int | None) -> str:
    """``"signal SIGABRT"`` / ``"exit code 3"`` for a dead process's exit code."""
    if exitcode is None:
        return "an unknown cause"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class Executor:
    """Runs tasks and yields ``(task, result)`` as they finish (not necessarily in order)."""

    def results(self, tasks: Sequence[VideoTask]) -> Iterator[tuple[VideoTask, VideoResult]]:
        raise NotImplementedError

    def close(self) -> None:
        """Stops every worker at once (unfinished videos are abandoned). Safe to call twice."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Processes videos one after the other in this process (no isolation, no timeout)."""

    def __init__(
        self, config: RunConfig, *, estimator: Estimator | None = None, progress: bool = True
    ) -> None:
        self.config = config
        self.estimator = estimator
        self.progress = progress
        self._session: FlowSession | None = None

    def results(self, tasks: Sequence[VideoTask]) -> Iterator[tuple[VideoTask, VideoResult]]:
        for task in tasks:
            if self._session is None:
                try:
                    self._session = build_flow_session(self.config, self.estimator)
                except Exception as exc:
                    raise WorkerStartupError(f"{type(exc).__name__}: {exc}") from exc
            yield task, run_task(task, self.config, self._session, progress=self.progress)


# ---------------------------------------------------------------- worker processes


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
    progress: bool,
    log_level: int,
    parent_pid: int,
    threads: int | None,
    estimator: Estimator | None,
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
        conn.send(("result", run_task(task, config, session, progress=progress)))


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
    """

    def __init__(
        self,
        config: RunConfig,
        devices: Sequence[str | None],
        *,
        estimator: Estimator | None = None,
        timeout: float | None = None,
        progress: bool = True,
    ) -> None:
        if not devices:
            raise ValueError("ProcessExecutor needs at least one worker")
        self.config = config
        self.estimator = estimator
        self.devices = list(devices)
        self.timeout = timeout
        self.progress = progress
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker | None] = [None] * len(self.devices)
        cpus = os.cpu_count() or 1
        cpu_workers = sum(d is None or d == "cpu" for d in self.devices)
        self._threads = max(1, cpus // cpu_workers) if cpu_workers > 1 else None

    def _start(self, number: int) -> _Worker:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main,
            args=(
                child_conn,
                self.config,
                self.devices[number],
                number,
                self.progress,
                logging.getLogger().getEffectiveLevel(),
                os.getpid(),
                self._threads,
                self.estimator,
            ),
            name=f"motionpipe-worker-{number}",
            daemon=True,
        )
        # tqdm reads TQDM_* overrides when it is imported, before any code of ours runs in the
        # child: the worker's frame bars go below the overall bar through its environment.
        with _environment("TQDM_POSITION", str(number + 1) if self.progress else None):
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
            f"worker died with {cause} while processing {task.label} (a crash in native code, "
            "e.g. the decoder, or the process was killed); a fresh worker continues",
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


# ---------------------------------------------------------------- Ray


class FlowActor:
    """The job of one Ray actor: the model, loaded once, and :func:`run_task`."""

    def __init__(self, config: RunConfig, device: str | None, estimator: Estimator | None) -> None:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        self.config = config
        self.session = build_flow_session(pinned(config, device), estimator)

    def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "model": self.session.choice.model}

    def process(self, task: VideoTask) -> VideoResult:
        return run_task(task, self.config, self.session, progress=False)


def _project_root() -> str:
    return str(Path(__file__).resolve().parents[1])


RAY_RETRIES = 1
"""Times a video whose Ray worker was lost (node or actor died) is tried again elsewhere."""

RAY_REPLACEMENT_WAIT_S = 600.0
"""How long queued videos wait for a replacement worker when no worker is left."""


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
            ray.init(**options)
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
        actor = self._actor_class.remote(self.config, self._device, self.estimator)
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


def make_executor(
    config: RunConfig,
    *,
    workers: int | None,
    executor: str = "local",
    address: str | None = None,
    timeout: float | None = None,
    progress: bool = True,
    estimator: Estimator | None = None,
) -> Executor:
    """The executor for the CLI options (see the module docstring); every worker uses
    ``estimator`` (the run's, resolved once) when it is given."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if executor == "ray":
        return RayExecutor(
            config, workers=workers, address=address, timeout=timeout, estimator=estimator
        )
    if workers == 0:
        if timeout is not None:
            raise ValueError("--timeout needs worker processes (--workers 1 or more)")
        return InProcessExecutor(config, estimator=estimator, progress=progress)
    return ProcessExecutor(
        config,
        worker_devices(config, workers),
        estimator=estimator,
        timeout=timeout,
        progress=progress,
    )
