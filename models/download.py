"""Fetching checkpoint files into the local cache and checking their hashes.

Here live the cache location (:func:`default_cache_dir`), file hashing (:func:`sha256_file`)
and the download of one registry entry (:func:`download_checkpoint`): streamed into a
temporary file next to its destination, unpacked from a zip archive where the entry is a
member of one, checked against the published hash and only then renamed into place, so the
cache never holds a partial or unverified file. Errors are :class:`CheckpointError` with the
URL and the exact path to save the file at by hand (:func:`manual_hint`).

The registry itself (which checkpoints exist, where they come from) is :mod:`models.weights`;
this module only reads the fields of an entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .atomic_files import commit, create_temporary
from .checkpoint_io import CheckpointError, file_header

if TYPE_CHECKING:
    from .weights import WeightSpec

logger = logging.getLogger(__name__)

#: Seconds to wait for the server before a download is given up.
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 20
_USER_AGENT = "motionpipe-checkpoint-fetch/0.1 (+urllib)"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$MOTIONPIPE_CACHE``, else ``$XDG_CACHE_HOME/motionpipe/checkpoints``,
    else ``~/.cache/motionpipe/checkpoints``."""
    explicit = os.environ.get("MOTIONPIPE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "motionpipe" / "checkpoints"


def hash_problem(spec: WeightSpec, digest: str) -> str | None:
    """Why ``digest`` does not match the spec's published hash, or ``None`` if it does."""
    if spec.sha256 is not None and digest != spec.sha256.lower():
        return f"SHA-256 is {digest}, expected {spec.sha256.lower()}"
    if spec.sha256_prefix is not None and not digest.startswith(spec.sha256_prefix.lower()):
        return f"SHA-256 is {digest}, expected it to start with {spec.sha256_prefix.lower()}"
    return None


def manual_hint(spec: WeightSpec, target: Path) -> str:
    """The 'download it by hand' sentence every cache and download error ends with."""
    where = f"download {spec.url}"
    if spec.archive_member is not None:
        where += f", extract {spec.archive_member} from the zip"
        if spec.mirror is not None:
            where += f" (also in {spec.mirror})"
    if spec.sha256 is not None:
        where += f" (its SHA-256 is {spec.sha256.lower()}, checked when it is used)"
    elif spec.sha256_prefix is not None:
        where += f" (its SHA-256 starts with {spec.sha256_prefix.lower()}, checked when it is used)"
    return (
        f"To install it by hand, {where} and save it as {target} "
        f"(or give the file's path instead of the name: --checkpoint PATH, or --init-checkpoint "
        f"PATH for train)."
    )


def cached_file(spec: WeightSpec, target: Path, *, download: bool) -> Path | None:
    """``target`` if it holds a valid copy of ``spec``; ``None`` if it must be (re)fetched.

    A copy that fails the published hash raises :class:`CheckpointError` when ``download``
    is off, and is otherwise fetched again (the old file stays until the new one is verified).
    """
    if not target.is_file():
        return None
    problem = hash_problem(spec, sha256_file(target)) if _has_hash(spec) else None
    if problem is None:
        logger.debug("checkpoint %s found in cache: %s", spec.name, target)
        return target
    if not download:
        raise CheckpointError(
            f"cached checkpoint {target} does not match {spec.name!r}: {problem}. "
            f"Delete it to download again. {manual_hint(spec, target)}"
        )
    logger.warning("cached %s is damaged (%s); downloading it again", target, problem)
    return None


def _has_hash(spec: WeightSpec) -> bool:
    """Whether any hash of ``spec`` is published."""
    return spec.sha256 is not None or spec.sha256_prefix is not None


def download_checkpoint(
    spec: WeightSpec, target: Path, *, siblings: Sequence[WeightSpec] = ()
) -> None:
    """Fetch ``spec`` into ``target`` via temporary files in the same folder.

    ``siblings``: other entries that are members of the same archive; those not yet in
    ``target``'s folder are installed from the same download (a failure there is only logged).
    """
    temporaries: list[Path] = []
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        logger.info("downloading checkpoint %s from %s", spec.name, spec.url)
        fetched = _fetch_url(spec.url, target.parent)
        temporaries.append(fetched)
        if spec.archive_member is not None:
            _install_from_archive(fetched, [spec, *siblings], target, temporaries)
        else:
            _verify_and_move(fetched, spec, target)
    except CheckpointError:
        raise
    except Exception as exc:  # network, disk, bad archive: all end the same way
        raise CheckpointError(
            f"could not download checkpoint {spec.name!r} from {spec.url}: "
            f"{type(exc).__name__}: {exc}. {manual_hint(spec, target)}"
        ) from exc
    finally:
        for path in temporaries:
            path.unlink(missing_ok=True)
    logger.info("checkpoint %s saved to %s", spec.name, target)


def _copy_to_temporary(source: IO[bytes], folder: Path, prefix: str) -> Path:
    """Stream ``source`` into a new hidden ``*.part`` file in ``folder``; return its path."""
    handle, path = create_temporary(folder / prefix.strip("."), ".part")
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in iter(lambda: source.read(_CHUNK_BYTES), b""):
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _fetch_url(url: str, folder: Path) -> Path:
    """Stream ``url`` into a new temporary file inside ``folder``; return its path.

    A body shorter than the ``Content-Length`` the server announced raises ``OSError`` (its
    temporary file removed): urllib ends a transfer whose connection dropped as if it were
    complete, and an entry without a published hash would otherwise be cached cut short.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        fetched = _copy_to_temporary(response, folder, ".download-")
        announced = response.headers.get("Content-Length", "").strip()
    received = fetched.stat().st_size
    if announced.isdigit() and received != int(announced):
        fetched.unlink(missing_ok=True)
        raise OSError(
            f"the transfer stopped after {received} of the {announced} bytes the server "
            f"announced (connection dropped?)"
        )
    return fetched


def _install_from_archive(
    archive: Path, members: Sequence[WeightSpec], target: Path, temporaries: list[Path]
) -> None:
    """Extract ``members[0]`` (and the still missing other members) of ``archive`` into place."""
    wanted = members[0]
    with zipfile.ZipFile(archive) as bundle:
        for other in members:
            other_target = target.parent / other.file_name
            if other is not wanted and other_target.exists():
                continue
            try:
                member = _find_member(bundle, str(other.archive_member))
                with bundle.open(member) as source:
                    extracted = _copy_to_temporary(source, target.parent, ".extract-")
                temporaries.append(extracted)
                _verify_and_move(extracted, other, other_target)
            except (CheckpointError, ValueError) as exc:
                if other is wanted:
                    raise
                logger.warning("could not install %s from %s: %s", other.name, wanted.url, exc)


def _find_member(bundle: zipfile.ZipFile, wanted: str) -> str:
    """The archive entry called ``wanted``, or the only one with the same base name."""
    names = bundle.namelist()
    if wanted in names:
        return wanted
    base = wanted.rsplit("/", 1)[-1]
    matches = [n for n in names if n.rsplit("/", 1)[-1] == base]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"the archive has no member {wanted!r} (members: {names[:10]})")


def _check_header(path: Path) -> None:
    """Raise ``ValueError`` unless ``path`` starts like a ``torch.save`` file (zip or pickle)."""
    header = file_header(path)
    if not header.startswith((b"PK\x03\x04", b"\x80")):
        raise ValueError(
            f"the server did not send a PyTorch checkpoint (first bytes {header[:16]!r}; "
            f"an HTML page or an error message?)"
        )


def _verify_and_move(path: Path, spec: WeightSpec, target: Path) -> None:
    """Check the file type and published hash of ``path``, then move it to ``target``
    atomically and durably (fsynced first: a cached checkpoint is trusted as it is)."""
    _check_header(path)
    problem = hash_problem(spec, sha256_file(path)) if _has_hash(spec) else None
    if problem is not None:
        raise CheckpointError(
            f"downloaded checkpoint {spec.name!r} from {spec.url} is damaged: {problem}. "
            f"{manual_hint(spec, target)}"
        )
    commit(path, target, durable=True)
