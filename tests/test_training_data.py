"""Data set readers on tiny fake data sets in the official layouts, and the augmentations."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stages.flow_io import write_flo, write_flow_npy, write_image, write_kitti_png
from stages.training.augment import (
    AugmentConfig,
    _resize_sparse,
    augment,
    spatial_dense,
    spatial_sparse,
)
from stages.training.readers import (
    READER_KINDS,
    FlyingThings3D,
    FolderPairs,
    build_reader_dataset,
    open_reader,
    read_pfm,
)

H, W = 48, 64


def _rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _flow(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-20, 20, (h, w, 2)).astype(np.float32)


def _write_pfm(path: Path, data: np.ndarray, *, little_endian: bool = True) -> None:
    """PFM as FlyingThings3D stores it: header, scale sign = byte order, rows bottom to top."""
    h, w = data.shape[:2]
    magic = "PF" if data.ndim == 3 else "Pf"
    header = f"{magic}\n{w} {h}\n{-1.0 if little_endian else 1.0}\n".encode()
    rows = np.ascontiguousarray(data[::-1], dtype="<f4" if little_endian else ">f4")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + rows.tobytes())


def _same_image(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool((a == b).all())


# ---------------------------------------------------------------------------------- PFM


@pytest.mark.parametrize("little_endian", [True, False])
def test_pfm_reader_handles_byte_order_and_bottom_up_rows(tmp_path, little_endian) -> None:
    data = np.arange(5 * 7 * 3, dtype=np.float32).reshape(5, 7, 3) - 40.5
    _write_pfm(tmp_path / "a.pfm", data, little_endian=little_endian)
    out = read_pfm(tmp_path / "a.pfm")
    assert out.dtype == np.float32 and out.dtype.isnative and out.flags.c_contiguous
    np.testing.assert_array_equal(out, data)
    gray = data[..., 0]
    _write_pfm(tmp_path / "g.pfm", gray, little_endian=little_endian)
    np.testing.assert_array_equal(read_pfm(tmp_path / "g.pfm"), gray)
    (tmp_path / "bad.pfm").write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    with pytest.raises(ValueError, match="not PF/Pf"):
        read_pfm(tmp_path / "bad.pfm")


# ---------------------------------------------------------------------------------- readers


def _make_chairs(root: Path, n: int = 3, split: str | None = "1\n2\n1\n") -> list[np.ndarray]:
    flows = []
    for i in range(1, n + 1):
        write_image(root / "data" / f"{i:05d}_img1.ppm", _rgb(10 * i))
        write_image(root / "data" / f"{i:05d}_img2.ppm", _rgb(10 * i + 1))
        flows.append(_flow(i))
        write_flo(root / "data" / f"{i:05d}_flow.flo", flows[-1])
    if split is not None:
        (root / "chairs_split.txt").write_text(split)
    return flows


def test_chairs_reader_splits_order_and_ground_truth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flows = _make_chairs(tmp_path)
    training = open_reader("chairs", tmp_path)
    validation = open_reader("chairs", tmp_path, split="validation")
    assert [f.name for f in training.files] == ["00001", "00003"]
    assert [f.name for f in validation.files] == ["00002"]
    pair = training.pair(1)
    assert _same_image(pair.image1, _rgb(30)) and _same_image(pair.image2, _rgb(31))
    np.testing.assert_array_equal(pair.flow, flows[2])
    assert pair.valid.dtype == np.float32 and pair.valid.all() and pair.occluded is None
    assert pair.flow.shape == (H, W, 2) and pair.image1.dtype == np.uint8
    np.testing.assert_array_equal(validation.pair(0).flow, flows[1])

    # the split file under the name the data set's authors publish it under
    (tmp_path / "chairs_split.txt").rename(tmp_path / "FlyingChairs_train_val.txt")
    assert [f.name for f in open_reader("chairs", tmp_path).files] == ["00001", "00003"]
    (tmp_path / "FlyingChairs_train_val.txt").unlink()
    with caplog.at_level(logging.WARNING):
        assert len(open_reader("chairs", tmp_path)) == 3
    assert "validation pairs included" in caplog.text
    with pytest.raises(FileNotFoundError, match=r"chairs_split\.txt or FlyingChairs_train"):
        open_reader("chairs", tmp_path, split="validation")
    (tmp_path / "chairs_split.txt").write_text("1\n2\n")
    with pytest.raises(ValueError, match="lists 2 pairs"):
        open_reader("chairs", tmp_path)
    (tmp_path / "chairs_split.txt").write_text("1\n3\n1\n")
    with pytest.raises(ValueError, match=r"chairs_split\.txt: split labels .* found '3'"):
        open_reader("chairs", tmp_path)


def test_things_reader_gives_both_directions_of_the_left_camera(tmp_path: Path) -> None:
    scene = ("A", "0000")
    frames = (6, 7, 8)
    images, future, past = {}, {}, {}
    for cam in ("left", "right"):
        for t in frames:
            images[cam, t] = _rgb(100 * t + len(cam))
            write_image(
                tmp_path / "frames_cleanpass" / "TRAIN" / "A" / "0000" / cam / f"{t:04d}.png",
                images[cam, t],
            )
            for direction, store, label in (
                ("into_future", future, "Future"),
                ("into_past", past, "Past"),
            ):
                field = np.dstack([_flow(1000 * t + len(direction)), np.ones((H, W), np.float32)])
                store[cam, t] = field[..., :2]
                side = cam[0].upper()
                path = (
                    tmp_path / "optical_flow" / "TRAIN" / scene[0] / scene[1] / direction / cam
                    / f"OpticalFlowInto{label}_{t:04d}_{side}.pfm"
                )  # fmt: skip
                _write_pfm(path, field, little_endian=t % 2 == 0)
    reader = open_reader("things", tmp_path)
    assert reader.variant == "frames_cleanpass"
    names = [f.name for f in reader.files]
    assert names == [
        "A/0000/left/into_future/0006",
        "A/0000/left/into_future/0007",
        "A/0000/left/into_past/0007",
        "A/0000/left/into_past/0008",
    ]
    expected = [(6, 7, future["left", 6]), (7, 8, future["left", 7]),
                (7, 6, past["left", 7]), (8, 7, past["left", 8])]  # fmt: skip
    for i, (a, b, flow) in enumerate(expected):
        pair = reader.pair(i)
        assert _same_image(pair.image1, images["left", a]), i
        assert _same_image(pair.image2, images["left", b]), i
        np.testing.assert_array_equal(pair.flow, flow)
        assert pair.frame == a and pair.sequence == "A/0000/left"
    both = FlyingThings3D(tmp_path, cameras=("left", "right"))
    assert len(both) == 8 and both.files[4].name == "A/0000/right/into_future/0006"


@pytest.mark.parametrize(
    ("kind", "options", "error", "match"),
    [
        (
            "things",
            {"variant": "final"},
            FileNotFoundError,
            r"expected \S*/frames_finalpass/TRAIN/",
        ),
        ("things", {"split": "test"}, FileNotFoundError, r"expected \S*/frames_cleanpass/TEST/"),
        ("sintel", {"split": "test"}, ValueError, "MPI-Sintel has no split 'test'"),
        ("sintel", {"variant": "albedo"}, ValueError, "variant 'albedo'; expected one of clean"),
        ("kitti", {"split": "testing"}, ValueError, "KITTI-2015 has no split 'testing'"),
        ("kitti", {"variant": "final"}, ValueError, "KITTI-2015 has no variants"),
        ("hd1k", {}, FileNotFoundError, r"expected \S*/hd1k_input/image_2/SSSSSS_FFFF\.png"),
        ("folder", {}, FileNotFoundError, r"expected \S*/img1/<stem>\.png"),
        ("chairs", {}, FileNotFoundError, r"expected \S*/data/\*_img1\.ppm"),
    ],
)
def test_readers_say_what_they_refuse_and_the_layout_they_expect(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    options: dict,
    error: type[Exception],
    match: str,
) -> None:
    """Splits without ground truth and unknown variants are refused by name; a root without
    the data set's files names the layout it expected."""
    with caplog.at_level(logging.WARNING), pytest.raises(error, match=match):
        open_reader(kind, tmp_path, **options)
    assert not caplog.records  # no warning about what the refusal makes moot


def test_sintel_reader_scenes_masks_and_variants(tmp_path: Path) -> None:
    base = tmp_path / "training"
    lengths = {"alley_1": 3, "bamboo_1": 2}
    flows = {}
    for scene, count in lengths.items():
        for t in range(1, count + 1):
            for variant in ("clean", "final"):
                seed = t + 20 * len(scene) + (100 if variant == "final" else 0)
                write_image(base / variant / scene / f"frame_{t:04d}.png", _rgb(seed))
            if t < count:
                flows[scene, t] = _flow(t + 7 * len(scene))
                write_flo(base / "flow" / scene / f"frame_{t:04d}.flo", flows[scene, t])
    occluded = np.zeros((H, W), np.uint8)
    occluded[10:20, 5:30] = 255
    write_image(base / "occlusions" / "alley_1" / "frame_0001.png", occluded)
    invalid = np.zeros((H, W), np.uint8)
    invalid[:, :4] = 255
    write_image(base / "invalid" / "alley_1" / "frame_0001.png", invalid)
    # a huge value is unknown ground truth (the official loaders' rule)
    flows["bamboo_1", 1][0, 0] = (5000.0, 0.0)
    write_flo(base / "flow" / "bamboo_1" / "frame_0001.flo", flows["bamboo_1", 1])

    reader = open_reader("sintel", tmp_path)
    assert reader.variant == "clean" and len(reader) == 3
    assert [(f.sequence, f.frame) for f in reader.files] == [
        ("alley_1", 1), ("alley_1", 2), ("bamboo_1", 1)
    ]  # fmt: skip
    first = reader.pair(0)
    assert _same_image(first.image1, _rgb(141)) and _same_image(first.image2, _rgb(142))
    np.testing.assert_array_equal(first.occluded, occluded > 0)
    assert (first.valid[:, :4] == 0).all() and (first.valid[:, 4:] == 1).all()
    np.testing.assert_array_equal(first.flow[:, 4:], flows["alley_1", 1][:, 4:])
    assert (first.flow[:, :4] == 0).all()
    second = reader.pair(1)
    assert second.occluded is None and second.valid.all()
    last = reader.pair(2)
    assert last.valid[0, 0] == 0 and last.valid.sum() == H * W - 1 and last.flow[0, 0, 0] == 0
    final = open_reader("sintel", tmp_path, variant="final")
    assert _same_image(final.pair(0).image1, _rgb(241))


def test_kitti_reader_sparse_ground_truth_and_occlusion_from_noc(tmp_path: Path) -> None:
    base = tmp_path / "training"
    rng = np.random.default_rng(3)
    expected = []
    for i in range(2):
        write_image(base / "image_2" / f"{i:06d}_10.png", _rgb(i))
        write_image(base / "image_2" / f"{i:06d}_11.png", _rgb(i + 50))
        flow = np.round(_flow(i) * 64) / 64
        occ_valid = rng.random((H, W)) < 0.4
        noc_valid = occ_valid & (rng.random((H, W)) < 0.7)
        write_kitti_png(base / "flow_occ" / f"{i:06d}_10.png", flow, occ_valid)
        write_kitti_png(base / "flow_noc" / f"{i:06d}_10.png", flow, noc_valid)
        expected.append((flow, occ_valid, noc_valid))
    reader = open_reader("kitti", tmp_path)
    assert reader.sparse and len(reader) == 2 and reader.files[1].sequence == "000001"
    for i, (flow, occ_valid, noc_valid) in enumerate(expected):
        pair = reader.pair(i)
        np.testing.assert_array_equal(pair.valid, occ_valid.astype(np.float32))
        np.testing.assert_array_equal(pair.flow[occ_valid], flow[occ_valid])
        assert (pair.flow[~occ_valid] == 0).all()
        np.testing.assert_array_equal(pair.occluded, occ_valid & ~noc_valid)
        assert _same_image(pair.image2, _rgb(i + 50))


def test_hd1k_reader_pairs_consecutive_frames_of_each_sequence(tmp_path: Path) -> None:
    counts = {0: 3, 1: 2}
    for seq, count in counts.items():
        for f in range(count):
            name = f"{seq:06d}_{f:04d}.png"
            write_image(tmp_path / "hd1k_input" / "image_2" / name, _rgb(10 * seq + f))
            write_kitti_png(tmp_path / "hd1k_flow_gt" / "flow_occ" / name, np.full((H, W, 2), f))
    reader = open_reader("hd1k", tmp_path)
    assert reader.sparse
    assert [f.name for f in reader.files] == ["000000_0000", "000000_0001", "000001_0000"]
    pair = reader.pair(1)
    assert _same_image(pair.image1, _rgb(1)) and _same_image(pair.image2, _rgb(2))
    assert (pair.flow == 1).all() and pair.sequence == "000000" and pair.frame == 1


def test_folder_reader_formats_valid_masks_and_order(tmp_path: Path) -> None:
    flows = {"b": _flow(1), "a": _flow(2), "c": np.round(_flow(3) * 64) / 64}
    for stem in flows:
        write_image(tmp_path / "img1" / f"{stem}.png", _rgb(ord(stem)))
        suffix = ".jpg" if stem == "b" else ".png"
        write_image(tmp_path / "img2" / f"{stem}{suffix}", _rgb(ord(stem) + 1))
    write_flo(tmp_path / "flow" / "b.flo", flows["b"])
    write_flow_npy(tmp_path / "flow" / "a.npy", flows["a"])
    write_kitti_png(tmp_path / "flow" / "c.png", flows["c"])
    valid = np.ones((H, W), np.uint8)
    valid[:8] = 0
    write_image(tmp_path / "valid" / "a.png", valid * 255)
    occluded = np.zeros((H, W), np.uint8)
    occluded[30:] = 1
    write_image(tmp_path / "occlusions" / "b.png", occluded)

    reader = open_reader("folder", tmp_path)
    assert [f.name for f in reader.files] == ["a", "b", "c"]
    assert not reader.sparse  # mixed formats: dense augmentation
    a, b, c = (reader.pair(i) for i in range(3))
    np.testing.assert_array_equal(a.flow[8:], flows["a"][8:])
    assert a.valid[:8].sum() == 0 and a.valid[8:].all()
    np.testing.assert_array_equal(b.flow, flows["b"])
    np.testing.assert_array_equal(b.occluded, occluded > 0)
    np.testing.assert_array_equal(c.flow, flows["c"])
    assert _same_image(c.image1, _rgb(ord("c")))
    assert b.image2.shape == (H, W, 3)  # the JPEG frame 2
    assert FolderPairs(tmp_path, sparse=True).sparse

    (tmp_path / "img2" / "c.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"img2/c\.\* is missing"):
        open_reader("folder", tmp_path)


@pytest.mark.parametrize("kind", READER_KINDS)
def test_empty_or_missing_roots_name_the_expected_layout(tmp_path: Path, kind: str) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        open_reader(kind, tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=f"no .* pairs under {tmp_path}: expected"):
        open_reader(kind, tmp_path)


# ---------------------------------------------------------------------------------- samples


def test_build_reader_dataset_samples_are_cropped_and_deterministic(tmp_path: Path) -> None:
    _make_chairs(tmp_path, n=2, split=None)
    source = SimpleNamespace(kind="chairs", root=str(tmp_path), split="training", variant=None,
                             weight=1.0)  # fmt: skip
    config = AugmentConfig(crop=(32, 40))
    data = build_reader_dataset(source, config, seed=9)
    assert len(data) == 2
    one = data.sample(1, np.random.default_rng(5))
    two = data.sample(1, np.random.default_rng(5))
    assert set(one) == {"image1", "image2", "flow", "valid"}
    assert one["image1"].shape == (3, 32, 40) and one["flow"].shape == (2, 32, 40)
    assert one["valid"].shape == (32, 40) and one["image1"].dtype == torch.float32
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=0, atol=0)
    item = data[1]
    again = data.sample(1, np.random.default_rng([9, 1]))
    for key in item:
        torch.testing.assert_close(item[key], again[key], rtol=0, atol=0)
    raw = build_reader_dataset(source, None, seed=0)[0]
    assert raw["image1"].shape == (3, H, W)
    with pytest.raises(ValueError, match="not read from disk"):
        build_reader_dataset(SimpleNamespace(kind="synthetic", root=None), config, seed=0)


def test_reader_sources_mix_in_the_training_data(tmp_path: Path) -> None:
    """``pipeline.training`` draws reader items through ``sample(item, rng)``."""
    from pipeline.train_config import DataSource, TrainConfig
    from pipeline.training import build_training_data

    _make_chairs(tmp_path / "chairs", n=2, split=None)
    _make_chairs(tmp_path / "more", n=1, split=None)
    config = TrainConfig(
        data=(DataSource(kind="chairs", root=str(tmp_path / "chairs")),
              DataSource(kind="chairs", root=str(tmp_path / "more"), weight=3.0)),
        crop=(64, 64), steps=2, batch_size=2,
    )  # fmt: skip
    data = build_training_data(config)
    batch = torch.utils.data.default_collate([data[0], data[1], data[2]])
    assert batch["image1"].shape == (3, 3, 64, 64) and batch["valid"].shape == (3, 64, 64)
    torch.testing.assert_close(build_training_data(config)[1]["flow"], data[1]["flow"])


def test_a_source_changes_the_augmentation_for_itself_only(tmp_path: Path) -> None:
    """The official KITTI stage: no flips and milder colour jitter for KITTI alone."""
    from pipeline.config import ConfigError
    from pipeline.train_config import load_train_config
    from pipeline.training import build_training_data

    _make_chairs(tmp_path / "chairs", n=1, split=None)
    base = tmp_path / "kitti" / "training"
    write_image(base / "image_2" / "000000_10.png", _rgb(0))
    write_image(base / "image_2" / "000000_11.png", _rgb(1))
    write_kitti_png(base / "flow_occ" / "000000_10.png", np.full((H, W, 2), 1.5))
    data = [
        {"kind": "kitti", "root": str(tmp_path / "kitti"),
         "augment": {"hflip_prob": 0, "brightness": 0.3, "asymmetric_color": 0}},
        {"kind": "chairs", "root": str(tmp_path / "chairs")},
    ]  # fmt: skip
    overrides = {"data": data, "crop": [64, 64], "steps": 1, "augment.max_scale": 0.4}
    config = load_train_config(None, {**overrides, "data.0.augment.hue": "0.0955"})  # --set
    kitti, chairs = build_training_data(config).sources
    assert kitti.augment_config == replace(
        config.augmentation(), hflip_prob=0.0, brightness=0.3, asymmetric_color=0.0, hue=0.0955
    )
    assert kitti.augment_config.max_scale == 0.4 and kitti.augment_config.crop == (64, 64)
    assert chairs.augment_config == config.augmentation()
    with pytest.raises(ConfigError, match=r"data\.0\.augment\.hflip"):
        load_train_config(None, {**overrides, "data.0.augment": {"hflip": 0}})
    with pytest.raises(ConfigError, match=r"data\.0\.augment\.brightness must be a number"):
        load_train_config(None, {**overrides, "data.0.augment.brightness": "bright"})
    with pytest.raises(ConfigError, match="training crop"):
        load_train_config(None, {**overrides, "data.0.augment.crop": [16, 16]})
    with pytest.raises(ConfigError, match=r"data\.augment must be a mapping"):
        load_train_config(None, {**overrides, "data.1.augment": [1]})


def test_kitti_samples_use_the_sparse_augmentation(tmp_path: Path) -> None:
    base = tmp_path / "training"
    write_image(base / "image_2" / "000000_10.png", _rgb(0))
    write_image(base / "image_2" / "000000_11.png", _rgb(1))
    valid = np.zeros((H, W), bool)
    valid[::7, ::5] = True
    write_kitti_png(base / "flow_occ" / "000000_10.png", np.full((H, W, 2), 1.5), valid)
    data = open_reader("kitti", tmp_path, augment_config=AugmentConfig(crop=(40, 56)), seed=1)
    for index in range(4):
        sample = data.sample(0, np.random.default_rng(index))
        kept = sample["valid"] > 0
        assert sample["flow"].shape == (2, 40, 56) and kept.any()
        # samples are moved, never interpolated: every flow value is 1.5 px times a scale
        ratio = sample["flow"][1][kept] / 1.5
        assert torch.allclose(ratio, ratio[0].expand_as(ratio)) and float(ratio[0]) > 0
        assert set(torch.unique(sample["valid"]).tolist()) <= {0.0, 1.0}


# ---------------------------------------------------------------------------------- augment


def _coordinate_images() -> tuple[np.ndarray, np.ndarray]:
    """Frame 1 stores each pixel's own x in R and y in G, so the output tells where it came from."""
    ys, xs = np.mgrid[0:H, 0:W]
    image = np.dstack([xs, ys, np.zeros_like(xs)]).astype(np.uint8)
    return image, image.copy()


def test_sparse_crops_favour_the_frame_edges_as_the_official_kitti_crop() -> None:
    """The corner is drawn 20 rows / 50 columns past the ends and clamped (RAFT's sparse
    augmentor), so a 40x56 window of a 48x64 frame sits at the bottom 21 times in 29 rather
    than 1 in 9, where KITTI's ground truth is."""
    image1, image2 = _coordinate_images()
    flow, valid = np.zeros((H, W, 2), np.float32), np.ones((H, W), np.float32)
    config = AugmentConfig(crop=(40, 56), spatial_prob=0.0, hflip_prob=0.0, vflip_prob=0.0)
    corners = {"sparse": [], "dense": []}
    for seed in range(600):
        for kind, spatial in (("sparse", spatial_sparse), ("dense", spatial_dense)):
            out = spatial(np.random.default_rng(seed), image1, image2, flow, valid, config)
            corners[kind].append((int(out[0][0, 0, 1]), int(out[0][0, 0, 0])))  # (y0, x0)
    for kind, expected_bottom, expected_left in (("sparse", 21 / 29, 51 / 109),
                                                 ("dense", 1 / 9, 1 / 9)):  # fmt: skip
        y0, x0 = np.array(corners[kind]).T
        assert y0.min() == 0 and y0.max() == 8 and x0.min() == 0 and x0.max() == 8
        assert np.mean(y0 == 8) == pytest.approx(expected_bottom, abs=0.06), kind
        assert np.mean(x0 == 0) == pytest.approx(expected_left, abs=0.06), kind


@pytest.mark.parametrize("flip", ["h", "v"])
def test_dense_flips_negate_the_flipped_component(flip: str) -> None:
    image1, image2 = _coordinate_images()
    flow = _flow(4)
    valid = (np.random.default_rng(1).random((H, W)) < 0.8).astype(np.float32)
    config = AugmentConfig(
        crop=(40, 56), spatial_prob=0.0, stretch_prob=0.0, photometric=False,
        hflip_prob=1.0 if flip == "h" else 0.0, vflip_prob=1.0 if flip == "v" else 0.0,
    )  # fmt: skip
    out1, _, out_flow, out_valid = augment(np.random.default_rng(2), image1, image2, flow, valid,
                                           config)  # fmt: skip
    assert out1.shape == (40, 56, 3) and out_flow.shape == (40, 56, 2)
    xs, ys = out1[..., 0].astype(int), out1[..., 1].astype(int)
    if flip == "h":
        assert (np.diff(xs, axis=1) == -1).all() and (np.diff(ys, axis=0) == 1).all()
        sign = np.array([-1.0, 1.0], np.float32)
    else:
        assert (np.diff(ys, axis=0) == -1).all() and (np.diff(xs, axis=1) == 1).all()
        sign = np.array([1.0, -1.0], np.float32)
    np.testing.assert_array_equal(out_flow, flow[ys, xs] * sign)
    np.testing.assert_array_equal(out_valid, valid[ys, xs])


def test_dense_scaling_scales_the_flow_and_crops() -> None:
    image1, image2 = _coordinate_images()
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.0, -2.0
    config = AugmentConfig(crop=(64, 96), min_scale=1.0, max_scale=1.0, stretch_prob=0.0,
                           spatial_prob=1.0, hflip_prob=0.0, vflip_prob=0.0,
                           photometric=False)  # fmt: skip
    _, _, out_flow, out_valid = augment(np.random.default_rng(0), image1, image2, flow,
                                        np.ones((H, W), np.float32), config)  # fmt: skip
    assert out_flow.shape == (64, 96, 2) and out_valid.all()
    np.testing.assert_allclose(out_flow[..., 0], 6.0, rtol=1e-6)
    np.testing.assert_allclose(out_flow[..., 1], -4.0, rtol=1e-6)
    # invalid ground truth (stored as 0, as readers do) never blends into valid pixels
    valid = np.ones((H, W), np.float32)
    valid[10:30, 20:50] = 0
    flow[10:30, 20:50] = 0
    for scale in (1.2, 1.35, 1.5):  # log2 factors: 2.3x .. 2.8x, between-pixel samples
        config = replace(config, min_scale=scale, max_scale=scale)
        _, _, out_flow, out_valid = augment(np.random.default_rng(1), image1, image2, flow,
                                            valid, config)  # fmt: skip
        kept = out_valid > 0
        assert 0 < kept.mean() < 1
        factor = out_flow[..., 0].max() / 3.0  # the scale the augmentation chose
        assert factor > 2
        np.testing.assert_allclose(out_flow[kept][:, 0], 3.0 * factor, rtol=1e-3)


def test_sparse_resize_moves_samples_to_their_scaled_positions() -> None:
    flow = np.zeros((H, W, 2), np.float32)
    valid = np.zeros((H, W), np.float32)
    points = {(5, 7): (1.5, -2.0), (40, 50): (-3.0, 4.25)}
    for (y, x), value in points.items():
        flow[y, x], valid[y, x] = value, 1.0
    moved_flow, moved_valid = _resize_sparse(flow, valid, 2.0, 2.0)
    assert moved_flow.shape == (96, 128, 2) and moved_valid.sum() == 2
    for (y, x), (u, v) in points.items():
        assert moved_valid[2 * y, 2 * x] == 1
        np.testing.assert_array_equal(moved_flow[2 * y, 2 * x], [2 * u, 2 * v])

    # through augment: scale 2, no flips, a crop that keeps both samples
    image1, image2 = _rgb(0), _rgb(1)
    config = AugmentConfig(crop=(88, 120), min_scale=1.0, max_scale=1.0, spatial_prob=1.0,
                           hflip_prob=0.0, photometric=False)  # fmt: skip
    _, _, out_flow, out_valid = augment(np.random.default_rng(3), image1, image2, flow, valid,
                                        config, sparse=True)  # fmt: skip
    assert out_flow.shape == (88, 120, 2) and out_valid.sum() == 2
    (y1, y2), (x1, x2) = np.nonzero(out_valid)
    assert (y2 - y1, x2 - x1) == (70, 86)  # 2 * (40 - 5), 2 * (50 - 7)
    np.testing.assert_array_equal(out_flow[y1, x1], [3.0, -4.0])
    np.testing.assert_array_equal(out_flow[y2, x2], [-6.0, 8.5])


def test_sparse_augmentation_keeps_the_spatial_probability() -> None:
    """Without a spatial draw, a frame large enough for the crop is only flipped and cropped."""
    flow = np.zeros((H, W, 2), np.float32)
    valid = np.zeros((H, W), np.float32)
    flow[20, 30], valid[20, 30] = (2.0, 1.0), 1.0
    config = AugmentConfig(crop=(40, 56), min_scale=0.5, max_scale=0.5, spatial_prob=0.0,
                           hflip_prob=0.0, photometric=False)  # fmt: skip
    _, _, out_flow, out_valid = augment(np.random.default_rng(0), _rgb(0), _rgb(1), flow, valid,
                                        config, sparse=True)  # fmt: skip
    assert out_valid.sum() == 1
    np.testing.assert_array_equal(out_flow[out_valid > 0][0], [2.0, 1.0])
