"""Atomic file writes: a file appears under its name complete, or not at all.

Bytes go to a hidden temporary file next to the destination (``.<name>.<random>.tmp``, same
folder so :func:`os.replace` is atomic), which is then moved over the destination; on any error
the temporary file is removed. The temporary file is created as :func:`open` creates files (mode
``0o666`` less the umask), so a finished file has the permissions the user's umask asks for. A
write error that names no file (``ENOSPC`` on a full disk, ``EIO``) is raised again naming the
destination.

Durability: with ``durable=True`` (the default) the temporary file is fsynced before the move,
so after a crash the file under its name is complete even after a power loss; that is for files
whose presence says "done": a video's ``meta.json``, the manifest, the run's configuration,
checkpoints and downloaded weights. The many per-pair and per-video outputs are written with
``durable=False`` (an fsync costs 3.65 ms against 0.11 ms per small file): they are only
counted once the video's ``meta.json``, written last and durably, exists.

The one helper every layer writes through (checkpoint downloads here, outputs in ``stages``,
the manifest and configuration in ``pipeline``); it lives in ``models``, the bottom layer, so
that all of them can import it. Plain ``os`` only.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

__all__ = [
    "atomic_open",
    "atomic_path",
    "commit",
    "create_temporary",
    "leftover_targets",
    "naming_errors",
    "remove_leftover_temporaries",
    "write_bytes_atomic",
]


def create_temporary(target: PathLike, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a hidden ``.<name>.<random><suffix>`` next to ``target``; return its fd and path.

    Unlike :func:`tempfile.mkstemp` (always mode ``0o600``), the file gets ``0o666`` less the
    umask, as :func:`open` would give ``target`` itself: renaming it into place must not narrow
    the permissions of outputs that others (a group, a web server) are meant to read.
    """
    target = Path(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(candidate, flags, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {target}")


def remove_leftover_temporaries(target: PathLike) -> list[Path]:
    """Delete the temporary files that writers of ``target`` killed mid-write left next to it
    (``.<name>.<8 hex digits>.tmp``); return their paths.

    Only for a caller that knows no one writes ``target`` now (a run that holds its output
    folder's lock), since a live writer's temporary file has the same name.
    """
    target = Path(target)
    own = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{8}}\.tmp")
    removed = []
    for path in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        if own.fullmatch(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def leftover_targets(folder: PathLike) -> set[str]:
    """Names of the files in ``folder`` that have a writer's temporary beside them
    (``.<name>.<8 hex digits>.tmp``, see :func:`remove_leftover_temporaries`)."""
    temporary = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.tmp")
    matches = (temporary.fullmatch(path.name) for path in Path(folder).glob(".*.tmp"))
    return {match["name"] for match in matches if match}


def remove_temporaries_in(
    folder: PathLike, *, targets: Callable[[str], bool] = lambda name: True
) -> list[Path]:
    """Delete the temporaries killed writers left in ``folder`` beside the files whose names
    ``targets`` accepts (every one by default); return their paths. As for
    :func:`remove_leftover_temporaries`, only where no one writes into ``folder`` now."""
    removed = []
    for name in sorted(leftover_targets(folder)):
        if targets(name):
            removed += remove_leftover_temporaries(Path(folder) / name)
    return removed


@contextlib.contextmanager
def naming_errors(path: PathLike) -> Iterator[None]:
    """Raise an :class:`OSError` that names no file (``ENOSPC`` and ``EIO`` from ``write``,
    errors of libraries writing to an open handle) again with ``path`` as its file name."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        if exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
        raise OSError(f"cannot write {path}: {exc}") from exc


def commit(temporary: PathLike, target: PathLike, *, durable: bool = True) -> None:
    """Move a finished temporary file over ``target`` (fsynced first when ``durable``)."""
    if durable:
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
    os.replace(temporary, target)


@contextlib.contextmanager
def atomic_path(path: PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a hidden temporary path next to ``path``; move it over ``path`` on success.

    For writers that need a file name (pandas, zip files, ``torch.save``). The destination
    folder is created if missing; the temporary file is removed on any error. Errors that name
    no file are raised naming ``path``. ``durable``: fsync before the move (module docstring).
    """
    target = Path(path)
    with naming_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = create_temporary(target)
        os.close(handle)
        try:
            yield temporary
            commit(temporary, target, durable=durable)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    logger.debug("wrote %s", target)


@contextlib.contextmanager
def atomic_open(path: PathLike, *, durable: bool = True) -> Iterator[IO[bytes]]:
    """:func:`atomic_path` as an open binary handle."""
    with atomic_path(path, durable=durable) as temporary, temporary.open("wb") as handle:
        yield handle


def write_bytes_atomic(path: PathLike, data: Any, *, durable: bool = True) -> None:
    """Write a buffer (``bytes``, or a uint8 array from ``cv2.imencode``) atomically."""
    with atomic_open(path, durable=durable) as handle:
        handle.write(memoryview(data))
