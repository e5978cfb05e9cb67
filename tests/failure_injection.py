"""Workers that fail on purpose, for the batch tests: a real native crash, a video that never
finishes, a worker or node lost in the middle of a video, a disk that fills up.

:class:`Failures` is a job (:data:`pipeline.executors.Job`) that does the harm as it starts a
matching video and otherwise runs :func:`pipeline.executors.run_task`. The executors pickle it
into their worker processes and Ray actors like the real job, so the failures happen where
they would in production: inside a spawned worker or on a Ray node.

- :func:`inject` makes the CLI of *this* process (``CliRunner``) run it;
- ``python -m tests.failure_injection [--crash-on S] [--hang-on S] -- CLI ARGS`` runs the CLI
  in a subprocess with it (:func:`cli_command` builds that command line).
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import batch
from pipeline.config import RunConfig
from pipeline.executors import VideoTask, make_executor, run_task
from pipeline.progress import ShowProgress
from pipeline.runner import FlowSession, VideoResult

if TYPE_CHECKING:
    import pytest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failures:
    """A job that fails on videos whose path contains a substring.

    Attributes:
        crash_on: ``os.abort()`` as the worker starts such a video (a real native crash).
        hang_on: sleep forever instead (a video that never finishes).
        hang_once_on: the first worker to start such a video creates the file ``marker``
            (JSON: its PID and, on Ray, its node id) and sleeps; later attempts run normally
            (a worker or node lost in the middle of a video).
        marker: the file of ``hang_once_on``.
        fill_disk_on: after finishing such a video, fill the file system of the output
            folder with a file ``filler`` beside the video's folder (real ``ENOSPC`` for
            whatever the run writes next).
    """

    crash_on: str | None = None
    hang_on: str | None = None
    hang_once_on: str | None = None
    marker: str | None = None
    fill_disk_on: str | None = None

    def __call__(
        self, task: VideoTask, config: RunConfig, session: FlowSession, *, progress: ShowProgress
    ) -> VideoResult:
        if self.crash_on and self.crash_on in task.path:
            logger.error("failure injection: aborting while starting %s", task.path)
            os.abort()
        if self.hang_on and self.hang_on in task.path:
            _hang(task.path)
        if self.hang_once_on and self.hang_once_on in task.path and self._first_to_hang():
            _hang(task.path)
        result = run_task(task, config, session, progress=progress)
        if self.fill_disk_on and self.fill_disk_on in task.path:
            fill_disk(Path(task.out_dir).parent / "filler")
        return result

    def _first_to_hang(self) -> bool:
        """Creates :attr:`marker` with this worker's PID and Ray node; False if it exists."""
        assert self.marker is not None, "hang_once_on needs a marker file"
        try:
            fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        ray = sys.modules.get("ray")
        node = ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else None
        os.write(fd, json.dumps({"pid": os.getpid(), "node": node}).encode())
        os.close(fd)
        return True


def fill_disk(path: Path) -> Path:
    """Writes ``path`` until its file system is full (delete it to make room again)."""
    logger.error("failure injection: filling the disk with %s", path)
    with path.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return path


def _hang(path: str) -> None:
    logger.error("failure injection: hanging while starting %s", path)
    while True:
        time.sleep(3600)


def inject(monkeypatch: pytest.MonkeyPatch, failures: Failures) -> None:
    """Every executor the CLI builds in this process runs ``failures`` as its job."""
    monkeypatch.setattr(batch, "make_executor", functools.partial(make_executor, job=failures))


def cli_command(failures: Failures, args: list[str]) -> list[str]:
    """The command line of a CLI subprocess whose workers run ``failures``."""
    options = [f"--{name.replace('_', '-')}={value}"
               for name, value in vars(failures).items() if value is not None]  # fmt: skip
    return [sys.executable, "-m", "tests.failure_injection", *options, "--", *args]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("crash-on", "hang-on", "hang-once-on", "marker", "fill-disk-on"):
        parser.add_argument(f"--{name}")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    cli_args = options.args[1:] if options.args[:1] == ["--"] else options.args
    # the class of the importable module, not of __main__: workers unpickle it by name
    from tests.failure_injection import Failures as ImportableFailures

    failures = ImportableFailures(
        options.crash_on,
        options.hang_on,
        options.hang_once_on,
        options.marker,
        options.fill_disk_on,
    )
    batch.make_executor = functools.partial(make_executor, job=failures)

    from pipeline.cli import main as cli_main

    cli_main(cli_args)


if __name__ == "__main__":
    main()
