"""Checkpoint registry, download cache and safe loading for RAFT, RAFT-small and GMA.

Our model modules use exactly the state-dict key names of the official implementations
(princeton-vl/RAFT, zacjiang/GMA) without the ``module.`` prefix that ``DataParallel`` adds,
e.g. ``fnet.conv1.weight``, ``cnet.layer2.0.norm3.running_mean`` or ``att.to_qk.weight``.

This module

* lists the published checkpoints (:data:`WEIGHTS`, :func:`list_weights`,
  :func:`get_weight_spec`),
* finds or downloads a checkpoint file into a local cache (:func:`resolve_checkpoint`),
* loads a file without ever executing pickled code and normalises its key names
  (:func:`load_checkpoint`), converting torchvision's RAFT layout to the official one,
* identifies the architecture of a state dict (:func:`infer_architecture`,
  :func:`gma_num_heads`) and loads it strictly into a model with readable errors
  (:func:`load_into`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .raft import ARCHS, Arch

logger = logging.getLogger(__name__)

Layout = Literal["official", "torchvision"]

ARCHITECTURES: tuple[str, ...] = ARCHS
#: Weights that ship inside the package (trained by this project, see README "Training").
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"

#: Seconds to wait for the server before a download is given up.
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 20
_USER_AGENT = "motionpipe-checkpoint-fetch/0.1 (+urllib)"
_MAX_LISTED = 5
_GMA_DIM_HEAD = 128


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found, downloaded, read or loaded into a model."""


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSpec:
    """One published checkpoint.

    Attributes:
        name: Registry name, e.g. ``"raft-things"``.
        arch: ``"raft-large"``, ``"raft-small"`` or ``"gma"``.
        url: Where the file (or the zip archive holding it) is downloaded from.
        file_name: Name of the checkpoint file inside the cache directory.
        layout: ``"official"`` (princeton-vl / zacjiang key names) or ``"torchvision"``.
        training_data: Training schedule (data sets) of the weights.
        description: One-line summary of where the weights come from.
        input_convention: How the original code feeds images to the model.
        sha256: Full SHA-256 of the checkpoint file, only where actually published.
        sha256_prefix: Leading hex digits of the SHA-256 where only those are published
            (torchvision embeds 8 of them in its file names).
        archive_member: Path of the checkpoint inside the downloaded zip archive, if the
            URL points to an archive.
        gma_num_heads: Attention heads of a GMA checkpoint (``None`` for RAFT).
        source: Project page the entry was taken from.
        default: This is the checkpoint ``--model ARCH`` loads when no checkpoint is named
            (one per architecture).
        auto_rank: Place in ``model: auto``'s order of preference (lower first); ``None``:
            never chosen by ``auto``.
        bundled: The file ships inside the package (:data:`BUNDLED_DIR`): nothing to
            download; ``sha256`` is required and checked when it is loaded.
    """

    name: str
    arch: Arch
    url: str
    file_name: str
    layout: Layout
    training_data: str
    description: str
    input_convention: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    archive_member: str | None = None
    gma_num_heads: int | None = None
    source: str = ""
    default: bool = False
    auto_rank: int | None = None
    bundled: bool = False


_RAFT_REPO = "https://github.com/princeton-vl/RAFT"
# URL of download_models.sh in princeton-vl/RAFT since PR #168 (2023-08); the same archive is
# mirrored in the Google Drive folder linked from the RAFT README.
_RAFT_ZIP_URL = "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip"
_RAFT_DRIVE_URL = "https://drive.google.com/drive/folders/1sWDsfuZ3Up38EUQt7-JDTT1HcGHuJgvT"
_GMA_REPO = "https://github.com/zacjiang/GMA"
# Pinned to the commit the parity fixtures were generated from; checkpoints/ is tracked in git.
_GMA_RAW = f"{_GMA_REPO}/raw/2f1fd29468a86a354d44dd25d107930b3f175043/checkpoints"
_TV_SOURCE = "https://github.com/pytorch/vision/blob/main/torchvision/models/optical_flow/raft.py"
_TV_BASE = "https://download.pytorch.org/models"

_OFFICIAL_INPUT = (
    "RGB float 0..255, [N, 3, H, W]; the model itself maps it to [-1, 1] (2 * x / 255 - 1); "
    "H and W are replicate-padded to a multiple of 8 (InputPadder) and the flow is cropped back"
)
_TV_INPUT = (
    "torchvision feeds RGB scaled to [-1, 1] (OpticalFlow preset: [0, 1] then mean 0.5, std 0.5) "
    "with H and W divisible by 8; converted to the official layout the weights take the official "
    "0..255 input, which is the same normalisation"
)

_C = "FlyingChairs"
_CT = "FlyingChairs -> FlyingThings3D"
_CTS = f"{_CT} -> Sintel + KITTI-2015 + HD1K + FlyingThings3D (clean) mix"
_CTSK = f"{_CTS} -> KITTI-2015"


def _official_raft(name: str, arch: Arch, training: str, what: str, **flags) -> WeightSpec:
    """Entry for one member of the official RAFT ``models.zip``."""
    return WeightSpec(
        **flags,
        name=name,
        arch=arch,
        url=_RAFT_ZIP_URL,
        file_name=f"{name}.pth",
        layout="official",
        training_data=training,
        description=f"official RAFT release ({what}), member of models.zip",
        input_convention=_OFFICIAL_INPUT,
        archive_member=f"models/{name}.pth",
        source=_RAFT_REPO,
    )


def _official_gma(name: str, training: str, **flags) -> WeightSpec:
    """Entry for one file of the ``checkpoints/`` folder of zacjiang/GMA."""
    return WeightSpec(
        **flags,
        name=name,
        arch="gma",
        url=f"{_GMA_RAW}/{name}.pth",
        file_name=f"{name}.pth",
        layout="official",
        training_data=training,
        description="official GMA release (checkpoints/ folder of the repository), 1 head",
        input_convention=_OFFICIAL_INPUT,
        gma_num_heads=1,
        source=_GMA_REPO,
    )


def _torchvision(
    name: str, file_name: str, arch: Arch, training: str, what: str, **flags
) -> WeightSpec:
    """Entry for a torchvision ``Raft_Large_Weights`` / ``Raft_Small_Weights`` file."""
    match = re.search(r"-([0-9a-f]{8})\.pth$", file_name)
    if match is None:
        raise ValueError(f"torchvision file name without hash prefix: {file_name}")
    return WeightSpec(
        **flags,
        name=name,
        arch=arch,
        url=f"{_TV_BASE}/{file_name}",
        file_name=file_name,
        layout="torchvision",
        training_data=training,
        description=f"torchvision {what}",
        input_convention=_TV_INPUT,
        sha256_prefix=match.group(1),
        source=_TV_SOURCE,
    )


_PORTED = "weights ported from the official RAFT release"
_RETRAINED = "weights trained from scratch with torchvision's reference recipe"

_ENTRIES: tuple[WeightSpec, ...] = (
    _official_raft("raft-things", "raft-large", _CT, "C+T", default=True, auto_rank=4),
    _official_raft("raft-sintel", "raft-large", _CTS, "C+T+S/K/H", auto_rank=1),
    _official_raft("raft-kitti", "raft-large", _CTSK, "C+T+S/K/H+K"),
    _official_raft("raft-chairs", "raft-large", _C, "C"),
    _official_raft("raft-small", "raft-small", _CT, "small model, C+T", default=True),
    _official_gma("gma-things", _CT, default=True, auto_rank=5),
    _official_gma("gma-sintel", _CTS, auto_rank=2),
    _official_gma("gma-kitti", _CTSK),
    _official_gma("gma-chairs", _C),
    _torchvision(
        "tv-raft-large-c-t-v1",
        "raft_large_C_T_V1-22a6c225.pth",
        "raft-large",
        _CT,
        f"Raft_Large_Weights.C_T_V1 ({_PORTED})",
    ),
    _torchvision(
        "tv-raft-large-c-t-v2",
        "raft_large_C_T_V2-1bb1363a.pth",
        "raft-large",
        _CT,
        f"Raft_Large_Weights.C_T_V2 ({_RETRAINED})",
        auto_rank=6,
    ),
    _torchvision(
        "tv-raft-large-c-t-skht-v1",
        "raft_large_C_T_SKHT_V1-0b8c9e55.pth",
        "raft-large",
        _CTS,
        f"Raft_Large_Weights.C_T_SKHT_V1 ({_PORTED})",
    ),
    _torchvision(
        "tv-raft-large-c-t-skht-v2",
        "raft_large_C_T_SKHT_V2-ff5fadd5.pth",
        "raft-large",
        _CTS,
        f"Raft_Large_Weights.C_T_SKHT_V2 ({_RETRAINED}; torchvision's default)",
        auto_rank=3,
    ),
    _torchvision(
        "tv-raft-large-c-t-skht-k-v1",
        "raft_large_C_T_SKHT_K_V1-4a6a5039.pth",
        "raft-large",
        _CTSK,
        f"Raft_Large_Weights.C_T_SKHT_K_V1 ({_PORTED})",
    ),
    _torchvision(
        "tv-raft-large-c-t-skht-k-v2",
        "raft_large_C_T_SKHT_K_V2-b5c70766.pth",
        "raft-large",
        _CTSK,
        f"Raft_Large_Weights.C_T_SKHT_K_V2 ({_RETRAINED})",
    ),
    _torchvision(
        "tv-raft-small-c-t-v1",
        "raft_small_C_T_V1-ad48884c.pth",
        "raft-small",
        _CT,
        f"Raft_Small_Weights.C_T_V1 ({_PORTED})",
    ),
    _torchvision(
        "tv-raft-small-c-t-v2",
        "raft_small_C_T_V2-01064c6d.pth",
        "raft-small",
        _CT,
        f"Raft_Small_Weights.C_T_V2 ({_RETRAINED}; torchvision's default)",
    ),
)

#: Every known checkpoint, by registry name.
WEIGHTS: dict[str, WeightSpec] = {spec.name: spec for spec in _ENTRIES}


def list_weights(arch: str | None = None) -> list[str]:
    """Registry names, optionally only those of one architecture."""
    if arch is not None:
        _check_arch(arch)
    return [name for name, spec in WEIGHTS.items() if arch is None or spec.arch == arch]


def get_weight_spec(name: str) -> WeightSpec:
    """The registry entry called ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(
            f"unknown checkpoint name {name!r}; known names: {', '.join(WEIGHTS)}"
        ) from None


def _check_arch(arch: str) -> None:
    """Raise ``ValueError`` unless ``arch`` is one of :data:`ARCHITECTURES`."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")


# --------------------------------------------------------------------------------------
# Hashing and cache
# --------------------------------------------------------------------------------------


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


def _hash_problem(spec: WeightSpec, digest: str) -> str | None:
    """Why ``digest`` does not match the spec's published hash, or ``None`` if it does."""
    if spec.sha256 is not None and digest != spec.sha256.lower():
        return f"SHA-256 is {digest}, expected {spec.sha256.lower()}"
    if spec.sha256_prefix is not None and not digest.startswith(spec.sha256_prefix.lower()):
        return f"SHA-256 is {digest}, expected it to start with {spec.sha256_prefix.lower()}"
    return None


def _manual_hint(spec: WeightSpec, target: Path) -> str:
    """The 'download it by hand' paragraph shared by all resolve errors."""
    where = f"download {spec.url}"
    if spec.archive_member is not None:
        where += f", extract {spec.archive_member} from the zip"
        if spec.url == _RAFT_ZIP_URL:
            where += f" (also in {_RAFT_DRIVE_URL})"
    return (
        f"To install it by hand, {where} and save it as {target} "
        f"(or pass the file directly with --checkpoint PATH)."
    )


def resolve_checkpoint(
    name_or_path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Path:
    """Local file of a checkpoint given as a path or a registry name.

    An existing file is returned as is. A registry name is looked up in ``cache_dir``
    (default :func:`default_cache_dir`), verified against its published hash where one is
    known, and otherwise downloaded (if ``download``) and verified before it is moved into
    place atomically. Raises :class:`CheckpointError` with the URL and the exact path to put
    the file at when it cannot be found or fetched.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.exists():
        raise CheckpointError(f"{candidate} is not a file; pass a checkpoint file or a name")
    name = str(name_or_path)
    if name not in WEIGHTS:
        raise CheckpointError(
            f"{name!r} is neither an existing checkpoint file nor a known checkpoint name; "
            f"known names: {', '.join(WEIGHTS)}"
        )
    spec = WEIGHTS[name]
    if spec.bundled:
        return _bundled_file(spec)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / spec.file_name
    cached = _cached_file(spec, target, download=download)
    if cached is not None:
        return cached
    if not download:
        raise CheckpointError(
            f"checkpoint {spec.name!r} is not in the cache ({target}) and downloading is "
            f"disabled. {_manual_hint(spec, target)}"
        )
    _download(spec, target)
    return target


_VERIFIED_BUNDLES: set[Path] = set()


def _bundled_file(spec: WeightSpec) -> Path:
    """The package's own copy of a bundled checkpoint, its SHA-256 checked once per process."""
    path = BUNDLED_DIR / spec.file_name
    if path in _VERIFIED_BUNDLES:
        return path
    if not path.is_file():
        raise CheckpointError(
            f"bundled checkpoint {spec.name!r} is missing from the installation ({path}); "
            "reinstall motionpipe"
        )
    problem = _hash_problem(spec, sha256_file(path))
    if problem is not None:
        raise CheckpointError(f"bundled checkpoint {path} is damaged: {problem}; reinstall")
    _VERIFIED_BUNDLES.add(path)
    return path


def default_checkpoint(arch: str) -> str:
    """Registry name of the checkpoint ``--model arch`` loads when none is named."""
    _check_arch(arch)
    for spec in WEIGHTS.values():
        if spec.arch == arch and spec.default:
            return spec.name
    raise CheckpointError(f"no default checkpoint for {arch}; pass --checkpoint PATH")


def auto_order() -> list[WeightSpec]:
    """Checkpoints ``model: auto`` considers, most preferred first."""
    ranked = [spec for spec in WEIGHTS.values() if spec.auto_rank is not None]
    return sorted(ranked, key=lambda spec: spec.auto_rank)


def _cached_file(spec: WeightSpec, target: Path, *, download: bool) -> Path | None:
    """``target`` if it holds a valid copy of ``spec``; ``None`` if it must be (re)fetched."""
    if not target.is_file():
        return None
    problem = _hash_problem(spec, sha256_file(target)) if _has_hash(spec) else None
    if problem is None:
        logger.debug("checkpoint %s found in cache: %s", spec.name, target)
        return target
    if not download:
        raise CheckpointError(
            f"cached checkpoint {target} does not match {spec.name!r}: {problem}. "
            f"Delete it to download again. {_manual_hint(spec, target)}"
        )
    logger.warning("cached %s is damaged (%s); downloading it again", target, problem)
    return None


def _has_hash(spec: WeightSpec) -> bool:
    """Whether any hash of ``spec`` is published."""
    return spec.sha256 is not None or spec.sha256_prefix is not None


def _download(spec: WeightSpec, target: Path) -> None:
    """Fetch ``spec`` into ``target`` via temporary files in the same folder."""
    temporaries: list[Path] = []
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        logger.info("downloading checkpoint %s from %s", spec.name, spec.url)
        fetched = _fetch_url(spec.url, target.parent)
        temporaries.append(fetched)
        if spec.archive_member is not None:
            _install_from_archive(fetched, spec, target, temporaries)
        else:
            _verify_and_move(fetched, spec, target)
    except CheckpointError:
        raise
    except Exception as exc:  # network, disk, bad archive: all end the same way
        raise CheckpointError(
            f"could not download checkpoint {spec.name!r} from {spec.url}: "
            f"{type(exc).__name__}: {exc}. {_manual_hint(spec, target)}"
        ) from exc
    finally:
        for path in temporaries:
            path.unlink(missing_ok=True)
    logger.info("checkpoint %s saved to %s", spec.name, target)


def _fetch_url(url: str, folder: Path) -> Path:
    """Stream ``url`` into a new temporary file inside ``folder``; return its path."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    handle, name = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=folder)
    path = Path(name)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _install_from_archive(
    archive: Path, spec: WeightSpec, target: Path, temporaries: list[Path]
) -> None:
    """Extract ``spec``'s member (and still missing siblings from the same zip) into place."""
    with zipfile.ZipFile(archive) as bundle:
        for other in _archive_siblings(spec):
            other_target = target.parent / other.file_name
            if other is not spec and other_target.exists():
                continue
            try:
                extracted = _extract_member(bundle, other, target.parent)
                temporaries.append(extracted)
                _verify_and_move(extracted, other, other_target)
            except (CheckpointError, ValueError) as exc:
                if other is spec:
                    raise
                logger.warning("could not install %s from %s: %s", other.name, spec.url, exc)


def _archive_siblings(spec: WeightSpec) -> list[WeightSpec]:
    """``spec`` first, then every other registry entry taken from the same archive."""
    others = [s for s in WEIGHTS.values() if s.url == spec.url and s.archive_member and s != spec]
    return [spec, *others]


def _extract_member(bundle: zipfile.ZipFile, spec: WeightSpec, folder: Path) -> Path:
    """Copy ``spec.archive_member`` out of ``bundle`` into a temporary file in ``folder``."""
    member = _find_member(bundle, str(spec.archive_member))
    handle, name = tempfile.mkstemp(prefix=".extract-", suffix=".part", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, bundle.open(member) as source:
            for chunk in iter(lambda: source.read(_CHUNK_BYTES), b""):
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


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
    header = _file_header(path)
    if not header.startswith((b"PK\x03\x04", b"\x80")):
        raise ValueError(
            f"the server did not send a PyTorch checkpoint (first bytes {header[:16]!r}; "
            f"an HTML page or an error message?)"
        )


def _verify_and_move(path: Path, spec: WeightSpec, target: Path) -> None:
    """Check the file type and published hash of ``path``, then rename it to ``target``
    atomically."""
    _check_header(path)
    problem = _hash_problem(spec, sha256_file(path)) if _has_hash(spec) else None
    if problem is not None:
        raise CheckpointError(
            f"downloaded checkpoint {spec.name!r} from {spec.url} is damaged: {problem}. "
            f"{_manual_hint(spec, target)}"
        )
    os.replace(path, target)


# --------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a state dict with official key names.

    The file is always read with ``torch.load(..., weights_only=True)``, so pickled code is
    refused, never run. Accepted contents: a plain state dict, one wrapped in
    ``{"state_dict": ...}`` / ``{"model": ...}``, keys with the ``module.`` prefix of
    ``DataParallel`` (stripped) and torchvision's RAFT layout (converted). Anything else
    raises :class:`CheckpointError` saying what was expected.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise CheckpointError(
            f"checkpoint file not found: {file}. Pass an existing .pth file with "
            f"--checkpoint PATH, or a checkpoint name ({', '.join(WEIGHTS)})"
        )
    if not file.is_file():
        raise CheckpointError(f"checkpoint path {file} is not a file")
    raw = _torch_load(file)
    state = _extract_state(raw, file)
    return to_official_layout(state)


def _torch_load(file: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` and errors translated to plain language."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(_load_failure_message(file, exc)) from exc


def _load_failure_message(file: Path, exc: Exception) -> str:
    """Explain why ``torch.load`` rejected ``file``."""
    text = str(exc)
    size = file.stat().st_size
    if size == 0 or isinstance(exc, EOFError):
        return (
            f"{file} is empty or cut short ({size} bytes): the download or copy was probably "
            f"interrupted. Delete it and fetch the checkpoint again."
        )
    code = re.search(r"GLOBAL ([\w.]+)", text)
    if code is not None:
        return (
            f"{file} is not a plain weights file: it contains a pickled reference to the "
            f"Python object {code.group(1)!r}. Unpickling such references can run arbitrary "
            f"code, so motionpipe reads checkpoints with torch.load(weights_only=True), which "
            f"accepts only tensors and plain containers, and refuses this file. If it comes "
            f"from a source you trust, re-save only its tensors: "
            f"torch.save(model.state_dict(), 'clean.pth')."
        )
    header = _file_header(file)
    if header.startswith(b"PK"):
        return (
            f"{file} is truncated or corrupt (PyTorch could not read its zip container: "
            f"{_first_line(text)}). Delete it and fetch the checkpoint again."
        )
    if header[:1] == b"\x80":
        return (
            f"{file} is not a plain weights file: torch.load(weights_only=True) refused its "
            f"pickle ({_first_reason(text)}). It is either damaged or holds Python objects "
            f"other than tensors, whose unpickling can run arbitrary code, so motionpipe will "
            f"not load it. Re-save just the state dict with torch.save(state_dict, PATH)."
        )
    return (
        f"{file} is not a PyTorch checkpoint (unrecognised header {header[:8]!r}); expected a "
        f"file written by torch.save. It may be damaged, or an HTML error page saved instead "
        f"of the download."
    )


def _file_header(file: Path) -> bytes:
    """First bytes of ``file`` (empty on error)."""
    try:
        with open(file, "rb") as handle:
            return handle.read(16)
    except OSError:
        return b""


def _first_line(text: str) -> str:
    """First line of an exception message."""
    return text.strip().splitlines()[0] if text.strip() else "no details"


def _first_reason(text: str) -> str:
    """The most specific line of a ``weights_only`` unpickler message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Unsupported", "Trying to load", "Can only", "Unpickler")):
            return line
    return lines[0] if lines else "no details"


def _extract_state(raw: Any, file: Path) -> dict[str, torch.Tensor]:
    """Unwrap ``raw`` to a ``{name: tensor}`` dict or explain what is wrong with it."""
    expected = "expected a state dict (a dict of parameter name -> tensor)"
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            f"{file} holds a {type(raw).__name__}, not a state dict; {expected}, as written by "
            f"torch.save(model.state_dict(), PATH)."
        )
    for key in _WRAPPER_KEYS:
        inner = raw.get(key)
        if isinstance(inner, Mapping):
            raw = inner
            break
    if len(raw) == 0:
        raise CheckpointError(f"{file} holds an empty dict; {expected}.")
    bad = [(k, v) for k, v in raw.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        shown = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in bad[:_MAX_LISTED])
        more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise CheckpointError(
            f"{file} is not a state dict: {len(bad)} of its {len(raw)} entries are not "
            f"tensors ({shown}{more}); {expected}."
        )
    return dict(raw)


# --------------------------------------------------------------------------------------
# Key layouts: DataParallel prefix and torchvision
# --------------------------------------------------------------------------------------

_ENCODER_TO_TV = {"fnet": "feature_encoder", "cnet": "context_encoder"}
_MOTION_TO_TV = {
    "convc1": "convcorr1.0",
    "convc2": "convcorr2.0",
    "convf1": "convflow1.0",
    "convf2": "convflow2.0",
    "conv": "conv.0",
}
_MASK_TO_TV = {
    "update_block.mask.0": "mask_predictor.convrelu.0",
    "update_block.mask.2": "mask_predictor.conv",
}
_TV_PREFIXES = ("feature_encoder.", "context_encoder.", "mask_predictor.")
_BLOCK_RE = re.compile(r"^(layer\d+\.\d+)\.([a-z_]+?)(\d*)\.(.+)$")


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that ``torch.nn.DataParallel`` puts on every key."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def is_torchvision_layout(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` uses torchvision's RAFT key names (``feature_encoder.`` ...)."""
    return any(k.startswith(_TV_PREFIXES) for k in state)


def to_official_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official key names: ``module.`` stripped and torchvision names converted."""
    plain = strip_module_prefix(state)
    return torchvision_to_official(plain) if is_torchvision_layout(plain) else plain


def _bottleneck_blocks(keys: Iterable[str], third_conv: str) -> set[str]:
    """``"<encoder>.layerL.B"`` prefixes of blocks that have a third convolution."""
    found = set()
    for key in keys:
        parts = key.split(".")
        if len(parts) > 3 and parts[1].startswith("layer") and parts[3] == third_conv:
            found.add(".".join(parts[:3]))
    return found


def official_to_torchvision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official RAFT / RAFT-small state dict to torchvision's key names.

    The second registration of each downsample BatchNorm (``norm3`` in residual blocks,
    ``norm4`` in bottleneck blocks) is dropped: torchvision stores it once, as
    ``downsample.1``. GMA has no torchvision counterpart.
    """
    plain = strip_module_prefix(state)
    bottlenecks = _bottleneck_blocks(plain, "conv3")
    out: dict[str, torch.Tensor] = {}
    for key, value in plain.items():
        new = _official_key_to_tv(key, bottlenecks)
        if new is not None:
            out[new] = value
    return out


def _official_key_to_tv(key: str, bottlenecks: set[str]) -> str | None:
    """torchvision name of one official key (``None`` for the dropped norm alias)."""
    head, _, rest = key.partition(".")
    if head in _ENCODER_TO_TV:
        block = ".".join(key.split(".")[:3])
        converted = _encoder_key_to_tv(rest, block in bottlenecks)
        return None if converted is None else f"{_ENCODER_TO_TV[head]}.{converted}"
    for official, tv in _MASK_TO_TV.items():
        if key.startswith(official + "."):
            return tv + key[len(official) :]
    if key.startswith("update_block.encoder."):
        name, _, param = key.removeprefix("update_block.encoder.").partition(".")
        if name in _MOTION_TO_TV:
            return f"update_block.motion_encoder.{_MOTION_TO_TV[name]}.{param}"
    if key.startswith("update_block.gru."):
        name, _, param = key.removeprefix("update_block.gru.").partition(".")
        match = re.fullmatch(r"conv([zrq])([12]?)", name)
        if match is not None:
            index = match.group(2) or "1"
            return f"update_block.recurrent_block.convgru{index}.conv{match.group(1)}.{param}"
    if key.startswith("update_block.flow_head."):
        return key
    raise CheckpointError(
        f"key {key!r} has no torchvision equivalent (torchvision has RAFT and RAFT-small only)"
    )


def _encoder_key_to_tv(rest: str, bottleneck: bool) -> str | None:
    """torchvision name of a key inside ``fnet`` / ``cnet`` (without that prefix)."""
    for official, tv in (
        ("conv1.", "convnormrelu.0."),
        ("norm1.", "convnormrelu.1."),
        ("conv2.", "conv."),
    ):
        if rest.startswith(official):
            return tv + rest[len(official) :]
    match = _BLOCK_RE.match(rest)
    if match is None:
        raise CheckpointError(f"unexpected encoder key {rest!r}")
    block, kind, index, param = match.groups()
    n_convs = 3 if bottleneck else 2
    if kind == "conv" and index:
        return f"{block}.convnormrelu{index}.0.{param}"
    if kind == "norm" and index and int(index) <= n_convs:
        return f"{block}.convnormrelu{index}.1.{param}"
    if kind == "norm" and index and int(index) == n_convs + 1:
        return None  # same BatchNorm as downsample.1
    if kind == "downsample" and not index:
        return f"{block}.downsample.{param}"
    raise CheckpointError(f"unexpected encoder key {rest!r}")


def torchvision_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``raft_large`` / ``raft_small`` state dict to official key names.

    Each downsample BatchNorm (``downsample.1``) is also exposed under the name the official
    code registers it a second time (``norm3`` for residual blocks, ``norm4`` for bottleneck
    blocks); both names share the same tensors.
    """
    plain = strip_module_prefix(state)
    bottlenecks = _bottleneck_blocks(plain, "convnormrelu3")
    separable_gru = any(k.startswith("update_block.recurrent_block.convgru2.") for k in plain)
    out: dict[str, torch.Tensor] = {}
    for key, value in plain.items():
        for new in _tv_key_to_official(key, bottlenecks, separable_gru):
            out[new] = value
    return out


def _tv_key_to_official(key: str, bottlenecks: set[str], separable_gru: bool) -> list[str]:
    """Official name(s) of one torchvision key (two for a downsample BatchNorm)."""
    head, _, rest = key.partition(".")
    official_encoder = {tv: off for off, tv in _ENCODER_TO_TV.items()}
    if head in official_encoder:
        enc = official_encoder[head]
        in_bottleneck = any(key.startswith(b + ".") for b in bottlenecks)
        return [f"{enc}.{name}" for name in _tv_encoder_key_to_official(rest, in_bottleneck)]
    for official, tv in _MASK_TO_TV.items():
        if key.startswith(tv + "."):
            return [official + key[len(tv) :]]
    if key.startswith("update_block.motion_encoder."):
        rest = key.removeprefix("update_block.motion_encoder.")
        for official, tv in _MOTION_TO_TV.items():
            if rest.startswith(tv + "."):
                return [f"update_block.encoder.{official}{rest[len(tv) :]}"]
    match = re.fullmatch(r"update_block\.recurrent_block\.convgru([12])\.conv([zrq])\.(\w+)", key)
    if match is not None:
        index, gate, param = match.groups()
        suffix = index if separable_gru else ""
        return [f"update_block.gru.conv{gate}{suffix}.{param}"]
    if key.startswith("update_block.flow_head."):
        return [key]
    raise CheckpointError(f"unexpected torchvision RAFT key {key!r}")


def _tv_encoder_key_to_official(rest: str, bottleneck: bool) -> list[str]:
    """Official name(s) of a key inside torchvision's feature / context encoder."""
    for tv, official in (
        ("convnormrelu.0.", "conv1."),
        ("convnormrelu.1.", "norm1."),
        ("conv.", "conv2."),
    ):
        if rest.startswith(tv):
            return [official + rest[len(tv) :]]
    match = re.fullmatch(r"(layer\d+\.\d+)\.(convnormrelu(\d)|downsample)\.([01])\.(\w+)", rest)
    if match is None:
        raise CheckpointError(f"unexpected torchvision encoder key {rest!r}")
    block, part, index, position, param = match.groups()
    if part.startswith("convnormrelu"):
        layer = "conv" if position == "0" else "norm"
        return [f"{block}.{layer}{index}.{param}"]
    if position == "0":
        return [f"{block}.downsample.0.{param}"]
    alias = "norm4" if bottleneck else "norm3"
    return [f"{block}.{alias}.{param}", f"{block}.downsample.1.{param}"]


# --------------------------------------------------------------------------------------
# Architecture checks and loading into a model
# --------------------------------------------------------------------------------------


def infer_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """The architecture (:data:`ARCHITECTURES`) of ``state``, from its key names.

    Accepts official, ``module.``-prefixed and torchvision layouts.
    """
    keys = set(to_official_layout(state))
    if "att.to_qk.weight" in keys or any(k.startswith("update_block.aggregator.") for k in keys):
        return "gma"
    if "update_block.gru.convz1.weight" in keys:
        return "raft-large"
    if "update_block.gru.convz.weight" in keys:
        return "raft-small-convex" if "update_block.mask.0.weight" in keys else "raft-small"
    sample = ", ".join(sorted(keys)[:_MAX_LISTED])
    raise CheckpointError(
        "cannot tell which model this checkpoint belongs to: it has none of the update-block "
        f"keys of RAFT, RAFT-small or GMA (first keys: {sample}). Expected a checkpoint of "
        f"one of {ARCHITECTURES}."
    )


def gma_num_heads(state: Mapping[str, torch.Tensor]) -> int:
    """Number of attention heads of a GMA state dict (``att.to_qk.weight`` has
    ``heads * 128 * 2`` output channels)."""
    official = to_official_layout(state)
    weight = official.get("att.to_qk.weight")
    if weight is None:
        raise CheckpointError("not a GMA checkpoint: it has no 'att.to_qk.weight'")
    out_channels = int(weight.shape[0])
    per_head = 2 * _GMA_DIM_HEAD
    if out_channels % per_head != 0 or out_channels == 0:
        raise CheckpointError(
            f"att.to_qk.weight has {out_channels} output channels, expected a positive "
            f"multiple of {per_head} (heads x 128 x 2)"
        )
    return out_channels // per_head


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, arch: str) -> None:
    """Load ``state`` strictly into ``model`` (a model of architecture ``arch``).

    Raises :class:`CheckpointError` naming the right ``--model`` when the checkpoint is of
    another architecture, or listing missing / unexpected keys and shape mismatches.
    """
    _check_arch(arch)
    official = to_official_layout(state)
    try:
        found = infer_architecture(official)
    except CheckpointError:
        found = None
    if found is not None and found != arch:
        raise CheckpointError(
            f"this checkpoint is a {found} checkpoint but the model is {arch}; "
            f"pass --model {found} (or a {arch} checkpoint)"
        )
    problems = _key_problems(model.state_dict(), official)
    if problems:
        raise CheckpointError(f"checkpoint does not fit the {arch} model: " + "; ".join(problems))
    model.load_state_dict(official, strict=True)


def _key_problems(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> list[str]:
    """Readable descriptions of missing keys, unexpected keys and shape mismatches."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(given[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    problems = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if items:
            problems.append(f"{len(items)} {label} ({_preview(items)})")
    if any(item.startswith("att.to_qk.weight:") for item in mismatched):
        heads = int(given["att.to_qk.weight"].shape[0]) / (2 * _GMA_DIM_HEAD)
        problems.append(f"the checkpoint's GMA attention has {heads:g} head(s)")
    return problems


def _preview(items: list[str]) -> str:
    """The first few items, comma separated, with a count of the rest."""
    shown = ", ".join(items[:_MAX_LISTED])
    return shown if len(items) <= _MAX_LISTED else f"{shown}, ... {len(items) - _MAX_LISTED} more"
