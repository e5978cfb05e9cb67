"""Batch runs over many inputs: output-folder lock, resume, manifest, failure policy.

Rules that make a batch trustworthy:

* **One run per output folder.** The run holds an exclusive ``flock`` on ``OUT/.motionpipe.lock``
  (the file holds the PID of the holder); a second run on the same folder refuses at once and
  names the lock and the PID. The lock file is removed when the run ends.
* **A folder that holds a previous run is not silently reused.** If ``OUT`` is not empty, the
  run refuses unless ``resume`` (keep the complete videos, redo the rest) or ``overwrite``
  (redo every input) is given; ``resume`` also needs ``OUT`` to look like a motionpipe output
  (a manifest or ``config.yaml``).
* **Never trust a partial output.** A video counts as done only when its ``meta.json`` exists,
  says ``"status": "ok"``, names the same video id and carries the current config hash. With
  ``resume`` such a video is kept (manifest row ``status=ok``, ``reused=True``, its numbers taken
  from ``meta.json``); every other input's output folder is deleted before it is processed again.
  The outputs of a killed and resumed run are therefore the same files as an uninterrupted run.
* **The manifest follows the run** (see :mod:`pipeline.manifest`): written at the start (inputs
  ``pending``) and after every finished video.
* **Failures stay per video**: see :mod:`pipeline.executors`; ``fail_fast`` stops at the first
  failure and marks what was not processed ``skipped``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .config import RunConfig, config_hash, dump_config
from .discovery import VideoJob
from .executors import VideoTask, make_executor
from .manifest import ManifestRow, has_manifest, write_manifest
from .runner import VideoResult

logger = logging.getLogger(__name__)

LOCK_NAME = ".motionpipe.lock"


class OutputLocked(RuntimeError):
    """Another run holds the output folder's lock."""


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

        self.path.unlink(missing_ok=True)  # while still holding it: see acquire()
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
    ours = has_manifest(out_root) or (out_root / "config.yaml").exists()
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


def verified_meta(out_dir: Path, video_id: str, expected_hash: str) -> dict | None:
    """``meta.json`` of a complete video made with the current config, else ``None``."""
    try:
        meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    complete = meta.get("status") == "ok" and meta.get("video_id") == video_id
    return meta if complete and meta.get("config_hash") == expected_hash else None


def _as_batch_result(result: VideoResult, job: VideoJob, **extra: object) -> BatchResult:
    values = {f.name: getattr(result, f.name) for f in dataclasses.fields(VideoResult)}
    return BatchResult(**values, rel_path=job.rel_path, **extra)


def _reused(job: VideoJob, meta: dict, out_dir: Path) -> BatchResult:
    outputs = dict(meta.get("outputs") or {})
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
    row = ManifestRow(path=job.rel_path, video_id=job.video_id, config_hash=hash_)
    if result is None:
        return row
    row.status = result.status
    row.reused = result.reused
    row.error_type, row.error = result.error_type, result.error
    row.frames, row.pairs = result.frames, result.pairs
    row.seconds = dict(result.seconds)
    row.outputs = dict(result.outputs)
    row.warnings = list(result.warnings)
    return row


def run_batch(
    jobs: Sequence[VideoJob],
    input_root: str | Path,
    out_root: str | Path,
    config: RunConfig,
    *,
    workers: int | None = 1,
    executor: str = "local",
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    fail_fast: bool = False,
    timeout: float | None = None,
    progress: bool = True,
) -> list[VideoResult]:
    """Processes every job into ``out_root`` and writes the manifest; see the module docstring.

    Args:
        jobs: from :func:`pipeline.discovery.discover`.
        input_root: what ``job.rel_path`` is relative to (used when a job has no ``rel_path``).
        out_root: the output folder (created if missing).
        config: the run configuration (its hash marks complete outputs).
        workers: worker processes (``0``: in this process; ``None``: one per CUDA GPU, else 1),
            or Ray actors with ``executor="ray"``.
        executor: ``"local"`` or ``"ray"``; ``address``: the Ray cluster (``None``: local).
        resume, overwrite: what to do with a non-empty output folder.
        fail_fast: stop at the first failed input; the unprocessed ones become ``skipped``.
        timeout: seconds per video before its worker is killed (``TimeoutError``).
        progress: an overall bar over videos and a frame bar per video.

    Returns:
        One :class:`BatchResult` per job, in the order of ``jobs``.

    Raises:
        OutputLocked, OutputInUse: the output folder cannot be used (nothing was written).
        WorkerStartupError: the flow model could not be loaded.
        KeyboardInterrupt: after stopping the workers and writing the manifest.
    """
    out_root = Path(out_root)
    jobs = [
        job if job.rel_path else dataclasses.replace(job, rel_path=_relative(job.path, input_root))
        for job in jobs
    ]
    out_root.mkdir(parents=True, exist_ok=True)
    with OutputLock(out_root):
        check_output_folder(out_root, resume=resume, overwrite=overwrite)
        dump_config(config, out_root / "config.yaml")
        return _run_locked(
            jobs,
            out_root,
            config,
            workers=workers,
            executor=executor,
            address=address,
            resume=resume,
            fail_fast=fail_fast,
            timeout=timeout,
            progress=progress,
        )


def _relative(path: Path, root: str | Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")


def _run_locked(
    jobs: list[VideoJob],
    out_root: Path,
    config: RunConfig,
    *,
    workers: int | None,
    executor: str,
    address: str | None,
    resume: bool,
    fail_fast: bool,
    timeout: float | None,
    progress: bool,
) -> list[VideoResult]:
    expected = config_hash(config)
    results: list[BatchResult | None] = [None] * len(jobs)
    tasks: list[VideoTask] = []
    for n, job in enumerate(jobs):
        out_dir = out_root / job.video_id
        meta = verified_meta(out_dir, job.video_id, expected) if resume else None
        if meta is not None:
            results[n] = _reused(job, meta, out_dir)
            continue
        remove_output(out_dir, out_root)
        if job.problem:
            results[n] = BatchResult(
                path=str(job.path),
                video_id=job.video_id,
                status="failed",
                error_type="FileNotFoundError",
                error=job.problem,
                rel_path=job.rel_path,
            )
        else:
            tasks.append(VideoTask(n, str(job.path), str(out_dir), job.video_id, job.rel_path))
    reused = sum(1 for r in results if r is not None and r.reused)
    if reused:
        logger.info("%d of %d inputs already complete (--resume): kept", reused, len(jobs))

    def save() -> None:
        write_manifest([_row(j, r, expected) for j, r in zip(jobs, results, strict=True)], out_root)

    save()
    failed_early = any(r is not None and r.status == "failed" for r in results)
    bar = tqdm(
        total=len(jobs),
        initial=len(jobs) - len(tasks),
        desc="videos",
        unit="video",
        disable=not progress,
        position=0,
        dynamic_ncols=True,
    )
    stopped = fail_fast and failed_early
    try:
        with bar:
            if tasks and not stopped:
                stopped = _execute(
                    tasks,
                    jobs,
                    results,
                    config,
                    save=save,
                    bar=bar,
                    workers=workers,
                    executor=executor,
                    address=address,
                    fail_fast=fail_fast,
                    timeout=timeout,
                    progress=progress,
                )
    finally:
        save()
    if stopped:
        for n, job in enumerate(jobs):
            if results[n] is None:
                remove_output(out_root / job.video_id, out_root)
                results[n] = BatchResult(
                    path=str(job.path),
                    video_id=job.video_id,
                    status="skipped",
                    error_type="Skipped",
                    error="not processed: the run stopped at the first failure (--fail-fast)",
                    rel_path=job.rel_path,
                )
        save()
    return [r for r in results if r is not None]


def _execute(
    tasks: list[VideoTask],
    jobs: list[VideoJob],
    results: list[BatchResult | None],
    config: RunConfig,
    *,
    save,
    bar: tqdm,
    workers: int | None,
    executor: str,
    address: str | None,
    fail_fast: bool,
    timeout: float | None,
    progress: bool,
) -> bool:
    """Runs the tasks, filling ``results`` and saving the manifest as each video finishes.

    Returns True when ``fail_fast`` stopped the run early.
    """
    counts = Counter(r.status for r in results if r is not None)
    with make_executor(
        config,
        workers=workers,
        executor=executor,
        address=address,
        timeout=timeout,
        progress=progress,
    ) as runner:
        for task, result in runner.results(tasks):
            job = jobs[task.index]
            results[task.index] = _as_batch_result(result, job)
            counts[result.status] += 1
            save()
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
            lines.append(f"  {name}: {r.status}: {r.error_type}: {r.error}")
    lines.append(f"manifest: {Path(out_root) / 'manifest.csv'}")
    return lines
