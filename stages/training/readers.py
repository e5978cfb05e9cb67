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
    ``ROOT/chairs_split.txt`` (RAFT's name) or ``ROOT/FlyingChairs_train_val.txt`` (the
    authors') holds one number per pair in file order, 1 = ``training``, 2 = ``validation``
    (without it every pair is ``training``, with a warning).
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

import os
from pathlib import Path
from typing import Any

from ..image_io import read_image
from .augment import AugmentConfig
from .flow_files import (
    FLOW_SUFFIXES,
    IMAGE_SUFFIXES,
    MAX_DENSE_FLOW,
    read_ground_truth,
    read_mask,
    read_pfm,
)
from .public_sets import HD1K, FlyingChairs, FlyingThings3D, Kitti2015, MpiSintel
from .reader_base import FlowPair, FlowReader, PairFiles, _optional

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
        flows = self._by_stem(self.root / "flow", FLOW_SUFFIXES)
        firsts = self._by_stem(self.root / "img1", IMAGE_SUFFIXES)
        seconds = self._by_stem(self.root / "img2", IMAGE_SUFFIXES)
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


def open_reader(kind: str, root: str | os.PathLike[str], **options: Any) -> FlowReader:
    """The reader of data set ``kind`` (one of :data:`READER_KINDS`) under ``root``;
    ``options`` are the reader's keywords (``split``, ``variant``, ``augment_config``,
    ``seed``: see :class:`FlowReader`)."""
    if kind not in READERS:
        raise ValueError(f"unknown data set {kind!r}; expected one of {', '.join(READER_KINDS)}")
    return READERS[kind](root, **options)


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
    "MAX_DENSE_FLOW",
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
