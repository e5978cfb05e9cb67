"""``annotations``: (re)write the action-recognition lists of a finished ``run`` folder.

``run`` writes them itself when the configuration selects ``jpg`` output; this command
rewrites them from the folder's manifest and ``config.yaml`` (e.g. with another
``--label-level``) without computing any flow. See :mod:`pipeline.annotations`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path

import click
import pandas as pd

from .annotations import FinishedVideo, ListOptions, unknown_classes, write_rawframe_lists
from .config import ConfigError, RunConfig, load_config
from .dataset_splits import SplitFileError, read_class_index, read_official_splits
from .manifest import MANIFEST_CSV, has_manifest

LABEL_LEVEL_HELP = (
    "Which folder above each video names its class in the action-recognition lists "
    "(1: the folder holding the video, as in UCF101/HMDB51/Kinetics trees; 2: the one above; "
    "0: no labels)."
)


CLASS_INDEX_HELP = (
    "Class numbering: a file of 'N name' lines (UCF101's classInd.txt; numbers from 1 become "
    "labels from 0) or one name a line. Default: the classes sorted by name ignoring case "
    "(UCF101's official order), or --splits' classInd.txt."
)
SPLITS_HELP = (
    "Folder of official split files (UCF101's ucfTrainTestlist, HMDB51's "
    "testTrainMulti_7030_splits): also write rawframes_flow_train_split1.txt, "
    "rawframes_flow_test_split1.txt, ... for every split."
)
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)


def _reading(reader: Callable) -> Callable:
    """A click callback that reads the option's file with ``reader`` when the command starts
    (a bad file is a usage error naming the option and the file's problem)."""

    def callback(ctx: click.Context, param: click.Parameter, path: Path | None):
        try:
            return reader(path) if path else None
        except SplitFileError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


def list_options(command: Callable) -> Callable:
    """``--label-level``, ``--class-index`` and ``--splits``, gathered into one
    ``list_options`` argument (:class:`pipeline.annotations.ListOptions`); the files are read
    when the command starts, so a bad one fails before any work."""

    @click.option(
        "--label-level",
        type=click.IntRange(min=0),
        default=1,
        show_default=True,
        help=LABEL_LEVEL_HELP,
    )
    @click.option(
        "--class-index", type=_FILE, callback=_reading(read_class_index), help=CLASS_INDEX_HELP
    )
    @click.option(
        "--splits", type=_FOLDER, callback=_reading(read_official_splits), help=SPLITS_HELP
    )
    @functools.wraps(command)
    def wrapper(*args, label_level: int, class_index, splits, **kw):
        if class_index is None and splits is not None:
            class_index = splits.class_index
        options = ListOptions(label_level, class_index, splits.splits if splits else {})
        return command(*args, list_options=options, **kw)

    return wrapper


def check_classes(video_ids: Iterable[str], options: ListOptions) -> None:
    """Raises a :class:`click.ClickException` naming the classes the class index lacks."""
    unknown = unknown_classes(video_ids, options)
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise click.ClickException(
            f"{len(unknown)} class folder(s) are not in the class index: {shown} "
            "(--class-index / --splits; --label-level picks the class folder)"
        )


def write_run_annotations(
    out_root: Path, config: RunConfig, videos: Iterable[FinishedVideo], options: ListOptions
) -> dict[str, Path]:
    """The lists of :mod:`pipeline.annotations` for a run with ``config`` (its jpg layout for
    its pair gap and whether RGB frames were written).

    Raises:
        ValueError: see :func:`pipeline.annotations.write_rawframe_lists`.
    """
    return write_rawframe_lists(
        out_root,
        videos,
        config.output.jpg_layout.for_gap(config.flow.gap),
        rgb=config.output.write_rgb,
        options=options,
    )


def describe(written: dict[str, Path]) -> str:
    """One line for the terminal: where the lists are and what they hold."""
    count = len(written["flow_list"].read_text(encoding="utf-8").splitlines())
    classes = written.get("classes")
    n_classes = len(classes.read_text(encoding="utf-8").splitlines()) if classes else 0
    labels = f"{n_classes} classes in {classes}" if classes else "no labels"
    splits = [name.split(":", 1)[1] for name in written if name.startswith("split:")]
    in_splits = f", splits {', '.join(splits)}" if splits else ""
    return f"action-recognition lists: {written['flow_list']} ({count} videos, {labels}{in_splits})"


@click.command("annotations")
@click.argument("output", type=click.Path(exists=True, file_okay=False, path_type=Path))
@list_options
def annotations_command(output: Path, list_options: ListOptions) -> None:
    """Write mmaction2 annotation lists (rawframes_flow.txt, rawframes_rgb.txt, classes.txt,
    split lists, mmaction2_rawframes.py) for the finished videos of the run folder OUTPUT."""
    if not has_manifest(output):
        raise click.ClickException(f"{output} holds no motionpipe run (no {MANIFEST_CSV})")
    try:
        config = load_config(output / "config.yaml")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if "jpg" not in config.output.formats:
        raise click.ClickException(
            f"the run in {output} wrote no flow JPEGs (output.formats: "
            f"{', '.join(config.output.formats)})"
        )
    table = pd.read_csv(output / MANIFEST_CSV, keep_default_na=False)
    videos = [
        FinishedVideo(str(row.video_id), int(row.frames), int(row.pairs))
        for row in table.itertuples()
        if row.status == "ok"
    ]
    check_classes((video.video_id for video in videos), list_options)
    try:
        written = write_run_annotations(output, config, videos, list_options)
    except ValueError as exc:  # SplitFileError included
        raise click.ClickException(f"annotation lists not written: {exc}") from None
    click.echo(describe(written))
