"""Finding the videos of an input path and naming their output folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .runner import VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoJob:
    """One input video and the folder (relative to the output root) its outputs go to."""

    path: Path
    video_id: str


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def discover(input_path: str | Path) -> list[VideoJob]:
    """A single file, or every video below a folder (recursive, extensions case-insensitive,
    hidden files and macOS ``._`` AppleDouble files skipped), in sorted order.

    The video id is the path relative to the folder without its extension (so ``a/clip.mp4``
    and ``b/clip.mp4`` never collide); when two files differ only by extension, the extension
    is kept as a suffix (``clip_mkv``).
    """
    root = Path(input_path)
    if root.is_file() or (root.is_symlink() and not root.exists()):
        return [VideoJob(root, root.stem)]
    if not root.exists():
        raise FileNotFoundError(f"input not found: {root}")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in VIDEO_EXTENSIONS
        and not _is_hidden(p, root)
        and (p.is_file() or p.is_symlink())
    )
    stems: dict[str, int] = {}
    for p in files:
        key = str(p.relative_to(root).with_suffix(""))
        stems[key] = stems.get(key, 0) + 1
    jobs = []
    for p in files:
        key = str(p.relative_to(root).with_suffix(""))
        video_id = key if stems[key] == 1 else f"{key}_{p.suffix.lower().lstrip('.')}"
        jobs.append(VideoJob(p, video_id))
    return jobs
