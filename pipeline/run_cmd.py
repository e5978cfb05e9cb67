"""``run``: flow (and every selected output) for a video, a folder or a list of videos."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from .annotations import FinishedVideo, ListOptions, remove_rawframe_lists
from .annotations_cmd import (
    OPTIONS_FILE,
    ListRequest,
    check_lists,
    describe,
    list_options,
    resolve_list_options,
    write_run_annotations,
)
from .batch import ManifestNotWritten, OutputInUse, OutputLocked, run_batch, summary_lines
from .cli_common import merge_overrides, refine_option
from .config import (
    BACKENDS,
    CORR_CHOICES,
    FLOW_FORMATS,
    FLOW_MODELS,
    ConfigError,
    RunConfig,
    load_config,
)
from .config_cmd import preset_path
from .devices import PRECISIONS
from .discovery import find_inputs
from .executors import EXECUTORS, Execution, WorkerStartupError
from .progress import ShowProgress, progress_option
from .run_start import RunStartError
from .runner import VideoResult
from .tables import collect_feature_tables, remove_feature_tables

logger = logging.getLogger("motionpipe")


@click.command("run")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", type=click.Choice(FLOW_MODELS), help="Flow model (default: auto).")
@click.option("--checkpoint", help="Checkpoint file or registry name.")
@click.option("--iters", type=click.IntRange(min=1))
@click.option("--device", help="auto, cpu, cuda, cuda:1, mps")
@click.option("--precision", type=click.Choice(list(PRECISIONS)))
@click.option("--formats", help=f"Comma-separated subset of {','.join(FLOW_FORMATS)}.")
@click.option("--decoder", type=click.Choice(BACKENDS))
@click.option("--chunk-size", type=click.IntRange(min=1), help="Pairs per chunk.")
@click.option("--gap", type=click.IntRange(min=1), help="Pair gap k: pairs (t, t+k).")
@click.option("--backward/--no-backward", default=None, help="Also backward flow.")
@click.option("--warm-start/--no-warm-start", default=None)
@click.option("--corr", type=click.Choice(CORR_CHOICES))
@refine_option(default=None)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any config key, e.g. --set decode.stride=2.",
)
@progress_option
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Worker processes, each loading the model once and isolating the videos it runs "
    "[default: one per CUDA GPU, each pinned to its GPU; else 1]. 0 runs in this process "
    "(no isolation, for debugging).",
)
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default="local",
    show_default=True,
    help="local: worker processes on this machine; ray: Ray actors (pip install "
    "'motionpipe[ray]').",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster address for --executor ray (e.g. auto, ray://host:10001) "
    "[default: start a local Ray instance].",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Keep the videos of OUTPUT whose meta.json says ok with the same configuration; "
    "delete and redo every other one.",
)
@click.option("--overwrite", is_flag=True, help="Process every input again in a non-empty OUTPUT.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed video.")
@list_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Per-video limit: a worker still busy after it is stopped and the video fails.",
)
def run(
    input_path: Path,
    output: Path,
    config_path: Path | None,
    progress: ShowProgress,
    settings,
    workers: int | None,
    executor: str,
    address: str | None,
    resume: bool,
    overwrite: bool,
    fail_fast: bool,
    timeout: float | None,
    list_request: ListRequest,
    **flags,
) -> None:
    """Estimate flow for INPUT into OUTPUT.

    INPUT is a video file, a folder (searched recursively for videos and for folders of
    .jpg/.png frames), or a list of paths (.txt: one per line; .csv: a 'path' column).
    Each video gets a folder OUTPUT/<relative path without extension>/ with the selected
    formats, timestamps.csv, pairs.csv and meta.json (written last). OUTPUT also holds
    config.yaml and manifest.csv / manifest.parquet (one row per input, updated as videos
    finish); with jpg output, the action-recognition lists (rawframes_flow.txt, classes.txt,
    mmaction2_rawframes.py; --label-level, --class-index and --splits shape them). Every
    configuration key: config show.
    Exit status: 0 when every input is ok, 1 when any failed or was skipped, or when the run
    could not start; 2 for bad usage, including a non-empty OUTPUT without --resume /
    --overwrite.
    """
    names = {
        "model": "flow.model", "checkpoint": "flow.checkpoint", "iters": "flow.iters",
        "device": "flow.device", "precision": "flow.precision", "formats": "output.formats",
        "decoder": "decode.backend", "chunk_size": "decode.chunk_size", "gap": "flow.gap",
        "backward": "flow.backward", "warm_start": "flow.warm_start", "corr": "flow.corr",
        "refine": "flow.refine",
    }  # fmt: skip
    overrides = merge_overrides({names[k]: v for k, v in flags.items()}, settings)
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if timeout is not None and workers == 0 and executor == "local":
        raise click.UsageError("--timeout needs worker processes (--workers 1 or more)")
    if address is not None and executor != "ray":
        raise click.UsageError("--address is for --executor ray")
    try:
        preset = None if config_path is None else preset_path(str(config_path))
        config = load_config(preset, overrides)
        found = find_inputs(input_path)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    jobs = [job for job in found.jobs if not _is_inside(job.path, output)]
    if len(jobs) < len(found.jobs):
        logger.warning("ignoring %d inputs inside the output folder", len(found.jobs) - len(jobs))
    if not jobs:
        raise click.ClickException(f"no videos found in {input_path}")
    lists = None
    if "jpg" in config.output.formats:
        lists = resolve_list_options(list_request, output, reuse=resume)
        check_lists([FinishedVideo(job.video_id, 0, 0, job.rel_path) for job in jobs], lists)
    elif list_request.given:
        raise click.UsageError(
            "--label-level, --class-index and --splits shape the action-recognition lists, "
            "which only jpg output writes (--formats jpg)"
        )
    run_files = RunFiles(output, config, lists, progress)
    terminated: list[int] = []
    try:
        with _terminate_as_interrupt(terminated):
            results = run_batch(
                jobs,
                found.root,
                output,
                config,
                execution=Execution(workers, executor, address, timeout, progress),
                resume=resume,
                overwrite=overwrite,
                fail_fast=fail_fast,
                finish_run=run_files.write,
                start_run=run_files.clear,
            )
    except OutputInUse as exc:
        raise click.UsageError(str(exc)) from None
    except (OutputLocked, RunStartError, WorkerStartupError) as exc:
        raise click.ClickException(str(exc)) from None
    except ManifestNotWritten as exc:
        logger.error("%s", exc)
        results, run_files.failed = exc.results, True
    except KeyboardInterrupt:
        how = "terminated (SIGTERM)" if terminated else "interrupted"
        click.echo(
            f"{how}: {output / 'manifest.csv'} lists what finished; run again with "
            "--resume to continue",
            err=True,
        )
        sys.exit(128 + (terminated[0] if terminated else signal.SIGINT))
    for line in summary_lines(results, output):
        click.echo(line)
    if run_files.failed or any(r.status != "ok" for r in results):
        sys.exit(1)


@contextlib.contextmanager
def _terminate_as_interrupt(received: list[int]) -> Iterator[None]:
    """SIGTERM (``kill``, a cluster scheduler's time limit) stops the run as Ctrl-C does: the
    workers are stopped and the manifest written before the process exits (Python's default
    ends it on the spot). The signal's number is appended to ``received``."""

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (a library caller's worker thread)
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class RunFiles:
    """The run-level files made from the finished videos (features table, action-recognition
    lists), written by :meth:`write` while the run still holds the output folder's lock."""

    output: Path
    config: RunConfig
    lists: ListOptions | None  # None: no jpg output, no lists
    progress: ShowProgress
    failed: bool = False  # a file could not be written (the run then exits 1)

    def clear(self) -> None:
        """Removes an earlier run's features tables and action-recognition lists before any
        video folder changes, so that an interrupted run (Ctrl-C, a killed job) leaves none
        naming videos it redid or removed; :meth:`write` makes this run's. The list options
        stay: ``--resume`` reads them."""
        remove_feature_tables(self.output)
        remove_rawframe_lists(self.output)

    def write(self, results: list[VideoResult]) -> None:
        finished = [r for r in results if r.status == "ok"]
        if self.config.features.enabled:
            try:
                table = collect_feature_tables(
                    self.output,
                    [r.video_id for r in finished],
                    table_format=self.config.features.table_format,
                    progress=self.progress,
                )
            except OSError as exc:
                self._failed("features table not written", exc)
            else:
                if table is not None:
                    click.echo(f"features table: {table}")
        else:
            try:
                remove_feature_tables(self.output)  # an earlier run's, of videos redone now
            except OSError as exc:
                self._failed("earlier features table not removed", exc)
        if self.lists is None:  # no jpg output: no lists, nor an earlier run's
            try:
                remove_rawframe_lists(self.output)
                (self.output / OPTIONS_FILE).unlink(missing_ok=True)
            except OSError as exc:
                self._failed("earlier annotation lists not removed", exc)
        else:
            videos = [FinishedVideo(r.video_id, r.frames, r.pairs, r.rel_path) for r in finished]
            try:
                everyone = [r.video_id for r in results]  # class numbers over all inputs
                written = write_run_annotations(
                    self.output, self.config, videos, self.lists, everyone
                )
            except (OSError, ValueError) as exc:  # SplitFileError included
                self._failed("annotation lists not written", exc)
            else:
                click.echo(describe(written))

    def _failed(self, what: str, error: Exception) -> None:
        logger.error("%s: %s", what, error)
        self.failed = True


def _is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (outputs of an earlier run are not inputs)."""
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents
