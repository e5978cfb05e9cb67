"""The registry of published checkpoints for RAFT, RAFT-small and GMA, and finding their files.

Here live

* the entries (:class:`WeightSpec`, :data:`WEIGHTS`) and their lookups (:func:`list_weights`,
  :func:`get_weight_spec`, :func:`default_checkpoint`, :func:`auto_order`);
* :func:`resolve_checkpoint`: the local file of a path or a registry name, from the package
  (bundled entries), the cache, or a download.

Downloading and hashing are :mod:`models.download`; reading files, key layouts and loading
into a model are :mod:`models.checkpoint_io`. Their public names are importable from here too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .checkpoint_io import (
    ARCHITECTURES,
    CheckpointError,
    check_architecture,
    gma_num_heads,
    infer_architecture,
    is_torchvision_layout,
    load_checkpoint,
    load_into,
    official_to_torchvision,
    strip_module_prefix,
    to_official_layout,
    torchvision_to_official,
)
from .download import (
    DOWNLOAD_TIMEOUT_S,
    cached_file,
    default_cache_dir,
    download_checkpoint,
    hash_problem,
    manual_hint,
    sha256_file,
)
from .raft import Arch

__all__ = [
    "ARCHITECTURES",
    "BUNDLED_DIR",
    "DOWNLOAD_TIMEOUT_S",
    "WEIGHTS",
    "CheckpointError",
    "WeightSpec",
    "auto_order",
    "default_cache_dir",
    "default_checkpoint",
    "get_weight_spec",
    "gma_num_heads",
    "infer_architecture",
    "is_torchvision_layout",
    "list_weights",
    "load_checkpoint",
    "load_into",
    "official_to_torchvision",
    "resolve_checkpoint",
    "sha256_file",
    "strip_module_prefix",
    "to_official_layout",
    "torchvision_to_official",
]

Layout = Literal["official", "torchvision"]

#: Weights that ship inside the package (trained by this project, see README "Training").
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


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
        mirror: Another place the archive can be fetched from by hand (named in errors).
        gma_num_heads: Attention heads of a GMA checkpoint (``None`` for RAFT).
        source: Project page the entry was taken from.
        default: This is the checkpoint ``--model ARCH`` loads when no checkpoint is named
            (one per architecture).
        auto_rank: Place in ``model: auto``'s order of preference (lower first); ``None``:
            never chosen by ``auto``.
        bundled: The file ships inside the package (:data:`BUNDLED_DIR`): nothing to
            download; ``sha256`` is required and checked when it is loaded.
        refine: What ``flow.refine: auto`` does after these weights: ``variational`` where it
            was measured to help (:mod:`stages.flow_refine`), else ``none``.
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
    mirror: str | None = None
    gma_num_heads: int | None = None
    source: str = ""
    default: bool = False
    auto_rank: int | None = None
    bundled: bool = False
    refine: str = "none"

    def __post_init__(self) -> None:
        if self.bundled and self.sha256 is None:
            raise ValueError(f"bundled checkpoint {self.name!r} needs its full sha256")


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
        mirror=_RAFT_DRIVE_URL,
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


def _bundled(name: str, arch: Arch, sha256: str, **flags) -> WeightSpec:
    """Entry for a model this project trained itself and ships in :data:`BUNDLED_DIR` as
    ``NAME.pth`` (its provenance in ``NAME.json`` beside it)."""
    return WeightSpec(
        **flags,
        name=name,
        arch=arch,
        url=(BUNDLED_DIR / f"{name}.pth").as_uri(),
        file_name=f"{name}.pth",
        layout="official",
        training_data=(
            "the project's own generated pairs only: layered sprites, then layered + photo "
            "scenes, in the stages of configs/train-motionpipe-small*.yaml"
        ),
        description=(
            "trained by motionpipe with `train` from random weights; float16 file; "
            "provenance (configs, seeds, steps, SHA-256) in the .json beside it"
        ),
        input_convention=_OFFICIAL_INPUT,
        sha256=sha256,
        source="configs/train-motionpipe-small.yaml, configs/train-motionpipe-small-stage2.yaml",
        bundled=True,
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
    _bundled(
        "motionpipe-small-v3",
        "raft-small-convex",
        "2c9f60334c39848ae623fd59f3e80e2f70660a45630e089b2bdb4162932b75c7",
        # Last in model: auto's order: a cached official checkpoint is better; DIS only when
        # the package lost its file. It beats DIS on every held-out set with real textures
        # (benchmarks/RESULTS.md), not on procedural noise with small motions. Variational
        # refinement lowered its error on every held-out set measured (benchmarks/RESULTS.md).
        default=True,
        auto_rank=10,
        refine="variational",
    ),
)

#: Every known checkpoint, by registry name.
WEIGHTS: dict[str, WeightSpec] = {spec.name: spec for spec in _ENTRIES}


def list_weights(arch: str | None = None) -> list[str]:
    """Registry names, optionally only those of one architecture."""
    if arch is not None:
        check_architecture(arch)
    return [name for name, spec in WEIGHTS.items() if arch is None or spec.arch == arch]


def get_weight_spec(name: str) -> WeightSpec:
    """The registry entry called ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(
            f"unknown checkpoint name {name!r}; known names: {', '.join(WEIGHTS)}"
        ) from None


def default_checkpoint(arch: str) -> str:
    """Registry name of the checkpoint ``--model arch`` loads when none is named."""
    check_architecture(arch)
    for spec in WEIGHTS.values():
        if spec.arch == arch and spec.default:
            return spec.name
    raise CheckpointError(f"no default checkpoint for {arch}; pass --checkpoint PATH")


def auto_order() -> list[WeightSpec]:
    """Checkpoints ``model: auto`` considers, most preferred first."""
    ranked = [spec for spec in WEIGHTS.values() if spec.auto_rank is not None]
    return sorted(ranked, key=lambda spec: spec.auto_rank)


# --------------------------------------------------------------------------------------
# Finding the file
# --------------------------------------------------------------------------------------


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
    cached = cached_file(spec, target, download=download)
    if cached is not None:
        return cached
    if not download:
        raise CheckpointError(
            f"checkpoint {spec.name!r} is not in the cache ({target}) and downloading is "
            f"disabled. {manual_hint(spec, target)}"
        )
    download_checkpoint(spec, target, siblings=_archive_siblings(spec))
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
    problem = hash_problem(spec, sha256_file(path))
    if problem is not None:
        raise CheckpointError(f"bundled checkpoint {path} is damaged: {problem}; reinstall")
    _VERIFIED_BUNDLES.add(path)
    return path


def _archive_siblings(spec: WeightSpec) -> list[WeightSpec]:
    """The other registry entries taken from the same archive as ``spec``."""
    return [s for s in WEIGHTS.values() if s.url == spec.url and s.archive_member and s != spec]
