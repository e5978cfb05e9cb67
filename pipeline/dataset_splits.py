"""Class numbering and train / test splits of action-recognition data sets, read from the
files the data sets ship, so that the lists motionpipe writes number classes and split videos
as published models were trained (TSN's HMDB51 numbering is its own ``class_list.txt``, not
sorted: pass it as the class index).

Class index (``--class-index FILE``)
    One class a line. ``N name`` lines (UCF101's ``classInd.txt``: ``1 ApplyEyeMakeup``) give
    class ``name`` the label ``N - 1`` when the numbers start at 1 (as mmaction2's and TSN's
    UCF101 lists do) and ``N`` when they start at 0; lines holding only a name are numbered
    0, 1, ... in file order. Without a class index, classes are sorted by name ignoring case
    (:func:`default_class_order`), which gives UCF101's official numbering (Python's plain
    ``sorted`` puts ``HammerThrow`` before ``Hammering``) and the sorted order mmaction2 uses
    for HMDB51 and Kinetics.

Official splits (``--splits FOLDER``), recognised by their files:
    UCF101 (``ucfTrainTestlist/``): ``classInd.txt`` (the class index, used unless
    ``--class-index`` is given), ``trainlist0K.txt`` (``Class/v_..._gXX_cYY.avi label``) and
    ``testlist0K.txt`` (``Class/v_....avi``) for K = 1, 2, 3.
    HMDB51 (``testTrainMulti_7030_splits/``): ``<class>_test_splitK.txt``, one line per video of
    the class, ``<name>.avi N`` with N = 1 for training, 2 for testing, 0 for neither.
    Each gives the splits ``train_splitK`` and ``test_splitK``.

A split entry names a video by its path, matched (ignoring case, since UCF101's lists spell
``HandStandPushups`` where the folder is ``HandstandPushups``) against the last as many path
components of each input's path, with its extension or, failing that, without (a video
transcoded to another container still matches); HMDB51 entries, which are bare file names,
match the last component.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

_UCF101_LISTS = re.compile(r"(train|test)list0*(\d+)\.txt$")
_HMDB51_FILE = re.compile(r"(.+)_test_split(\d+)\.txt$")
_HMDB51_SUBSETS = {"1": "train", "2": "test"}


class SplitFileError(ValueError):
    """A class index or split file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class OfficialSplits:
    """What a split folder holds.

    Attributes:
        dataset: ``"ucf101"`` or ``"hmdb51"``.
        splits: split name (``train_split1``, ``test_split1``, ...) -> the video entries it
            lists (paths as written, POSIX separators), in file order.
        class_index: the class names in label order where the folder has a class index
            (UCF101's ``classInd.txt``), else ``None``.
        folder: the folder read (absolute).
    """

    dataset: str
    splits: Mapping[str, tuple[str, ...]]
    class_index: tuple[str, ...] | None = None
    folder: str = ""


@dataclass(frozen=True)
class SplitMembers:
    """The videos of each split, and the entries of each split no listed video matches."""

    members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unmatched: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def default_class_order(names: Iterable[str]) -> list[str]:
    """Class names sorted ignoring case (ties, names that differ only in case, by exact name)."""
    return sorted(set(names), key=lambda name: (name.casefold(), name))


def read_class_index(path: str | Path) -> tuple[str, ...]:
    """Class names in label order from a class index file (see the module docstring).

    Raises:
        SplitFileError: an unreadable file, a line mixing formats, a repeated name or number,
            or numbers that are not consecutive from 0 or 1.
    """
    path = Path(path)
    rows = [line.split() for line in _read_lines(path)]
    rows = [(n, row) for n, row in enumerate(rows, 1) if row]
    if not rows:
        raise SplitFileError(f"{path}: no class names")
    numbered = [len(row) == 2 and row[0].isdigit() for _, row in rows]
    if any(numbered) and not all(numbered):
        line = rows[numbered.index(not numbered[0])][0]
        raise SplitFileError(
            f"{path}, line {line}: expected every line as 'number name' or every line as "
            "a single name"
        )
    if not numbered[0]:
        bad = next((n for n, row in rows if len(row) != 1), None)
        if bad is not None:
            raise SplitFileError(f"{path}, line {bad}: a class name holds white space")
        names = [row[0] for _, row in rows]
    else:
        numbers = [int(row[0]) for _, row in rows]
        base = min(numbers)
        if base not in (0, 1) or sorted(numbers) != list(range(base, base + len(numbers))):
            raise SplitFileError(
                f"{path}: class numbers must run 0..N-1 or 1..N without gaps or repeats"
            )
        names = [row[1] for _, row in sorted(rows, key=lambda item: int(item[1][0]))]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SplitFileError(f"{path}: class {repeated[0]!r} is listed more than once")
    return tuple(names)


def read_official_splits(folder: str | Path) -> OfficialSplits:
    """The splits in ``folder`` (UCF101's or HMDB51's published split files).

    Raises:
        SplitFileError: the folder holds neither data set's split files, or one is malformed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SplitFileError(f"{folder}: not a folder of split files")
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if any(_UCF101_LISTS.match(name) for name in names):
        return replace(_ucf101(folder, names), folder=os.path.abspath(folder))
    if any(_HMDB51_FILE.match(name) for name in names):
        return replace(_hmdb51(folder, names), folder=os.path.abspath(folder))
    raise SplitFileError(
        f"{folder}: no split files found: expected UCF101's trainlist01.txt / testlist01.txt "
        "(ucfTrainTestlist) or HMDB51's <class>_test_split1.txt (testTrainMulti_7030_splits)"
    )


def _ucf101(folder: Path, names: list[str]) -> OfficialSplits:
    splits: dict[str, tuple[str, ...]] = {}
    for name in names:
        match = _UCF101_LISTS.match(name)
        if match:
            subset, number = match.group(1), int(match.group(2))
            entries = [line.split()[0] for line in _read_lines(folder / name) if line.split()]
            splits[f"{subset}_split{number}"] = tuple(_entry(e) for e in entries)
    index = folder / "classInd.txt"
    return OfficialSplits(
        "ucf101", _ordered(splits), read_class_index(index) if index.is_file() else None
    )


def _hmdb51(folder: Path, names: list[str]) -> OfficialSplits:
    splits: dict[str, list[str]] = defaultdict(list)
    for name in names:
        match = _HMDB51_FILE.match(name)
        if not match:
            continue
        number = int(match.group(2))
        for n, line in enumerate(_read_lines(folder / name), 1):
            row = line.split()
            if not row:
                continue
            if len(row) != 2 or row[1] not in ("0", "1", "2"):
                raise SplitFileError(
                    f"{folder / name}, line {n}: expected '<video>.avi 0|1|2', got {line!r}"
                )
            if row[1] in _HMDB51_SUBSETS:
                splits[f"{_HMDB51_SUBSETS[row[1]]}_split{number}"].append(_entry(row[0]))
    return OfficialSplits("hmdb51", _ordered({k: tuple(v) for k, v in splits.items()}))


def _ordered(splits: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Splits by number, training before testing."""
    order = {"train": 0, "test": 1}
    return dict(
        sorted(
            splits.items(),
            key=lambda item: (int(item[0].rsplit("split", 1)[1]), order[item[0].split("_")[0]]),
        )
    )


def _entry(text: str) -> str:
    """A split entry as a POSIX path (extension kept)."""
    return str(PurePosixPath(text.replace("\\", "/")))


def _tails(path: str) -> list[tuple[str, ...]]:
    """The case-folded last 1, 2, ... components of ``path``."""
    parts = tuple(part.casefold() for part in PurePosixPath(path).parts)
    return [parts[-k:] for k in range(1, len(parts) + 1)]


def _stem(path: str) -> str:
    pure = PurePosixPath(path)
    return str(pure.with_suffix("")) if pure.suffix else str(pure)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SplitFileError(f"{path}: cannot read: {exc}") from None


def assign_to_splits(
    videos: Mapping[str, str], splits: Mapping[str, tuple[str, ...]]
) -> SplitMembers:
    """Which videos each split lists, and which entries of each split match no video (failed,
    skipped or absent videos).

    An entry matches the input whose path ends with it (ignoring case), else, when none
    does, the input whose path without extension ends with the entry's without extension.

    Args:
        videos: video id -> the input's path relative to the input folder (POSIX; what split
            entries name). Members keep the order of ``videos``.
        splits: split name -> entries (paths relative to the data set's video folder).

    Raises:
        SplitFileError: an entry matches more than one video (e.g. the same file name in two
            folders for a bare HMDB51 name).
    """
    exact: dict[tuple[str, ...], list[str]] = defaultdict(list)
    by_stem: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for video_id, source in videos.items():
        for tail in _tails(source):
            exact[tail].append(video_id)
        for tail in _tails(_stem(source)):
            by_stem[tail].append(video_id)
    members, unmatched = {}, {}
    for name, entries in splits.items():
        chosen: set[str] = set()
        missing = []
        for entry in entries:
            # the file named (e.g. v_a.avi), else any input of that name (a transcoded
            # v_a.mp4, a folder of its frames)
            found = exact.get(_tails(entry)[-1], []) or by_stem.get(_tails(_stem(entry))[-1], [])
            if len(found) > 1:
                raise SplitFileError(
                    f"split {name}: entry {entry!r} matches {len(found)} videos "
                    f"({found[0]!r}, {found[1]!r})"
                )
            if found:
                chosen.add(found[0])
            else:
                missing.append(entry)
        members[name] = tuple(v for v in videos if v in chosen)
        unmatched[name] = tuple(missing)
    return SplitMembers(members, unmatched)
