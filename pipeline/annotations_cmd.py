"""``annotations``: (re)write the action-recognition lists of a finished ``run`` folder.

``run`` writes them itself when the configuration selects ``jpg`` output; this command
rewrites them from the folder's manifest and ``config.yaml`` (e.g. with another
``--label-level``) without computing any flow. See :mod:`pipeline.annotations`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import click

from .annotations import (
    FinishedVideo,
    ListOptions,
    split_keys,
    unknown_classes,
    write_rawframe_lists,
)
from .config import ConfigError, RunConfig, load_config
from .dataset_splits import (
    OfficialSplits,
    SplitFileError,
    assign_to_splits,
    read_class_index,
    read_official_splits,
)
from .json_files import write_json
from .manifest import MANIFEST_CSV, has_manifest, read_manifest_csv
from .run_start import layout_markers

OPTIONS_FILE = "annotation_options.json"
"""The list options the lists in a run folder were written with (reused by ``--resume`` and
``annotations``)."""

LABEL_LEVEL_HELP = (
    "Which folder above each video names its class in the action-recognition lists "
    "(1: the folder holding the video, as in UCF101/HMDB51/Kinetics trees; 2: the one above; "
    "0: no labels). Default: the run's earlier choice, else 1."
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


@dataclass(frozen=True)
class ListRequest:
    """The list options as given on the command line (``None``: not given)."""

    label_level: int | None = None
    class_index: tuple[str, ...] | None = None
    splits: OfficialSplits | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.label_level, self.class_index, self.splits))


def list_options(command: Callable) -> Callable:
    """``--label-level``, ``--class-index`` and ``--splits``, gathered into one
    ``list_request`` argument (:class:`ListRequest`); the files are read when the command
    starts, so a bad one fails before any work."""

    @click.option("--label-level", type=click.IntRange(min=0), default=None, help=LABEL_LEVEL_HELP)
    @click.option(
        "--class-index", type=_FILE, callback=_reading(read_class_index), help=CLASS_INDEX_HELP
    )
    @click.option(
        "--splits", type=_FOLDER, callback=_reading(read_official_splits), help=SPLITS_HELP
    )
    @functools.wraps(command)
    def wrapper(*args, label_level: int | None, class_index, splits, **kw):
        return command(*args, list_request=ListRequest(label_level, class_index, splits), **kw)

    return wrapper


def resolve_list_options(request: ListRequest, out_root: Path, *, reuse: bool) -> ListOptions:
    """The options to write lists with: what ``request`` gives, and for what it leaves out,
    with ``reuse`` the options the lists in ``out_root`` were last written with (so that
    ``run --resume`` and ``annotations`` keep a run's class numbers and splits), else the
    defaults (label level 1, classes by name, no splits)."""
    saved = _saved_options(out_root) if reuse else {}
    label_level = request.label_level
    if label_level is None:
        label_level = int(saved.get("label_level", 1))
    if request.splits is not None or request.class_index is not None:
        splits = request.splits
        class_index = request.class_index or (splits.class_index if splits else None)
    else:
        splits = _saved_splits(saved.get("splits_folder"))
        class_index = tuple(saved["class_index"]) if saved.get("class_index") else None
    return ListOptions(
        label_level,
        class_index,
        splits.splits if splits else {},
        splits.folder if splits else None,
    )


def _saved_splits(folder: str | None) -> OfficialSplits | None:
    if not folder:
        return None
    try:
        return read_official_splits(folder)
    except SplitFileError as exc:
        raise click.ClickException(
            f"the split folder these lists were written with cannot be read ({exc}); pass "
            "--splits again"
        ) from None


def _saved_options(out_root: Path) -> dict:
    try:
        saved = json.loads((out_root / OPTIONS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def check_layout(out_root: Path, config: RunConfig, videos: list[FinishedVideo]) -> None:
    """Raises a :class:`click.ClickException` when finished videos were written by an earlier
    motionpipe with another flow-JPEG layout than today's reading of ``config`` (their
    meta.json's results key lacks :func:`pipeline.run_start.layout_markers`): lists written
    now would name files they do not have."""
    expected = layout_markers(config)
    if not expected:
        return
    stale = []
    for video in videos:
        try:
            meta = json.loads((out_root / video.video_id / "meta.json").read_text())
            output = meta["results_key"]["output"]
        except (OSError, ValueError, KeyError, TypeError):
            output = {}
        if any(output.get(name) != value for name, value in expected.items()):
            stale.append(video.video_id)
    if stale:
        raise click.ClickException(
            f"{len(stale)} video(s) (e.g. {stale[0]!r}) were written by an earlier motionpipe "
            "with another frame layout; run the same command with --resume to redo them, then "
            "write the lists"
        )


def check_lists(videos: list[FinishedVideo], options: ListOptions) -> None:
    """Raises a :class:`click.ClickException` when the lists could not be written for
    ``videos``: classes the class index lacks, or a split entry matching two of them. ``run``
    checks its inputs with this before computing anything."""
    unknown = unknown_classes((video.video_id for video in videos), options)
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise click.ClickException(
            f"{len(unknown)} class folder(s) are not in the class index: {shown} "
            "(--class-index / --splits; --label-level picks the class folder)"
        )
    try:
        assign_to_splits(split_keys(videos), options.splits)
    except SplitFileError as exc:
        raise click.ClickException(f"--splits: {exc}") from None


def write_run_annotations(
    out_root: Path,
    config: RunConfig,
    videos: Iterable[FinishedVideo],
    options: ListOptions,
    all_video_ids: Iterable[str],
) -> dict[str, Path]:
    """The lists of :mod:`pipeline.annotations` for a run with ``config`` (its jpg layout for
    its pair gap and whether RGB frames were written): ``videos`` are the finished ones,
    ``all_video_ids`` every input, which the class numbers are taken over.

    Raises:
        ValueError: see :func:`pipeline.annotations.write_rawframe_lists`.
    """
    written = write_rawframe_lists(
        out_root,
        videos,
        config.output.jpg_layout.for_gap(config.flow.gap),
        rgb=config.output.write_rgb,
        options=options,
        all_video_ids=all_video_ids,
    )
    record = {
        "label_level": options.label_level,
        "class_index": list(options.class_index) if options.class_index is not None else None,
        "splits_folder": options.splits_folder,
    }
    write_json(out_root / OPTIONS_FILE, record)
    written["options"] = out_root / OPTIONS_FILE
    return written


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
def annotations_command(output: Path, list_request: ListRequest) -> None:
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
    table = read_manifest_csv(output)
    videos = [
        FinishedVideo(str(row.video_id), int(row.frames), int(row.pairs), str(row.path))
        for row in table.itertuples()
        if row.status == "ok"
    ]
    check_layout(output, config, videos)
    options = resolve_list_options(list_request, output, reuse=True)
    try:  # nothing is written when the lists cannot be
        written = write_run_annotations(
            output, config, videos, options, [str(v) for v in table["video_id"]]
        )
    except (OSError, ValueError) as exc:  # SplitFileError included; OSError: disk full
        raise click.ClickException(f"annotation lists not written: {exc}") from None
    click.echo(describe(written))
