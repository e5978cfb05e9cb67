"""Where videos are processed: the executor contract, the in-process executor, the factory.

Every executor runs the same job, by default :func:`run_task` (``process_video`` with a session
built once per worker by ``build_flow_session``), and yields ``(task, result)`` pairs as videos
finish. The job is a parameter (:data:`Job`, a picklable callable: it crosses process and node
boundaries), which is how the test suite makes a worker crash or hang on purpose.

* :class:`InProcessExecutor` (``--workers 0``): no isolation, for debugging. A native crash
  ends the run; ``--timeout`` is not available.
* :class:`pipeline.worker_processes.ProcessExecutor` (``--workers N``, default): ``N`` worker
  processes started with the ``spawn`` method, each loading the model once and receiving one
  video at a time. A worker that dies (a native crash: SIGSEGV, SIGABRT, out-of-memory kill) or
  exceeds the per-video timeout fails that video alone, with a clear error, and a fresh worker
  takes its place. Workers die with the main process (``PR_SET_PDEATHSIG`` on Linux, a parent
  watchdog elsewhere), so a killed run leaves no worker writing into the output folder.
* :class:`pipeline.ray_executor.RayExecutor` (``--executor ray``): one Ray actor per worker,
  each holding the model.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .config import RunConfig
from .progress import ShowProgress
from .run_start import Estimator
from .runner import FlowSession, VideoResult, build_flow_session, process_video

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Execution:
    """Where and how the videos run (the ``run`` options ``--workers``, ``--executor``,
    ``--address``, ``--timeout``, ``--progress``).

    Attributes:
        workers: worker processes (``0``: in this process; ``None``: one per CUDA GPU, else 1),
            or Ray actors with ``executor="ray"`` (``None``: one per GPU of the cluster).
        executor: ``"local"`` or ``"ray"``.
        address: the Ray cluster (``None`` or ``"local"``: a local Ray instance for the run).
        timeout: seconds per video before its worker is killed (``TimeoutError``).
        progress: an overall bar over videos and a frame bar per video (``None``: as
            :mod:`pipeline.progress` decides from stderr).
    """

    workers: int | None = 1
    executor: str = "local"
    address: str | None = None
    timeout: float | None = None
    progress: ShowProgress = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")

    @property
    def remote(self) -> bool:
        """Whether the workers run on a Ray cluster elsewhere (they check the device there)."""
        return self.executor == "ray" and self.address not in (None, "local")


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


def run_task(
    task: VideoTask, config: RunConfig, session: FlowSession, *, progress: ShowProgress
) -> VideoResult:
    """Processes one video; never raises for a bad video (the error is on the result)."""
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


class Job(Protocol):
    """What a worker does with one video: :func:`run_task`'s signature. Executors pickle it
    into worker processes and Ray actors, so it must be a module-level function or an instance
    of a module-level class."""

    def __call__(
        self, task: VideoTask, config: RunConfig, session: FlowSession, *, progress: ShowProgress
    ) -> VideoResult: ...


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
        self,
        config: RunConfig,
        *,
        estimator: Estimator | None = None,
        progress: ShowProgress = None,
        job: Job = run_task,
    ) -> None:
        self.config = config
        self.estimator = estimator
        self.progress = progress
        self.job = job
        self._session: FlowSession | None = None

    def results(self, tasks: Sequence[VideoTask]) -> Iterator[tuple[VideoTask, VideoResult]]:
        for task in tasks:
            if self._session is None:
                try:
                    self._session = build_flow_session(self.config, self.estimator)
                except Exception as exc:
                    raise WorkerStartupError(f"{type(exc).__name__}: {exc}") from exc
            yield task, self.job(task, self.config, self._session, progress=self.progress)


def make_executor(
    config: RunConfig,
    execution: Execution,
    *,
    estimator: Estimator | None = None,
    job: Job = run_task,
) -> Executor:
    """The executor of ``execution`` (see the module docstring); every worker uses
    ``estimator`` (the run's, resolved once) when it is given, and runs ``job`` per video."""
    e = execution
    if e.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(
            config,
            workers=e.workers,
            address=e.address,
            timeout=e.timeout,
            estimator=estimator,
            job=job,
        )
    if e.workers == 0:
        if e.timeout is not None:
            raise ValueError("--timeout needs worker processes (--workers 1 or more)")
        return InProcessExecutor(config, estimator=estimator, progress=e.progress, job=job)
    from .worker_processes import ProcessExecutor

    return ProcessExecutor(
        config,
        worker_devices(config, e.workers),
        estimator=estimator,
        timeout=e.timeout,
        progress=e.progress,
        job=job,
    )
