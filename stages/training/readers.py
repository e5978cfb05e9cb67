"""Readers for optical-flow data sets laid out on disk as they are distributed.

Every reader is a ``torch`` data set over the pairs it finds under a root folder. A pair comes
back in two forms:

- :meth:`FlowReader.pair` ``(i)``: the raw :class:`FlowPair` as numpy arrays, unaugmented
  (evaluation, inspection);
- :meth:`FlowReader.sample` ``(i, rng)``: a training sample dict of tensors (see
  :func:`stages.training.datasets.to_sample`), augmented with
  :func:`stages.training.augment.augment` when the reader has an augmentation config;
  ``reader[i]`` is ``sample(i, numpy.random.default_rng([seed, i]))``.

Layouts (``ROOT`` is the folder given as the data set's root):

``chairs`` (FlyingChairs)
    ``ROOT/data/NNNNN_img1.ppm``, ``NNNNN_img2.ppm``, ``NNNNN_flow.flo``; the optional
    ``ROOT/chairs_split.txt`` holds one number per pair in file order, 1 = ``training``,
    2 = ``validation`` (without it every pair is ``training``).
``things`` (FlyingThings3D)
    ``ROOT/<variant>/<TRAIN|TEST>/<A|B|C>/NNNN/<left|right>/NNNN.png`` with ``variant``
    ``frames_cleanpass`` (default) or ``frames_finalpass``, and
    ``ROOT/optical_flow/<TRAIN|TEST>/<A|B|C>/NNNN/<into_future|into_past>/<left|right>/
    OpticalFlowInto<Future|Past>_NNNN_<L|R>.pfm``. Both directions, as the official RAFT
    loader: ``into_future`` gives pairs ``(t, t + 1)`` with the future flow of frame ``t``,
    ``into_past`` pairs ``(t + 1, t)`` with the past flow of frame ``t + 1``. Split
    ``training`` = ``TRAIN``, ``test`` (or ``validation``) = ``TEST``.
``sintel`` (MPI-Sintel)
    ``ROOT/training/<clean|final>/<scene>/frame_NNNN.png``,
    ``ROOT/training/flow/<scene>/frame_NNNN.flo``, and where present
    ``ROOT/training/occlusions/<scene>/frame_NNNN.png`` (non-zero = occluded) and
    ``ROOT/training/invalid/<scene>/frame_NNNN.png`` (non-zero = no ground truth).
    Consecutive frames of every scene form the pairs.
``kitti`` (KITTI-2015)
    ``ROOT/training/image_2/NNNNNN_10.png``, ``NNNNNN_11.png``,
    ``ROOT/training/flow_occ/NNNNNN_10.png`` (16-bit KITTI PNG, sparse); with
    ``ROOT/training/flow_noc/NNNNNN_10.png`` present, a pixel valid in ``flow_occ`` but not in
    ``flow_noc`` is occluded.
``hd1k`` (HD1K)
    ``ROOT/hd1k_input/image_2/SSSSSS_FFFF.png``,
    ``ROOT/hd1k_flow_gt/flow_occ/SSSSSS_FFFF.png`` (KITTI format, sparse); frame ``FFFF`` and
    ``FFFF + 1`` of sequence ``SSSSSS`` form a pair.
``folder`` (your own footage)
    ``ROOT/img1/<stem>.<png|jpg|...>``, ``ROOT/img2/<stem>.*``, ``ROOT/flow/<stem>.flo``
    (dense), ``.png`` (KITTI 16-bit, sparse) or ``.npy`` (``(H, W, 2)`` float32); optional
    ``ROOT/valid/<stem>.png`` (non-zero = ground truth exists) and
    ``ROOT/occlusions/<stem>.png`` (non-zero = occluded). Pairs sorted by stem. The data set
    is sparse (KITTI-style augmentation) when its flows are KITTI PNGs.

Only splits with public ground truth are readable (Sintel and KITTI ``test`` are not).
Dense ground truth is valid where both components are finite and below 1000 px in magnitude
(the official loaders' rule); invalid flow values are set to 0.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..flow_io import read_flo, read_flow_npy, read_kitti_png
from .augment import AugmentConfig, augment
from .datasets import to_sample

#: ``synthetic`` is the built-in generator; the others read files under a root folder.
DATASET_KINDS: tuple[str, ...] = (
    "synthetic",
    "chairs",
    "things",
    "sintel",
    "kitti",
    "hd1k",
    "folder",
)

#: Dense ground truth beyond this many pixels in either component is treated as unknown.
MAX_DENSE_FLOW = 1000.0

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
_FLOW_SUFFIXES = (".flo", ".png", ".npy")


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def read_pfm(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PFM image (FlyingThings3D's flow and disparity files).

    The header is ``PF`` (3 channels) or ``Pf`` (1 channel), the width and height, and a scale
    whose sign gives the byte order (negative = little-endian); rows are stored bottom to top.

    Returns:
        ``(H, W, 3)`` or ``(H, W)`` float32, top row first, native byte order.

    Raises:
        ValueError: not a PFM file, or shorter than its header says.
    """
    data = Path(path).read_bytes()
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise ValueError(f"{path}: truncated PFM header")
        tokens.append(data[start:pos])
    pos += 1  # the single whitespace byte that ends the header
    magic = tokens[0]
    if magic not in (b"PF", b"Pf"):
        raise ValueError(f"{path}: header starts with {magic[:8]!r}, not PF/Pf (not a PFM file?)")
    channels = 3 if magic == b"PF" else 1
    try:
        width, height, scale = int(tokens[1]), int(tokens[2]), float(tokens[3])
    except ValueError:
        raise ValueError(f"{path}: bad PFM header {b' '.join(tokens)!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"{path}: implausible PFM size width={width} height={height}")
    count = width * height * channels
    if len(data) - pos < 4 * count:
        raise ValueError(
            f"{path}: {len(data) - pos} data bytes, but a {width}x{height}x{channels} PFM "
            f"has {4 * count}"
        )
    dtype = "<f4" if scale < 0 else ">f4"
    values = np.frombuffer(data, dtype=dtype, count=count, offset=pos)
    shape = (height, width, channels) if channels == 3 else (height, width)
    return np.ascontiguousarray(values.reshape(shape)[::-1], dtype=np.float32)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB (gray images are replicated, 16-bit ones scaled to 8 bits)."""
    bgr = cv2.imdecode(np.fromfile(Path(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: OpenCV could not decode the file as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """``(H, W)`` bool: True where the (gray) mask image is non-zero."""
    mask = cv2.imdecode(np.fromfile(Path(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ValueError(f"{path}: OpenCV could not decode the file as a mask image")
    return mask.reshape(*mask.shape[:2], -1).any(axis=-1)


def read_ground_truth(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(flow, valid)`` of a ground-truth file, by its extension.

    ``.flo``, ``.pfm`` (first two channels) and ``.npy`` are dense: valid where finite and
    ``|u|, |v| < 1000``. ``.png`` is a KITTI 16-bit PNG with its own valid channel. Returns
    ``(H, W, 2)`` float32 flow (0 where invalid) and ``(H, W)`` bool validity.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return read_kitti_png(path)
    if suffix == ".flo":
        flow = read_flo(path)
    elif suffix == ".pfm":
        flow = read_pfm(path)
        if flow.ndim != 3:
            raise ValueError(f"{path}: a PFM flow file has 3 channels, got a 1-channel image")
        flow = np.ascontiguousarray(flow[..., :2])
    elif suffix == ".npy":
        flow = read_flow_npy(path)
        if flow.ndim != 3:
            raise ValueError(f"{path}: expected one (H, W, 2) flow field, got {flow.shape}")
    else:
        raise ValueError(f"{path}: unknown flow file type {suffix!r} (.flo, .pfm, .npy, .png)")
    valid = np.isfinite(flow).all(axis=-1) & (np.abs(flow) < MAX_DENSE_FLOW).all(axis=-1)
    flow = flow.copy()
    flow[~valid] = 0.0
    return flow, valid


# --------------------------------------------------------------------------------------------
# pairs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowPair:
    """One raw pair with its ground truth.

    ``image1``, ``image2``: ``(H, W, 3)`` uint8 RGB. ``flow``: ``(H, W, 2)`` float32 pixels,
    channel 0 = x, frame 1 -> frame 2 (0 where invalid). ``valid``: ``(H, W)`` float32, 1 where
    ground truth exists. ``occluded``: ``(H, W)`` bool (True = occluded) where the data set
    has occlusion masks, else ``None``. ``sequence``, ``frame``: where the pair comes from
    (scene and number of frame 1); ``name``: a unique label of the pair in its data set.
    """

    image1: np.ndarray
    image2: np.ndarray
    flow: np.ndarray
    valid: np.ndarray
    occluded: np.ndarray | None = None
    sequence: str = ""
    frame: int = 0
    name: str = ""


@dataclass(frozen=True)
class PairFiles:
    """The files of one pair; masks are ``None`` where the data set has none."""

    image1: Path
    image2: Path
    flow: Path
    sequence: str
    frame: int
    name: str
    occlusion: Path | None = None  # non-zero = occluded
    invalid: Path | None = None  # non-zero = no ground truth
    valid: Path | None = None  # non-zero = ground truth
    flow_noc: Path | None = None  # KITTI non-occluded ground truth

    def load(self) -> FlowPair:
        """Reads every file; shapes are checked against frame 1."""
        image1, image2 = read_image(self.image1), read_image(self.image2)
        flow, valid = read_ground_truth(self.flow)
        size = image1.shape[:2]

        def check(shape: tuple[int, ...], path: Path) -> None:
            if tuple(shape[:2]) != size:
                raise ValueError(
                    f"{path} is {shape[1]}x{shape[0]} but {self.image1} is {size[1]}x{size[0]}"
                )

        check(image2.shape, self.image2)
        check(flow.shape, self.flow)
        if self.invalid is not None:
            invalid = read_mask(self.invalid)
            check(invalid.shape, self.invalid)
            valid &= ~invalid
        if self.valid is not None:
            mask = read_mask(self.valid)
            check(mask.shape, self.valid)
            valid &= mask
        occluded = None
        if self.occlusion is not None:
            occluded = read_mask(self.occlusion)
            check(occluded.shape, self.occlusion)
        elif self.flow_noc is not None:
            _, valid_noc = read_kitti_png(self.flow_noc)
            check(valid_noc.shape, self.flow_noc)
            occluded = valid & ~valid_noc
        flow[~valid] = 0.0
        return FlowPair(
            image1=image1,
            image2=image2,
            flow=flow,
            valid=valid.astype(np.float32),
            occluded=occluded,
            sequence=self.sequence,
            frame=self.frame,
            name=self.name,
        )


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {what}")
    return path


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def _number(path: Path) -> int:
    """The last run of digits in a file's stem (``frame_0012`` -> 12)."""
    digits = re.findall(r"\d+", path.stem)
    if not digits:
        raise ValueError(f"{path}: expected a frame number in the file name")
    return int(digits[-1])


# --------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------


class FlowReader(Dataset):
    """Base of the readers: the pairs under ``root``, raw or augmented.

    Args:
        root: the data set's folder as distributed (see the module docstring).
        split: ``training`` everywhere; FlyingChairs also ``validation``, FlyingThings3D
            ``test``.
        variant: Sintel ``clean`` / ``final``; FlyingThings3D ``frames_cleanpass`` /
            ``frames_finalpass`` (``clean`` / ``final`` accepted); ``None``: the default.
        augment_config: augmentation of :meth:`sample`; ``None``: raw pairs as tensors.
        seed: ``reader[i]`` augments with ``numpy.random.default_rng([seed, i])``.

    Raises:
        FileNotFoundError: ``root`` or a file a pair needs is missing, or no pairs are found
            (the message names the layout expected).
        ValueError: an unknown split or variant.
    """

    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("training",)
    variants: ClassVar[tuple[str, ...]] = ()
    sparse: bool = False

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split: str = "training",
        variant: str | None = None,
        augment_config: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        if split not in self.splits:
            raise ValueError(
                f"{self.title} has no split {split!r} with ground truth; "
                f"expected one of {', '.join(self.splits)}"
            )
        if variant is not None and not self.variants:
            raise ValueError(f"{self.title} has no variants (got {variant!r})")
        self.split = split
        self.variant = self._resolve_variant(variant)
        self.augment_config = augment_config
        self.seed = seed
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.title} root {self.root} is not a folder")
        self.files: list[PairFiles] = self._discover()
        if not self.files:
            raise FileNotFoundError(
                f"no {self.title} pairs under {self.root}: expected {self._layout()}"
            )

    def _resolve_variant(self, variant: str | None) -> str | None:
        if not self.variants:
            return None
        if variant is None:
            return self.variants[0]
        if variant not in self.variants:
            raise ValueError(
                f"unknown {self.title} variant {variant!r}; expected one of "
                f"{', '.join(self.variants)}"
            )
        return variant

    def _discover(self) -> list[PairFiles]:
        raise NotImplementedError

    def _layout(self) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        variant = f", variant={self.variant!r}" if self.variant else ""
        return (
            f"{type(self).__name__}({str(self.root)!r}, split={self.split!r}{variant}, "
            f"{len(self)} pairs)"
        )

    def pair(self, index: int) -> FlowPair:
        """The raw, unaugmented pair ``index``."""
        if not 0 <= index < len(self.files):
            raise IndexError(f"pair {index} of a {len(self.files)}-pair {self.title} reader")
        return self.files[index].load()

    def sample(self, item: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Pair ``item`` as a training sample, augmented by ``rng`` (when configured)."""
        pair = self.pair(item)
        image1, image2, flow, valid = pair.image1, pair.image2, pair.flow, pair.valid
        if self.augment_config is not None:
            image1, image2, flow, valid = augment(
                rng, image1, image2, flow, valid, self.augment_config, sparse=self.sparse
            )
        return to_sample(image1, image2, flow, valid)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample(index, np.random.default_rng([self.seed, index]))


class FlyingChairs(FlowReader):
    """FlyingChairs: ``ROOT/data/NNNNN_{img1,img2}.ppm``, ``NNNNN_flow.flo``."""

    kind = "chairs"
    title = "FlyingChairs"
    splits = ("training", "validation")
    SPLIT_FILE = "chairs_split.txt"

    def _layout(self) -> str:
        data = self.root / "data"
        return f"{data}/*_img1.ppm, {data}/*_img2.ppm and {data}/*_flow.flo"

    def _discover(self) -> list[PairFiles]:
        data = self.root / "data"
        flows = sorted(data.glob("*_flow.flo"))
        split_file = self.root / self.SPLIT_FILE
        if split_file.is_file():
            labels = [int(v) for v in split_file.read_text().split()]
            if len(labels) != len(flows):
                raise ValueError(
                    f"{split_file} lists {len(labels)} pairs but {data} holds {len(flows)} "
                    "*_flow.flo files"
                )
        elif self.split == "validation":
            raise FileNotFoundError(
                f"FlyingChairs split 'validation' needs {split_file} (1 = training, "
                "2 = validation per pair)"
            )
        else:
            labels = [1] * len(flows)
        wanted = 1 if self.split == "training" else 2
        out = []
        for flow, label in zip(flows, labels, strict=True):
            if label != wanted:
                continue
            stem = flow.name[: -len("_flow.flo")]
            out.append(
                PairFiles(
                    image1=_require_file(data / f"{stem}_img1.ppm", f"frame 1 of {flow.name}"),
                    image2=_require_file(data / f"{stem}_img2.ppm", f"frame 2 of {flow.name}"),
                    flow=flow,
                    sequence=stem,
                    frame=_number(Path(stem)),
                    name=stem,
                )
            )
        return out


class FlyingThings3D(FlowReader):
    """FlyingThings3D (``frames_cleanpass`` / ``frames_finalpass``), both flow directions.

    ``cameras``: which cameras' pairs (``left`` by default, as the official loader).
    """

    kind = "things"
    title = "FlyingThings3D"
    splits = ("training", "test", "validation")
    variants = ("frames_cleanpass", "frames_finalpass")
    _SPLIT_DIRS: ClassVar[dict[str, str]] = {
        "training": "TRAIN",
        "test": "TEST",
        "validation": "TEST",
    }

    def __init__(self, root, *, cameras: tuple[str, ...] = ("left",), **kwargs) -> None:
        unknown = set(cameras) - {"left", "right"}
        if unknown or not cameras:
            raise ValueError(f"FlyingThings3D cameras are left and right, got {cameras}")
        self.cameras = tuple(cameras)
        super().__init__(root, **kwargs)

    def _resolve_variant(self, variant: str | None) -> str | None:
        short = {"clean": "frames_cleanpass", "final": "frames_finalpass"}
        return super()._resolve_variant(short.get(variant, variant))

    def _layout(self) -> str:
        part = self._SPLIT_DIRS[self.split]
        return (
            f"{self.root}/{self.variant}/{part}/<A|B|C>/NNNN/left/NNNN.png and "
            f"{self.root}/optical_flow/{part}/<A|B|C>/NNNN/into_future/left/"
            "OpticalFlowIntoFuture_NNNN_L.pfm"
        )

    def _discover(self) -> list[PairFiles]:
        part = self._SPLIT_DIRS[self.split]
        image_root = self.root / str(self.variant) / part
        flow_root = self.root / "optical_flow" / part
        scenes = sorted(p for p in image_root.glob("*/*") if p.is_dir())
        out = []
        for camera in self.cameras:
            side = camera[0].upper()
            for direction, label in (("into_future", "Future"), ("into_past", "Past")):
                for scene in scenes:
                    frames = {_number(p): p for p in (scene / camera).glob("*.png")}
                    scene_name = f"{scene.parent.name}/{scene.name}"
                    flow_dir = flow_root / scene.parent.name / scene.name / direction / camera
                    for t in sorted(frames):
                        if t + 1 not in frames:
                            continue
                        source = t if direction == "into_future" else t + 1
                        target = t + 1 if direction == "into_future" else t
                        flow = flow_dir / f"OpticalFlowInto{label}_{source:04d}_{side}.pfm"
                        out.append(
                            PairFiles(
                                image1=frames[source],
                                image2=frames[target],
                                flow=_require_file(
                                    flow, f"the {direction} flow of {frames[source]}"
                                ),
                                sequence=f"{scene_name}/{camera}",
                                frame=source,
                                name=f"{scene_name}/{camera}/{direction}/{source:04d}",
                            )
                        )
        return out


class MpiSintel(FlowReader):
    """MPI-Sintel (``clean`` / ``final``), with its occlusion and invalid masks."""

    kind = "sintel"
    title = "MPI-Sintel"
    variants = ("clean", "final")

    def _layout(self) -> str:
        base = self.root / self.split
        return (
            f"{base}/{self.variant}/<scene>/frame_NNNN.png and {base}/flow/<scene>/frame_NNNN.flo"
        )

    def _discover(self) -> list[PairFiles]:
        base = self.root / self.split
        image_root = base / str(self.variant)
        if not image_root.is_dir():
            return []
        out = []
        for scene in sorted(p for p in image_root.iterdir() if p.is_dir()):
            frames = sorted(scene.glob("frame_*.png"))
            for first, second in itertools.pairwise(frames):
                flow = base / "flow" / scene.name / f"{first.stem}.flo"
                out.append(
                    PairFiles(
                        image1=first,
                        image2=second,
                        flow=_require_file(flow, f"the flow of {first}"),
                        sequence=scene.name,
                        frame=_number(first),
                        name=f"{scene.name}/{first.stem}",
                        occlusion=_optional(base / "occlusions" / scene.name / first.name),
                        invalid=_optional(base / "invalid" / scene.name / first.name),
                    )
                )
        return out


class Kitti2015(FlowReader):
    """KITTI-2015 scene flow training pairs (sparse), occlusions from ``flow_noc``."""

    kind = "kitti"
    title = "KITTI-2015"
    sparse = True

    def _layout(self) -> str:
        base = self.root / self.split
        return f"{base}/image_2/NNNNNN_10.png, NNNNNN_11.png and {base}/flow_occ/NNNNNN_10.png"

    def _discover(self) -> list[PairFiles]:
        base = self.root / self.split
        out = []
        for flow in sorted((base / "flow_occ").glob("*_10.png")):
            stem = flow.name[: -len("_10.png")]
            out.append(
                PairFiles(
                    image1=_require_file(base / "image_2" / f"{stem}_10.png", f"frame 1 of {flow}"),
                    image2=_require_file(base / "image_2" / f"{stem}_11.png", f"frame 2 of {flow}"),
                    flow=flow,
                    sequence=stem,
                    frame=10,
                    name=stem,
                    flow_noc=_optional(base / "flow_noc" / flow.name),
                )
            )
        return out


class HD1K(FlowReader):
    """HD1K (sparse): frames ``F`` and ``F + 1`` of each sequence with the flow of ``F``."""

    kind = "hd1k"
    title = "HD1K"
    sparse = True

    def _layout(self) -> str:
        return (
            f"{self.root}/hd1k_input/image_2/SSSSSS_FFFF.png and "
            f"{self.root}/hd1k_flow_gt/flow_occ/SSSSSS_FFFF.png"
        )

    def _discover(self) -> list[PairFiles]:
        images = self.root / "hd1k_input" / "image_2"
        out = []
        for flow in sorted((self.root / "hd1k_flow_gt" / "flow_occ").glob("*_*.png")):
            sequence, _, number = flow.stem.rpartition("_")
            if not number.isdigit():
                continue
            following = images / f"{sequence}_{int(number) + 1:0{len(number)}d}.png"
            if not following.is_file():  # the last frame of a sequence
                continue
            out.append(
                PairFiles(
                    image1=_require_file(images / flow.name, f"frame 1 of {flow}"),
                    image2=following,
                    flow=flow,
                    sequence=sequence,
                    frame=int(number),
                    name=flow.stem,
                )
            )
        return out


class FolderPairs(FlowReader):
    """Your own pairs: ``ROOT/img1``, ``ROOT/img2``, ``ROOT/flow`` with matching stems.

    ``sparse``: KITTI-style augmentation; by default when the flows are KITTI PNGs.
    """

    kind = "folder"
    title = "folder"

    def __init__(self, root, *, sparse: bool | None = None, **kwargs) -> None:
        super().__init__(root, **kwargs)
        if sparse is not None:
            self.sparse = sparse
        else:
            self.sparse = all(f.flow.suffix.lower() == ".png" for f in self.files)

    def _layout(self) -> str:
        return (
            f"{self.root}/img1/<stem>.png, {self.root}/img2/<stem>.png and "
            f"{self.root}/flow/<stem>.flo|.png|.npy"
        )

    @staticmethod
    def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
        found: dict[str, Path] = {}
        if not folder.is_dir():
            return found
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in suffixes:
                if path.stem in found:
                    raise ValueError(f"{found[path.stem]} and {path} share the stem {path.stem!r}")
                found[path.stem] = path
        return found

    def _discover(self) -> list[PairFiles]:
        flows = self._by_stem(self.root / "flow", _FLOW_SUFFIXES)
        firsts = self._by_stem(self.root / "img1", _IMAGE_SUFFIXES)
        seconds = self._by_stem(self.root / "img2", _IMAGE_SUFFIXES)
        out = []
        for index, stem in enumerate(sorted(flows)):
            for images, folder in ((firsts, "img1"), (seconds, "img2")):
                if stem not in images:
                    raise FileNotFoundError(
                        f"{self.root / folder}/{stem}.* is missing: the image of {flows[stem]}"
                    )
            out.append(
                PairFiles(
                    image1=firsts[stem],
                    image2=seconds[stem],
                    flow=flows[stem],
                    sequence=stem,
                    frame=index,
                    name=stem,
                    valid=_optional(self.root / "valid" / f"{stem}.png"),
                    occlusion=_optional(self.root / "occlusions" / f"{stem}.png"),
                )
            )
        return out


#: Reader class of every on-disk data set kind.
READERS: dict[str, type[FlowReader]] = {
    cls.kind: cls for cls in (FlyingChairs, FlyingThings3D, MpiSintel, Kitti2015, HD1K, FolderPairs)
}
#: The data set kinds read from files (``DATASET_KINDS`` minus the generator).
READER_KINDS: tuple[str, ...] = tuple(READERS)


def open_reader(
    kind: str,
    root: str | os.PathLike[str],
    *,
    split: str = "training",
    variant: str | None = None,
    augment_config: AugmentConfig | None = None,
    seed: int = 0,
) -> FlowReader:
    """The reader of data set ``kind`` (one of :data:`READER_KINDS`) under ``root``."""
    if kind not in READERS:
        raise ValueError(f"unknown data set {kind!r}; expected one of {', '.join(READER_KINDS)}")
    return READERS[kind](
        root, split=split, variant=variant, augment_config=augment_config, seed=seed
    )


def build_reader_dataset(source, augment_config: AugmentConfig | None, *, seed: int) -> FlowReader:
    """A training data set for a :class:`pipeline.train_config.DataSource`-like ``source``
    (attributes ``kind``, ``root``, ``split``, ``variant``) read from disk."""
    if source.kind not in READERS:
        raise ValueError(
            f"{source.kind!r} is not read from disk; expected one of {', '.join(READER_KINDS)}"
        )
    if source.root is None:
        raise ValueError(f"the {source.kind} data set needs a root folder")
    return open_reader(
        source.kind,
        source.root,
        split=getattr(source, "split", "training") or "training",
        variant=getattr(source, "variant", None),
        augment_config=augment_config,
        seed=seed,
    )


__all__ = [
    "DATASET_KINDS",
    "HD1K",
    "READERS",
    "READER_KINDS",
    "FlowPair",
    "FlowReader",
    "FlyingChairs",
    "FlyingThings3D",
    "FolderPairs",
    "Kitti2015",
    "MpiSintel",
    "PairFiles",
    "build_reader_dataset",
    "open_reader",
    "read_ground_truth",
    "read_image",
    "read_mask",
    "read_pfm",
]
