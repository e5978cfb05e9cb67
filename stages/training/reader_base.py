"""The reader contract: :class:`FlowPair`, the files of a pair, and :class:`FlowReader`.

A reader finds the pairs of a data set under a root folder and serves them raw
(:meth:`FlowReader.pair`) or as augmented training samples (:meth:`FlowReader.sample`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ..flow_io import read_kitti_png
from ..image_io import read_image
from .augment import AugmentConfig, augment
from .datasets import to_sample
from .flow_files import read_dense_ground_truth, read_ground_truth, read_mask

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

    def load(self, *, every_pixel: bool = False) -> FlowPair:
        """Reads every file; shapes are checked against frame 1.

        ``every_pixel``: the dense flow file as stored at every pixel, all valid (the data
        set's invalid / valid masks and the 1000 px rule are not applied), as RAFT's
        ``validate_sintel`` scores; a sparse file (KITTI PNG) raises ``ValueError``.
        """
        image1, image2 = read_image(self.image1), read_image(self.image2)
        if every_pixel:
            flow = read_dense_ground_truth(self.flow)
            valid = np.ones(flow.shape[:2], bool)
        else:
            flow, valid = read_ground_truth(self.flow)
        size = image1.shape[:2]

        def check(shape: tuple[int, ...], path: Path) -> None:
            if tuple(shape[:2]) != size:
                raise ValueError(
                    f"{path} is {shape[1]}x{shape[0]} but {self.image1} is {size[1]}x{size[0]}"
                )

        check(image2.shape, self.image2)
        check(flow.shape, self.flow)
        if not every_pixel:
            if self.invalid is not None:
                invalid = read_mask(self.invalid)
                check(invalid.shape, self.invalid)
                valid &= ~invalid
            if self.valid is not None:
                mask = read_mask(self.valid)
                check(mask.shape, self.valid)
                valid &= mask
            flow[~valid] = 0.0
        occluded = None
        if self.occlusion is not None:
            occluded = read_mask(self.occlusion)
            check(occluded.shape, self.occlusion)
        elif self.flow_noc is not None:
            _, valid_noc = read_kitti_png(self.flow_noc)
            check(valid_noc.shape, self.flow_noc)
            occluded = valid & ~valid_noc
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

    def pair(self, index: int, *, every_pixel: bool = False) -> FlowPair:
        """The raw, unaugmented pair ``index`` (``every_pixel``: see :meth:`PairFiles.load`)."""
        if not 0 <= index < len(self.files):
            raise IndexError(f"pair {index} of a {len(self.files)}-pair {self.title} reader")
        return self.files[index].load(every_pixel=every_pixel)

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
