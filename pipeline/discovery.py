"""Finding the inputs of a run and naming their output folders.

An input is one of:

* a video file: one job, its id is the file name without extension;
* a folder: every video below it (recursive; extensions case-insensitive; hidden entries and
  macOS ``._*`` AppleDouble files skipped; symbolic links followed, each real folder scanned
  once so that a link to an ancestor cannot loop; a broken link with a video extension becomes
  a job that fails with the reason; so does a folder that cannot be listed), plus every
  *frame folder* below it (a folder with a single image and no video is named in a warning);
* a list file (``.txt`` / ``.lst``: one path per line, blank lines and ``#`` comments ignored;
  ``.csv``: a ``path`` column): relative paths are relative to the list file's folder; a listed
  folder is scanned like a folder input; a listed path that does not exist becomes a failed job.

A *frame folder* is a folder that holds at least two images (``.jpg``, ``.jpeg``, ``.png``) and
no video: its images, in natural order (``2.png`` before ``10.png``), are one video.

A path a list reaches more than once (listed directly and again through a listed folder, under
two spellings such as ``a/../b.mp4``, or through two listed folders that overlap) is one job;
the repeat is logged. A symbolic link with its own name stays a video of its own, as in folders.

Video ids mirror the input paths relative to the input root (the folder; the parent of a single
file or frame folder; for a list, the folder holding the list file and every listed path):
``a/clip.mp4`` -> ``a/clip``. Ids are made unique and never nest (one video's output folder is
never inside another's): on a clash the extension (``clip_mp4``) or ``_frames`` is appended, then
a counter. Ids that differ only in case or Unicode normalisation clash too, since macOS and
Windows would give them one folder. A top-level name the run writes itself (``manifest.csv``, ``config.yaml``, the
features tables, the annotation lists, ``.motionpipe.lock``; :func:`is_reserved`) is not an id
either: ``classes.txt.mp4`` becomes ``classes.txt_mp4``, and the leading dots of a hidden input
listed by name become ``_`` (``.clip.mp4`` -> ``_clip``), since the run's lock and temporary files
are the dot names at the output root. A name that is not UTF-8 (Linux allows any bytes) is
written with its undecodable bytes as ``\\xNN`` in its id and relative path (``caf\\xe9.mkv``
-> ``caf\\xe9``), so that the manifest can hold them. Only regular files are videos: a FIFO,
socket or device with a video extension becomes a failed job (opening one would wait forever).
"""

from __future__ import annotations

import csv
import fnmatch
import logging
import os
import stat
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from stages.decoding.frames_folder import IMAGE_EXTENSIONS, natural_key

from .manifest import utf8_text

logger = logging.getLogger(__name__)

#: Container extensions treated as videos (compared lower-case).
VIDEO_EXTENSIONS = (
    ".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
    ".ts", ".mts", ".m2ts", ".flv", ".3gp", ".ogv", ".mxf", ".vob",
)  # fmt: skip

LIST_EXTENSIONS = (".txt", ".lst", ".csv")
"""An input file with one of these extensions is a list of inputs."""

RESERVED_IDS = frozenset({
    "manifest.csv", "manifest.parquet", "config.yaml", "features.parquet", "features.csv",
    "rawframes_flow.txt", "rawframes_rgb.txt", "classes.txt", "mmaction2_rawframes.py",
    "annotation_options.json",
})  # fmt: skip
"""Names at the output root that belong to the run, not to a video (a test checks that every
run-level file name is here)."""

RESERVED_PATTERNS = ("rawframes_*.txt",)
"""Patterns of run-level names at the output root (the split lists ``rawframes_flow_*.txt``)."""

MIN_FRAME_FOLDER_IMAGES = 2


@dataclass(frozen=True)
class VideoJob:
    """One input and the folder (relative to the output root) its outputs go to.

    Attributes:
        path: the video file or frame folder.
        video_id: output folder name relative to the output root (POSIX separators).
        rel_path: the input's path relative to the input root (POSIX separators).
        kind: ``"video"`` or ``"frames"`` (a folder of images).
        problem: why the input cannot be processed at all (broken link, listed file missing,
            folder that cannot be read); ``None`` for a normal input.
        problem_type: the error type its manifest row names.
    """

    path: Path
    video_id: str
    rel_path: str = ""
    kind: str = "video"
    problem: str | None = None
    problem_type: str = "FileNotFoundError"


@dataclass(frozen=True)
class Discovery:
    """The input root (what manifest paths are relative to) and the jobs, in sorted order."""

    root: Path
    jobs: list[VideoJob]


def is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_hidden(name: str) -> bool:
    """Hidden files and folders, including macOS ``._*`` AppleDouble files."""
    return name.startswith(".")


def _broken_link_reason(path: str) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    if os.path.islink(path) and os.path.realpath(path) == os.path.abspath(path):
        return f"symbolic link loop (points to '{target}')"
    return f"broken symbolic link: its target '{target}' does not exist"


def _special_file_reason(path: str) -> str | None:
    """Why ``path`` is not a regular file a decoder can read to its end (a FIFO, socket or
    device), or ``None`` (a regular file, or one that cannot be examined: reading it says why)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    return f"not a regular file: {kind}, which a decoder could wait on forever"


def _video_job(path: Path, rel: str) -> VideoJob:
    """The job of a video file, failed at once when it is not a regular file."""
    reason = _special_file_reason(str(path))
    if reason is None:
        return VideoJob(path, "", rel, "video")
    return VideoJob(path, "", rel, "video", reason, problem_type="NotARegularFile")


def _folder_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _real_folders(folder: Path) -> set[tuple[int, int]]:
    """Identities of the folders below ``folder`` reached without following any link."""
    keys = set()
    for current, _, _ in os.walk(folder, followlinks=False):
        key = _folder_key(current)
        if key is not None:
            keys.add(key)
    return keys


def _scan_folder(
    folder: Path, rel: PurePosixPath, visited: set[tuple[int, int]], jobs: list[VideoJob]
) -> None:
    """Appends the jobs found below ``folder`` (whose path relative to the root is ``rel``).

    A folder reached through a symbolic link is scanned only when it is not below ``folder``
    under its real path and was not scanned already (so links never loop nor duplicate).
    """
    real_folders = _real_folders(folder)
    stack = [(folder, rel)]
    while stack:
        current, current_rel = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:  # a row in the failure record: its videos are not lost silently
            reason = f"cannot read the folder: {exc.strerror or exc}"
            jobs.append(VideoJob(current, "", str(current_rel), "frames", reason, "OSError"))
            continue
        images = 0
        videos = 0
        subfolders: list[tuple[Path, PurePosixPath]] = []
        for entry in entries:
            if is_hidden(entry.name):
                continue
            entry_rel = current_rel / entry.name
            if entry.is_symlink() and not os.path.exists(entry.path):
                if is_video_name(entry.name):
                    videos += 1
                    reason = _broken_link_reason(entry.path)
                    jobs.append(VideoJob(Path(entry.path), "", str(entry_rel), "video", reason))
                else:
                    logger.debug("ignoring broken link %s", entry.path)
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                key = _folder_key(entry.path)
                linked = entry.is_symlink()
                if key is None or (linked and (key in visited or key in real_folders)):
                    logger.warning(
                        "skipping %s: it leads to a folder scanned under another path "
                        "(symbolic link)",
                        entry.path,
                    )
                    continue
                visited.add(key)
                subfolders.append((Path(entry.path), entry_rel))
            elif is_video_name(entry.name):
                videos += 1
                jobs.append(_video_job(Path(entry.path), str(entry_rel)))
            elif is_image_name(entry.name):
                images += 1
        if images >= MIN_FRAME_FOLDER_IMAGES and videos == 0:
            jobs.append(VideoJob(current, "", str(current_rel), "frames"))
        elif images and videos == 0:
            logger.warning(
                "%s holds %d image(s) and no video: not a frame folder (a video needs %d "
                "frames); skipped",
                current,
                images,
                MIN_FRAME_FOLDER_IMAGES,
            )
        stack.extend(reversed(subfolders))


def _is_frame_folder(folder: Path) -> bool:
    try:
        names = [e.name for e in os.scandir(folder) if not is_hidden(e.name)]
    except OSError:
        return False
    images = sum(is_image_name(n) for n in names)
    return images >= MIN_FRAME_FOLDER_IMAGES and not any(is_video_name(n) for n in names)


def _single(path: Path, root: Path) -> list[VideoJob]:
    """Jobs for one path given explicitly (the input itself or a list entry)."""
    rel = PurePosixPath(os.path.relpath(path, root).replace(os.sep, "/"))
    if os.path.islink(path) and not os.path.exists(path):
        return [VideoJob(path, "", str(rel), "video", _broken_link_reason(str(path)))]
    if path.is_dir():
        if _is_frame_folder(path):
            return [VideoJob(path, "", str(rel), "frames")]
        jobs: list[VideoJob] = []
        key = _folder_key(str(path))
        _scan_folder(path, rel, {key} if key else set(), jobs)
        return jobs
    return [_video_job(path, str(rel))]


def _read_list(list_path: Path) -> list[tuple[str, int]]:
    """``(entry, line number)`` of a ``.txt`` / ``.lst`` / ``.csv`` list of paths."""
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{list_path}: not a UTF-8 text file") from None
    if list_path.suffix.lower() != ".csv":
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            entry = line.strip()
            if entry and not entry.startswith("#"):
                entries.append((entry, number))
        return entries
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        return []
    header = [name.strip().lower() for name in rows[0]]
    if "path" not in header:
        raise ValueError(
            f"{list_path}: a CSV list needs a 'path' column; found columns {rows[0]!r}"
        )
    column = header.index("path")
    return [
        (row[column].strip(), number)
        for number, row in enumerate(rows[1:], start=2)
        if len(row) > column and row[column].strip()
    ]


def _from_list(list_path: Path) -> Discovery:
    base = os.path.abspath(list_path.parent)
    entries: list[tuple[str, str, int]] = []
    seen: set[str] = set()
    for entry, number in _read_list(list_path):
        full = os.path.normpath(os.path.join(base, os.path.expanduser(entry)))
        if full in seen:
            logger.warning("%s line %d: %s is listed again; ignored", list_path, number, entry)
            continue
        seen.add(full)
        entries.append((full, entry, number))
    root = Path(os.path.commonpath([base, *(os.path.dirname(full) for full, _, _ in entries)]))
    jobs: list[VideoJob] = []
    for full, entry, number in entries:
        path = Path(full)
        if not os.path.lexists(path):
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            reason = f"file not found: '{entry}' (listed in {list_path.name}, line {number})"
            jobs.append(VideoJob(path, "", rel, "video", reason))
        else:
            jobs.extend(_single(path, root))
    return Discovery(root, _once_each(jobs, list_path))


def _once_each(jobs: list[VideoJob], list_path: Path) -> list[VideoJob]:
    """``jobs`` without the repeats of a path already among them (the first one is kept)."""
    seen: set[str] = set()
    kept = []
    for job in jobs:
        key = os.path.normpath(os.path.abspath(job.path))
        if key in seen:
            logger.warning("%s reaches %s more than once: processed once", list_path, job.rel_path)
            continue
        seen.add(key)
        kept.append(job)
    return kept


def is_reserved(video_id: str) -> bool:
    """Whether an output folder ``video_id`` would take a name the run writes at the output
    root (:data:`RESERVED_IDS`, :data:`RESERVED_PATTERNS`, or a dot name)."""
    top = PurePosixPath(video_id).parts[0]
    return (
        top in RESERVED_IDS
        or top.startswith(".")
        or any(fnmatch.fnmatchcase(top, pattern) for pattern in RESERVED_PATTERNS)
    )


def _candidate_id(job: VideoJob) -> str:
    rel = PurePosixPath(job.rel_path)
    if job.kind != "frames" and rel.suffix:
        rel = rel.with_suffix("")
    top, *rest = rel.parts or (".",)
    if top.startswith(".") and top not in (".", ".."):  # a hidden input listed by name
        top = "_" + top.lstrip(".")
    return str(PurePosixPath(top, *rest))


def _suffix(job: VideoJob) -> str:
    if job.kind == "frames":
        return "_frames"
    extension = PurePosixPath(job.rel_path).suffix.lower().lstrip(".")
    return f"_{extension}" if extension else "_video"


def _folder_name_key(video_id: str) -> str:
    """What decides whether two output folders are one on some file system: macOS and Windows
    compare names ignoring case, macOS also ignoring Unicode normalisation (NFC / NFD)."""
    return unicodedata.normalize("NFC", video_id).casefold()


def assign_ids(jobs: list[VideoJob]) -> list[VideoJob]:
    """Gives every job a unique id that is neither reserved nor a folder around another id.

    A clash first appends the job's suffix (``_mp4``, ``_frames``) to every clashing id; if
    that is not enough, all but the first count up (``clip_mp4_2``).
    """
    bases = [_candidate_id(job) for job in jobs]
    levels = [0] * len(jobs)

    def make(n: int) -> str:
        if levels[n] == 0:
            return bases[n]
        suffixed = bases[n] + _suffix(jobs[n])
        return suffixed if levels[n] == 1 else f"{suffixed}_{levels[n]}"

    for _ in range(4 * len(jobs) + 4):
        ids = [make(n) for n in range(len(jobs))]
        keys = [_folder_name_key(video_id) for video_id in ids]
        groups: dict[str, list[int]] = defaultdict(list)
        for n, key in enumerate(keys):
            groups[key].append(n)
        ancestors = {str(parent) for key in keys for parent in PurePosixPath(key).parents}
        bump: set[int] = set()
        for members in groups.values():
            if len(members) > 1:
                first_clash = all(levels[n] == 0 for n in members)
                bump.update(members if first_clash else members[1:])
        bump.update(n for n, key in enumerate(keys) if key in ancestors)
        bump.update(n for n, key in enumerate(keys) if is_reserved(key))
        if not bump:
            return [replace(job, video_id=v) for job, v in zip(jobs, ids, strict=True)]
        for n in bump:
            levels[n] += 1
    raise RuntimeError("could not assign unique video ids")  # unreachable: levels only grow


def find_inputs(input_path: str | Path) -> Discovery:
    """The input root and every job of ``input_path`` (see the module docstring).

    Raises:
        FileNotFoundError: ``input_path`` does not exist (and is not a broken link).
        ValueError: a list file cannot be read (not UTF-8, CSV without a ``path`` column).
    """
    given = Path(os.path.abspath(os.path.expanduser(str(input_path))))
    if not os.path.lexists(given):
        raise FileNotFoundError(f"input not found: {input_path}")
    if given.is_file() and given.suffix.lower() in LIST_EXTENSIONS:
        found = _from_list(given)
    elif given.is_dir() and not _is_frame_folder(given):
        key = _folder_key(str(given))
        jobs: list[VideoJob] = []
        _scan_folder(given, PurePosixPath("."), {key} if key else set(), jobs)
        found = Discovery(given, jobs)
    else:
        found = Discovery(given.parent, _single(given, given.parent))
    readable = [replace(job, rel_path=utf8_text(job.rel_path)) for job in found.jobs]
    ordered = sorted(readable, key=lambda job: natural_key(job.rel_path))
    return Discovery(found.root, assign_ids(ordered))
