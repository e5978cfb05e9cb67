"""Annotation lists for action-recognition loaders, written beside the flow frames of a run.

mmaction2's ``RawframeDataset`` (1.x; 0.x reads the same lists) takes a text file with one video
per line, ``frame_dir total_frames label``, split on whitespace, and loads frame ``i`` (``i``
from ``start_index`` to ``start_index + total_frames - 1``) from
``<data_prefix>/<frame_dir>/<filename_tmpl>`` formatted with ``i`` (RGB) or with ``'x'`` /
``'y'`` and ``i`` (``modality='Flow'``). A ``run`` with ``jpg`` output writes into ``OUT``:

* ``rawframes_flow.txt``: ``<video id>/rawframes <flow pairs> <label>``, one line per finished
  video; ``frame_dir`` is relative to ``OUT``, so ``data_prefix=dict(img=OUT)``;
* ``rawframes_rgb.txt`` (with ``output.write_rgb``): the same with the number of RGB frames;
* ``classes.txt``: class names, line ``n`` is label ``n`` (0-based), when the inputs are laid
  out one folder per class (UCF101, HMDB51, Kinetics as distributed): the class of a video is
  the name of the folder ``label_level`` levels above it (1: the folder holding it). Classes
  are numbered as a class index file says (UCF101's ``classInd.txt``), else sorted by name
  ignoring case (:func:`pipeline.dataset_splits.default_class_order`). Without such a layout
  every label is ``-1`` (what mmaction2 1.x assumes for a missing label; mmaction2 0.x and TSM
  need the column);
* ``rawframes_flow_<split>.txt`` / ``rawframes_rgb_<split>.txt`` for each official split
  (``train_split1``, ``test_split1``, ...; :mod:`pipeline.dataset_splits`): the lines of the
  videos the split lists;
* ``mmaction2_rawframes.py``: the dataset settings for mmaction2 1.x, with the preset's
  ``filename_tmpl`` and ``start_index``, ready to paste into a config.

Flow file ``n`` of a video holds the flow from decoded frame ``n - index_base`` to the next
one (``index_base`` = the preset's first number), so the ``total_frames`` of a flow list is the
number of pairs; RGB frames number one more (``gap`` more for ``flow.gap`` > 1), except for
layouts that write the RGB frame that ends each pair (``tsn``), one per flow.

mmaction2 splits lines on whitespace: a video whose id holds a space cannot be listed. Such
videos are left out with a warning (rename the folders, e.g. spaces to underscores, as
mmaction2's own Kinetics lists do).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from models.atomic_files import write_bytes_atomic
from stages.flow_jpeg import FlowJpegLayout

from .dataset_splits import SplitMembers, assign_to_splits, default_class_order

logger = logging.getLogger(__name__)

FLOW_LIST = "rawframes_flow.txt"
RGB_LIST = "rawframes_rgb.txt"
CLASSES = "classes.txt"
MMACTION2_SNIPPET = "mmaction2_rawframes.py"
SPLIT_LIST_GLOB = "rawframes_*_*split*.txt"
"""Split lists of an earlier run (removed before new lists are written)."""
FRAMES_FOLDER = "rawframes"
"""Folder of a video's flow (and RGB) JPEGs inside its output folder."""


@dataclass(frozen=True)
class FinishedVideo:
    """What the lists need of one finished video (``source``: the input's path relative to the
    input folder, which split files name; the id where it is not known)."""

    video_id: str
    frames: int
    pairs: int
    source: str = ""


def flow_filename_template(layout: FlowJpegLayout) -> str:
    """The layout's flow file names as mmaction2's ``filename_tmpl`` for ``modality='Flow'``:
    formatted with ``'x'`` or ``'y'`` and the frame number (``'{}_{:05d}.jpg'`` for
    ``x_{:05d}.jpg`` / ``y_{:05d}.jpg``, ``'flow_{}_{:05d}.jpg'`` for ``flow_x_...``).

    Raises:
        ValueError: the x and y names differ elsewhere than in one ``x`` / ``y`` character.
    """
    x, y = layout.x_template, layout.y_template
    differ = [n for n, (a, b) in enumerate(zip(x, y, strict=False)) if a != b]
    if len(x) != len(y) or len(differ) != 1 or (x[differ[0]], y[differ[0]]) != ("x", "y"):
        raise ValueError(f"flow names {x!r} / {y!r} differ by more than one 'x' / 'y'")
    return x[: differ[0]] + "{}" + x[differ[0] + 1 :]


def class_of(video_id: str, level: int) -> str | None:
    """The folder ``level`` levels above the video (1: its parent), or ``None`` if the video id
    has fewer folders."""
    folders = PurePosixPath(video_id).parts[:-1]
    return folders[-level] if 1 <= level <= len(folders) else None


@dataclass(frozen=True)
class ListOptions:
    """How the lists label and split the videos.

    Attributes:
        label_level: which folder above a video names its class (0: no labels).
        class_index: class names in label order (a class index file, or UCF101's
            ``classInd.txt`` from ``splits``); ``None``: the classes found, sorted by name
            ignoring case.
        splits: split name -> the entries it lists (:mod:`pipeline.dataset_splits`).
        splits_folder: the folder ``splits`` were read from (recorded with the lists).
    """

    label_level: int = 1
    class_index: tuple[str, ...] | None = None
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    splits_folder: str | None = None


def unknown_classes(video_ids: Iterable[str], options: ListOptions) -> list[str]:
    """Classes of ``video_ids`` missing from ``options.class_index`` (sorted; none without
    an index or labels). A run checks this before computing anything."""
    if options.class_index is None or options.label_level <= 0:
        return []
    known = set(options.class_index)
    found = {class_of(video_id, options.label_level) for video_id in video_ids}
    return sorted(name for name in found if name is not None and name not in known)


def write_rawframe_lists(
    out_root: str | Path,
    videos: Iterable[FinishedVideo],
    layout: FlowJpegLayout,
    *,
    rgb: bool,
    options: ListOptions | None = None,
    all_video_ids: Iterable[str] | None = None,
) -> dict[str, Path]:
    """Writes the annotation lists, ``classes.txt``, the split lists and the mmaction2
    snippet (see the module docstring) for ``videos`` into ``out_root``; returns
    ``{name: path}`` of what was written (split lists as ``"split:<name>"``).

    ``all_video_ids``: every input of the run, finished or not (default: ``videos``'). Classes
    are numbered over them, so a class whose videos all failed keeps its place and the labels
    do not change when a later ``--resume`` finishes them. Labels are written only when every
    video has a class folder at ``options.label_level``; otherwise every label is -1 and a
    warning says why. Files of an
    earlier run that this one does not write (``classes.txt`` without labels, the RGB list
    without RGB frames, split lists) are removed, so the folder never mixes two runs' lists.

    Raises:
        ValueError: a video's class is missing from ``options.class_index``.
        pipeline.dataset_splits.SplitFileError: a split entry matches two videos.
        OSError: a list could not be written (disk full); the lists are then removed.
    """
    options = options or ListOptions()
    root = Path(out_root)
    listed, spaced = [], []
    for video in sorted(videos, key=lambda v: v.video_id):
        (spaced if any(c.isspace() for c in video.video_id) else listed).append(video)
    if spaced:
        logger.warning(
            "%d video(s) left out of the annotation lists: their ids hold white space, which "
            "mmaction2 splits lines on (e.g. %r); rename the folders or files (spaces to "
            "underscores) and run again",
            len(spaced),
            spaced[0].video_id,
        )
    everyone = sorted({*(v.video_id for v in listed), *(all_video_ids or ())})
    unknown = unknown_classes(everyone, options)
    if unknown:
        raise ValueError(f"classes missing from the class index: {', '.join(unknown)}")
    classes = _classes(everyone, options)
    labels = {name: n for n, name in enumerate(classes or [])}
    rgb_count = (lambda v: v.pairs) if layout.rgb_ends_pairs else (lambda v: v.frames)

    def lines(chosen: list[FinishedVideo], count) -> bytes:
        rows = []
        for video in chosen:
            label = labels[class_of(video.video_id, options.label_level)] if classes else -1
            rows.append(f"{video.video_id}/{FRAMES_FOLDER} {count(video)} {label}\n")
        return "".join(rows).encode()

    by_id = {video.video_id: video for video in listed}
    assigned = assign_to_splits(split_keys(listed), options.splits)  # may raise: nothing written
    _warn_about_splits(assigned, options)
    for stale in [*root.glob(SPLIT_LIST_GLOB), root / RGB_LIST, root / CLASSES]:
        stale.unlink(missing_ok=True)  # glob's paths include root (relative ones too)
    try:  # a full disk: no list at all rather than a mix of two runs' lists
        written: dict[str, Path] = {}
        written["flow_list"] = _write(root / FLOW_LIST, lines(listed, lambda v: v.pairs))
        if rgb:
            written["rgb_list"] = _write(root / RGB_LIST, lines(listed, rgb_count))
        if classes is not None:
            written["classes"] = _write(root / CLASSES, "".join(f"{c}\n" for c in classes).encode())
        for name, members in assigned.members.items():
            chosen = [by_id[video_id] for video_id in members]
            flow_path = root / FLOW_LIST.replace(".txt", f"_{name}.txt")
            written[f"split:{name}"] = _write(flow_path, lines(chosen, lambda v: v.pairs))
            if rgb:
                _write(root / RGB_LIST.replace(".txt", f"_{name}.txt"), lines(chosen, rgb_count))
        snippet = mmaction2_snippet(
            root, layout, rgb=rgb, num_classes=len(classes or []), splits=list(assigned.members)
        )
        written["mmaction2_config"] = _write(root / MMACTION2_SNIPPET, snippet.encode())
    except OSError:
        with contextlib.suppress(OSError):  # a folder made read-only keeps what it has
            remove_rawframe_lists(root)
        raise
    return written


def remove_rawframe_lists(out_root: str | Path) -> None:
    """Removes every list :func:`write_rawframe_lists` writes (and its mmaction2 snippet): a
    run that writes none must not leave an earlier run's, naming folders it replaced."""
    root = Path(out_root)
    named = [root / name for name in (FLOW_LIST, RGB_LIST, CLASSES, MMACTION2_SNIPPET)]
    for path in [*root.glob(SPLIT_LIST_GLOB), *named]:
        path.unlink(missing_ok=True)


def split_keys(videos: Iterable[FinishedVideo]) -> dict[str, str]:
    """Video id -> the path split entries are matched against (the input's relative path)."""
    return {video.video_id: video.source or video.video_id for video in videos}


def _warn_about_splits(assigned: SplitMembers, options: ListOptions) -> None:
    for name, missing in assigned.unmatched.items():
        if not options.splits[name]:
            logger.warning("split %s lists no videos: its list is empty", name)
        elif missing:
            logger.warning(
                "split %s: %d of its %d videos are not in the lists (not finished, left out "
                "or not among the inputs), e.g. %r",
                name,
                len(missing),
                len(options.splits[name]),
                missing[0],
            )


def _classes(video_ids: list[str], options: ListOptions) -> list[str] | None:
    """Class names in label order, or ``None`` when labels are off or some video has no class
    folder."""
    level = options.label_level
    if level <= 0 or not video_ids:
        return None
    names = {video_id: class_of(video_id, level) for video_id in video_ids}
    missing = [video_id for video_id, name in names.items() if name is None]
    if missing:
        # a tree where no video has a class folder is simply unlabelled (one file, a flat
        # folder): said quietly; a tree where only some lack one is likely a mistake
        logger.log(
            logging.WARNING if len(missing) < len(names) else logging.INFO,
            "annotation lists without labels (-1): %d video(s) have no folder %d level(s) "
            "above them (e.g. %r), so the inputs are not laid out one folder per class at "
            "that level (--label-level)",
            len(missing),
            level,
            missing[0],
        )
        return None
    if options.class_index is not None:
        return list(options.class_index)
    return default_class_order(names.values())


def mmaction2_snippet(
    root: Path, layout: FlowJpegLayout, *, rgb: bool, num_classes: int, splits: list[str] = ()
) -> str:
    """mmaction2 1.x dataset settings for the lists in ``root`` (Python config syntax)."""
    data_root = os.path.abspath(root)
    text = [
        "# mmaction2 1.x dataset settings for the frames motionpipe wrote in this folder.",
        "# Paste into a config (e.g. a copy of configs/recognition/tsn/",
        "# tsn_imagenet-pretrained-r50_8xb32_5x1x3-110e_kinetics400-flow.py) and keep its",
        "# pipelines.",
    ]
    if splits:
        text.append("# Official splits: set ann_file to their lists, e.g. for split 1:")
        for name in splits[:2]:
            text.append(f"#   {data_root + '/' + FLOW_LIST.replace('.txt', f'_{name}.txt')}")
        text.append(f"# (all splits: {', '.join(splits)}; RGB: rawframes_rgb_<split>.txt)")
    else:
        text.append("# Split the lists into train / val lists as your data set requires.")
    text += [
        f"data_root = {data_root!r}",
        "flow_dataset = dict(",
        "    type='RawframeDataset',",
        f"    ann_file={data_root + '/' + FLOW_LIST!r},",
        "    data_prefix=dict(img=data_root),",
        f"    filename_tmpl={flow_filename_template(layout)!r},",
        f"    start_index={layout.index_base},",
        "    modality='Flow')",
    ]
    if rgb:
        text += [
            "rgb_dataset = dict(",
            "    type='RawframeDataset',",
            f"    ann_file={data_root + '/' + RGB_LIST!r},",
            "    data_prefix=dict(img=data_root),",
            f"    filename_tmpl={layout.image_template!r},",
            f"    start_index={layout.index_base},",
            "    modality='RGB')",
        ]
    if num_classes:
        text.append(f"num_classes = {num_classes}  # model.cls_head.num_classes; see classes.txt")
    return "\n".join(text) + "\n"


def _write(path: Path, data: bytes) -> Path:
    write_bytes_atomic(path, data)
    return path
