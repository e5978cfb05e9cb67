"""Batch runs over many inputs: output-folder lock, resume, manifest, failure policy.

Rules that make a batch trustworthy:

* **One run per output folder.** The run holds an exclusive ``flock`` on ``OUT/.motionpipe.lock``
  (the file holds the PID of the holder); a second run on the same folder refuses at once and
  names the lock and the PID. The lock file is removed when the run ends. Holding it, a run
  deletes the temporary files a killed run left half-written beside the manifest and
  ``config.yaml``.
* **A folder that holds a previous run is not silently reused.** If ``OUT`` is not empty, the
  run refuses unless ``resume`` (keep the complete videos, redo the rest) or ``overwrite``
  (redo every input) is given; ``resume`` also needs ``OUT`` to look like a motionpipe output
  (a manifest or ``config.yaml``).
* **Nothing is touched by a run that cannot start.** The estimator (model, checkpoint, device)
  is resolved and loaded, and the output folder checked (creatable, writable, room on its disk),
  before the folder is created or changed; a failure is one :class:`RunStartError` line naming
  the setting or path.
* **Never trust a partial output.** A failed video's output folder is deleted when its failure
  is recorded (a decoding fault found after some frames, a crash, a timeout), so only its
  manifest row remains. A video counts as done only when its ``meta.json`` exists,
  says ``"status": "ok"``, names the same video id and carries the run's results hash (the
  settings that change the numbers, see :mod:`pipeline.run_start`). With ``resume`` such a video
  is kept (manifest row ``status=ok``, ``reused=True``, its numbers taken from ``meta.json``);
  every other input's output folder is deleted before it is processed again, and finished
  videos that are redone are counted and explained before the run starts. The outputs of a
  killed and resumed run are therefore the same files as an uninterrupted run (the rules are
  :mod:`pipeline.resume`'s).
* **One estimator per folder.** Every worker uses the estimator resolved at the start, so a
  ``model: auto`` that now resolves differently redoes the finished videos; finished videos of
  the folder's previous manifest that this run does not include must have been made with the
  same model and checkpoint, or the run refuses to start.
* **The manifest follows the run** (see :mod:`pipeline.manifest`): written at the start (inputs
  ``pending``), after finished videos (in at most 5 % of the run's time) and at the end; inputs
  a run could not process because its workers could not start are ``failed``, never left
  ``pending``. A write that fails (disk full) is tried again as videos finish; if the last one
  fails the run ends with :class:`ManifestNotWritten` (``meta.json`` still marks what is done).
* **Run-level files are written under the lock**: ``finish_run`` (features table, lists) runs
  before the lock is released.
* **Failures stay per video**: see :mod:`pipeline.executors`; ``fail_fast`` stops at the first
  failure and marks what was not processed ``skipped``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from models.atomic_files import remove_temporaries_in

from .config import RunConfig, dump_config
from .discovery import VideoJob, is_reserved
from .executors import Execution, Executor, VideoTask, WorkerStartupError, make_executor
from .manifest import (
    ManifestRow,
    RunManifest,
    has_manifest,
    utf8_text,
)
from .progress import ShowProgress, progress_bar
from .resume import check_left_behind, plan_resume
from .run_start import (
    RunStartError,
    check_output_root,
    resolve_estimator,
    results_hash,
    results_key,
)
from .runner import VideoResult, output_root

logger = logging.getLogger(__name__)

LOCK_NAME = ".motionpipe.lock"
CONFIG_NAME = "config.yaml"


class OutputLocked(RuntimeError):
    """Another run holds the output folder's lock."""


class ManifestNotWritten(RuntimeError):
    """The run ended but its manifest could not be written (disk full, folder not writable).

    ``results`` holds every input's result; the videos with a ``meta.json`` are complete.
    """

    def __init__(self, results: list[VideoResult], out_root: Path, error: OSError) -> None:
        super().__init__(
            f"the manifest in {out_root} was not written ({error}); the videos that have a "
            "meta.json are complete: make room (or restore write access) and run again with "
            "--resume, which keeps them and writes the manifest"
        )
        self.results = results


class OutputInUse(RuntimeError):
    """The output folder is not empty and neither ``resume`` nor ``overwrite`` was given."""


@dataclass
class BatchResult(VideoResult):
    """A :class:`VideoResult` with what the batch adds: the input's path relative to the input
    root and whether complete outputs from an earlier run were kept (``--resume``)."""

    rel_path: str = ""
    reused: bool = False


class OutputLock:
    """Exclusive lock on an output folder for the duration of a run (POSIX ``flock``).

    Raises:
        OutputLocked: from :meth:`acquire` when another process holds the lock.
    """

    def __init__(self, out_root: str | Path) -> None:
        self.path = Path(out_root) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no protection, say so
            logger.warning(
                "file locking is not available here; do not start two runs on one folder"
            )
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").split("\n")[0].strip()
                os.close(fd)
                raise OutputLocked(
                    f"another motionpipe run (PID {holder or 'unknown'}) is writing to "
                    f"{self.path.parent}: it holds the lock {self.path}. Wait for it to finish "
                    "or stop it, or choose another output folder."
                ) from None
            # The previous holder may have removed the file between our open and our lock.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.pwrite(fd, f"{os.getpid()}\n{socket.gethostname()}\n{stamp}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            self.path.unlink(missing_ok=True)  # while still holding it: see acquire()
        except OSError as exc:  # a folder made read-only: the lock still ends with the fd
            logger.debug("could not remove %s: %s", self.path, exc)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def check_output_folder(out_root: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuses a non-empty output folder unless ``resume`` or ``overwrite`` allows it."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    entries = [name for name in os.listdir(out_root) if name != LOCK_NAME]
    if not entries or overwrite:
        return
    ours = has_manifest(out_root) or (out_root / CONFIG_NAME).exists()
    if ours and resume:
        return
    if ours:
        raise OutputInUse(
            f"{out_root} already holds a motionpipe run (manifest.csv / config.yaml). Pass "
            "--resume to keep its complete videos and process the rest, or --overwrite to "
            "process every input again."
        )
    raise OutputInUse(
        f"{out_root} is not empty and holds no motionpipe run. Choose a new or empty folder, or "
        "pass --overwrite to write into it (any folder there named like an input's video id is "
        "replaced)."
    )


def remove_output(out_dir: Path, out_root: Path) -> None:
    """Deletes a video's output folder (never anything outside ``out_root``)."""
    root = os.path.abspath(out_root)
    target = os.path.abspath(out_dir)
    if os.path.commonpath([root, target]) != root or target == root:
        raise ValueError(f"refusing to delete {out_dir}: not inside {out_root}")
    if os.path.islink(target) or os.path.isfile(target):
        os.unlink(target)
    elif os.path.isdir(target):
        shutil.rmtree(target)


def _remove_failed_output(out_dir: Path, out_root: Path) -> None:
    """Deletes what a failed video wrote, so that nothing of it passes for output; a folder
    that cannot be deleted is logged (it has no ``meta.json``, so it never counts as done)."""
    try:
        remove_output(out_dir, out_root)
    except OSError as exc:
        logger.warning("cannot delete the outputs of a failed video in %s: %s", out_dir, exc)


def _as_batch_result(result: VideoResult, job: VideoJob, **extra: object) -> BatchResult:
    values = {f.name: getattr(result, f.name) for f in dataclasses.fields(VideoResult)}
    return BatchResult(**values, rel_path=job.rel_path, **extra)


def _unprocessed(job: VideoJob, status: str, error_type: str, error: str) -> BatchResult:
    """The result of an input that was not processed: ``failed`` or ``skipped``, and why."""
    return BatchResult(
        path=str(job.path),
        video_id=job.video_id,
        status=status,
        error_type=error_type,
        error=error,
        rel_path=job.rel_path,
    )


def _reused(job: VideoJob, meta: dict, out_dir: Path) -> BatchResult:
    outputs = dict(meta.get("outputs") or {})
    if "video_absolute" in meta:  # outputs relative to the output root (older: as typed)
        root = output_root(out_dir, job.video_id)
        outputs = {name: str(root / path) for name, path in outputs.items()}
    outputs["meta"] = str(out_dir / "meta.json")
    return BatchResult(
        path=str(job.path),
        video_id=job.video_id,
        frames=int(meta.get("frames") or 0),
        pairs=int(meta.get("pairs") or 0),
        seconds=dict(meta.get("seconds") or {}),
        outputs=outputs,
        warnings=list(meta.get("warnings") or []),
        rel_path=job.rel_path,
        reused=True,
    )


def _row(job: VideoJob, result: BatchResult | None, hash_: str) -> ManifestRow:
    if result is None:
        return ManifestRow(path=job.rel_path, video_id=job.video_id, config_hash=hash_)
    outcome = result.outcome() | {"path": job.rel_path, "video_id": job.video_id}
    return ManifestRow(**outcome, reused=result.reused, config_hash=hash_)


def _remove_run_level_temporaries(out_root: Path) -> None:
    """Removes the temporaries a killed run left beside the files it writes at the output root
    (manifest, config, features table, annotation lists: ``.<name>.<8 hex>.tmp``); called
    under the folder's lock, so no live writer owns them."""
    for path in remove_temporaries_in(
        out_root, targets=lambda name: not name.startswith(".") and is_reserved(name)
    ):
        logger.debug("removed %s, left by an interrupted write", path)


def run_batch(
    jobs: Sequence[VideoJob],
    input_root: str | Path,
    out_root: str | Path,
    config: RunConfig,
    *,
    execution: Execution | None = None,
    resume: bool = False,
    overwrite: bool = False,
    fail_fast: bool = False,
    finish_run: Callable[[list[VideoResult]], None] | None = None,
    start_run: Callable[[], None] | None = None,
) -> list[VideoResult]:
    """Processes every job into ``out_root`` and writes the manifest; see the module docstring.

    Args:
        jobs: from :func:`pipeline.discovery.discover`.
        input_root: what ``job.rel_path`` is relative to (used when a job has no ``rel_path``).
        out_root: the output folder (created if missing).
        config: the run configuration (its hash marks complete outputs).
        execution: where the videos run and the progress bars (default: one local worker
            process, bars on).
        resume, overwrite: what to do with a non-empty output folder.
        fail_fast: stop at the first failed input; the unprocessed ones become ``skipped``.
        finish_run: called with the results after the last video, while the run still holds
            the folder's lock: for files made from the finished videos (features table,
            action-recognition lists), which a second run must not see half done.
        start_run: called under the lock before the first video folder changes: removes the
            run-level files of an earlier run, which an interrupted run must not leave behind
            describing videos it has since removed or redone (an ``OSError`` there is a
            :class:`RunStartError`).

    Returns:
        One :class:`BatchResult` per job, in the order of ``jobs``.

    Raises:
        RunStartError: the estimator (model, checkpoint, device) or the output folder cannot
            be used; raised before the folder is created or changed.
        OutputLocked, OutputInUse: the output folder cannot be used (nothing was written).
        WorkerStartupError: a worker could not load the flow model (the inputs it did not
            process are ``failed`` in the manifest).
        ManifestNotWritten: the run ended but the manifest could not be written.
        KeyboardInterrupt: after stopping the workers and writing the manifest.
    """
    out_root = Path(out_root)
    jobs = [
        job if job.rel_path else dataclasses.replace(job, rel_path=_relative(job.path, input_root))
        for job in jobs
    ]
    execution = execution or Execution()
    estimator = resolve_estimator(config, device_here=not execution.remote)
    check_output_root(out_root)
    if out_root.is_dir() and not (out_root / LOCK_NAME).exists():
        # read only, before a Ray instance starts; checked again under the lock (a folder with
        # a lock file may be a run in progress, which the lock reports)
        check_output_folder(out_root, resume=resume, overwrite=overwrite)
    try:  # a cluster that cannot be reached stops the run before the folder is touched
        runner = make_executor(config, execution, estimator=estimator)
    except WorkerStartupError as exc:
        raise RunStartError(str(exc)) from None
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        lock = OutputLock(out_root)
        lock.acquire()
    except OSError as exc:
        runner.close()
        raise RunStartError(f"cannot use output folder {out_root}: {exc}") from None
    except BaseException:
        runner.close()
        raise
    try:
        check_output_folder(out_root, resume=resume, overwrite=overwrite)
        _remove_run_level_temporaries(out_root)
        if resume or overwrite:
            check_left_behind(out_root, jobs, estimator)
        key = results_key(config, estimator)
        expected = results_hash(key)
        kept, redone = plan_resume(jobs, out_root, key, expected) if resume else ({}, {})
        if redone:
            logger.warning(
                "--resume: %d finished video(s) will be computed again, their settings differ: %s",
                sum(redone.values()),
                "; ".join(f"{reason} ({count} video(s))" for reason, count in redone.items()),
            )
        try:
            dump_config(config, out_root / CONFIG_NAME)
        except OSError as exc:
            raise RunStartError(f"cannot write to output folder {out_root}: {exc}") from None
        if start_run is not None:
            try:
                start_run()
            except OSError as exc:
                raise RunStartError(
                    f"cannot remove the earlier run's files in {out_root}: {exc}"
                ) from None
        results, manifest = _run_locked(
            jobs,
            out_root,
            expected,
            kept,
            runner=runner,
            progress=execution.progress,
            fail_fast=fail_fast,
        )
        if finish_run is not None:
            finish_run(results)
        if manifest.error is not None:
            raise ManifestNotWritten(results, out_root, manifest.error)
        return results
    finally:
        runner.close()  # again: the executor closes itself when it ran; this is for early exits
        lock.release()


def _relative(path: Path, root: str | Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")


def _run_locked(
    jobs: list[VideoJob],
    out_root: Path,
    expected: str,
    kept: dict[int, dict],
    *,
    runner: Executor,
    progress: ShowProgress,
    fail_fast: bool,
) -> tuple[list[VideoResult], RunManifest]:
    """Runs the jobs; returns their results and the manifest (see :attr:`RunManifest.error`)."""
    results: list[BatchResult | None] = [None] * len(jobs)
    tasks: list[VideoTask] = []
    for n, job in enumerate(jobs):
        out_dir = out_root / job.video_id
        if n in kept:
            results[n] = _reused(job, kept[n], out_dir)
            continue
        remove_output(out_dir, out_root)
        if job.problem:
            results[n] = _unprocessed(job, "failed", job.problem_type, job.problem)
        else:
            tasks.append(VideoTask(n, str(job.path), str(out_dir), job.video_id, job.rel_path))
    if kept:
        logger.info("%d of %d inputs already complete (--resume): kept", len(kept), len(jobs))

    manifest = RunManifest(
        [_row(j, r, expected) for j, r in zip(jobs, results, strict=True)], out_root
    )
    manifest.save(force=True)

    def record(n: int, result: BatchResult) -> None:
        results[n] = result
        manifest.set(n, _row(jobs[n], result, expected))

    def finish(n: int, result: BatchResult) -> None:
        """Files the result of a video that ran: a failed one's outputs are deleted first."""
        if result.status != "ok":
            _remove_failed_output(out_root / jobs[n].video_id, out_root)
        record(n, result)
        manifest.save()  # within its time budget

    failed_early = any(r is not None and r.status == "failed" for r in results)
    bar = progress_bar(
        show=progress,
        total=len(jobs),
        initial=len(jobs) - len(tasks),
        desc="videos",
        unit="video",
        position=0,
        dynamic_ncols=True,
    )
    stopped = fail_fast and failed_early
    try:
        with bar:
            if tasks and not stopped:
                stopped = _execute(
                    runner, tasks, jobs, results, finish=finish, bar=bar, fail_fast=fail_fast
                )
    except WorkerStartupError as exc:
        for n, job in enumerate(jobs):  # never leave rows pending for a run that cannot go on
            if results[n] is None:
                record(
                    n,
                    _unprocessed(
                        job,
                        "failed",
                        "WorkerStartupError",
                        f"not processed: no worker could start ({exc})",
                    ),
                )
        raise
    finally:
        manifest.save(force=True)
    if stopped:
        for n, job in enumerate(jobs):
            if results[n] is None:
                remove_output(out_root / job.video_id, out_root)
                record(
                    n,
                    _unprocessed(
                        job,
                        "skipped",
                        "Skipped",
                        "not processed: the run stopped at the first failure (--fail-fast)",
                    ),
                )
        manifest.save(force=True)
    return [r for r in results if r is not None], manifest


def _execute(
    runner: Executor,
    tasks: list[VideoTask],
    jobs: list[VideoJob],
    results: list[BatchResult | None],
    *,
    finish: Callable[[int, BatchResult], None],
    bar: tqdm,
    fail_fast: bool,
) -> bool:
    """Runs the tasks; ``finish(index, result)`` files each result as its video finishes.

    Returns True when ``fail_fast`` stopped the run early.
    """
    counts = Counter(r.status for r in results if r is not None)
    with runner:
        for task, result in runner.results(tasks):
            job = jobs[task.index]
            finish(task.index, _as_batch_result(result, job))
            counts[result.status] += 1
            bar.set_postfix(ok=counts["ok"], failed=counts["failed"], refresh=False)
            bar.update(1)
            if fail_fast and result.status == "failed":
                logger.error("stopping at the first failure (--fail-fast): %s", job.rel_path)
                return True
    return False


def summary_lines(results: Sequence[VideoResult], out_root: str | Path) -> list[str]:
    """The end-of-run table: videos per status, then each failure with its reason."""
    counts = Counter(r.status for r in results)
    reused = sum(1 for r in results if getattr(r, "reused", False))
    lines = ["status   videos"]
    for status in ("ok", "failed", "skipped"):
        extra = f"  ({reused} kept from an earlier run)" if status == "ok" and reused else ""
        lines.append(f"{status:8s} {counts.get(status, 0):6d}{extra}")
    problems = [r for r in results if r.status != "ok"]
    if problems:
        lines.append("not ok:")
        for r in problems:
            name = getattr(r, "rel_path", "") or r.path
            lines.append(utf8_text(f"  {name}: {r.status}: {r.error_type}: {r.error}"))
    lines.append(f"manifest: {Path(out_root) / 'manifest.csv'}")
    return lines
