"""Readers of the public optical-flow data sets: FlyingChairs, FlyingThings3D, MPI-Sintel,
KITTI-2015 and HD1K, in their distributed layouts (see :mod:`stages.training.readers`)."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import ClassVar

from .reader_base import FlowReader, PairFiles, _number, _optional, _require_file

logger = logging.getLogger(__name__)


class FlyingChairs(FlowReader):
    """FlyingChairs: ``ROOT/data/NNNNN_{img1,img2}.ppm``, ``NNNNN_flow.flo``."""

    kind = "chairs"
    title = "FlyingChairs"
    splits = ("training", "validation")
    #: The split file (1 = training, 2 = validation, one line per pair): RAFT's name, then the
    #: name the data set's authors publish it under.
    SPLIT_FILES = ("chairs_split.txt", "FlyingChairs_train_val.txt")

    def _layout(self) -> str:
        data = self.root / "data"
        return f"{data}/*_img1.ppm, {data}/*_img2.ppm and {data}/*_flow.flo"

    def _discover(self) -> list[PairFiles]:
        data = self.root / "data"
        flows = sorted(data.glob("*_flow.flo"))
        found = [self.root / name for name in self.SPLIT_FILES if (self.root / name).is_file()]
        if found:
            labels = _split_labels(found[0])
            if len(labels) != len(flows):
                raise ValueError(
                    f"{found[0]} lists {len(labels)} pairs but {data} holds {len(flows)} "
                    "*_flow.flo files"
                )
        elif self.split == "validation":
            raise FileNotFoundError(
                f"FlyingChairs split 'validation' needs {' or '.join(self.SPLIT_FILES)} in "
                f"{self.root} (1 = training, 2 = validation per pair)"
            )
        else:
            if flows:  # an empty root is refused for its missing pairs, not warned about
                logger.warning(
                    "no FlyingChairs split file (%s) in %s: 'training' takes every pair, the "
                    "validation pairs included",
                    " or ".join(self.SPLIT_FILES),
                    self.root,
                )
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


def _split_labels(path: Path) -> list[int]:
    """The 1 / 2 labels of a FlyingChairs split file."""
    words = path.read_text().split()
    bad = [word for word in words if word not in ("1", "2")]
    if bad:
        raise ValueError(
            f"{path}: split labels must be 1 (training) or 2 (validation), found {bad[0]!r}"
        )
    return [int(word) for word in words]


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
