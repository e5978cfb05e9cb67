"""Flow file formats: files written to disk and read back with independent readers."""

from __future__ import annotations

import dataclasses
import struct
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stages.flow_io import (
    KITTI_MAX_FLOW,
    KITTI_MIN_FLOW,
    read_flo,
    read_flow_npy,
    read_flow_npz,
    read_kitti_png,
    write_flo,
    write_flow_npy,
    write_flow_npz,
    write_kitti_png,
)
from stages.flow_jpeg import (
    FLOW_JPEG_PRESETS,
    FlowJpegLayout,
    dequantize_flow,
    quantize_flow,
    read_flow_jpegs,
    write_flow_jpegs,
)


def _random_flow(height: int = 5, width: int = 7, scale: float = 10.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((height, width, 2)) * scale).astype(np.float32)


def _smooth_flow(height: int = 32, width: int = 48, amplitude: float = 15.0) -> np.ndarray:
    """A slowly varying (H, W, 2) field inside +-amplitude px, friendly to JPEG."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u = amplitude * np.sin(2 * np.pi * xs / width) * np.cos(np.pi * ys / height)
    v = amplitude * np.cos(2 * np.pi * ys / height) * 0.8
    return np.stack([u, v], axis=-1).astype(np.float32)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------ .flo


def test_flo_round_trip_and_opencv_reads_it(tmp_path: Path) -> None:
    flow = _random_flow()
    path = tmp_path / "pair.flo"
    write_flo(path, flow)

    assert path.read_bytes()[:4] == b"PIEH"
    assert struct.unpack("<ii", path.read_bytes()[4:12]) == (7, 5)  # width, height
    assert path.stat().st_size == 12 + 5 * 7 * 2 * 4

    ours = read_flo(path)
    assert ours.dtype == np.float32 and ours.shape == (5, 7, 2)
    np.testing.assert_array_equal(ours, flow)

    theirs = cv2.readOpticalFlow(str(path))
    assert theirs is not None and theirs.shape == (5, 7, 2)
    np.testing.assert_array_equal(theirs, flow)
    assert _leftovers(tmp_path) == []


def test_flo_channel_zero_is_x(tmp_path: Path) -> None:
    flow = np.zeros((2, 3, 2), np.float32)
    flow[..., 0] = 1.5  # rightward
    flow[..., 1] = -2.0  # upward
    write_flo(tmp_path / "a.flo", flow)
    u, v = struct.unpack("<ff", (tmp_path / "a.flo").read_bytes()[12:20])
    assert (u, v) == (1.5, -2.0)


def test_flo_accepts_float64_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "a.flo"
    write_flo(path, np.ones((2, 2, 2)))
    write_flo(path, np.full((3, 4, 2), 2.0, dtype=np.float64))
    np.testing.assert_array_equal(read_flo(path), np.full((3, 4, 2), 2.0, np.float32))


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 3), (1, 4, 5, 2), (0, 5, 2)])
def test_flo_rejects_bad_shapes_and_names_them(tmp_path: Path, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        write_flo(tmp_path / "bad.flo", np.zeros(shape, np.float32))
    assert not (tmp_path / "bad.flo").exists()


def test_read_flo_rejects_wrong_magic_and_truncation(tmp_path: Path) -> None:
    bad_magic = tmp_path / "magic.flo"
    bad_magic.write_bytes(struct.pack("<fii", 1.0, 1, 1) + b"\0" * 8)
    with pytest.raises(ValueError, match="magic"):
        read_flo(bad_magic)

    good = tmp_path / "good.flo"
    write_flo(good, _random_flow(3, 3))
    truncated = tmp_path / "truncated.flo"
    truncated.write_bytes(good.read_bytes()[:-4])
    with pytest.raises(ValueError, match="bytes"):
        read_flo(truncated)


def test_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "taken.flo").mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        write_flo(tmp_path / "taken.flo", _random_flow())
    assert _leftovers(tmp_path) == []
    assert (tmp_path / "taken.flo").is_dir()


# ------------------------------------------------------------------------------- KITTI PNG


def test_kitti_png_channel_order_and_encoding(tmp_path: Path) -> None:
    flow = np.zeros((2, 3, 2), np.float32)
    flow[..., 0] = 1.0  # u
    flow[..., 1] = -0.5  # v
    path = tmp_path / "kitti.png"
    write_kitti_png(path, flow)

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # BGR order
    assert raw.dtype == np.uint16 and raw.shape == (2, 3, 3)
    assert (raw[..., 2] == 2**15 + 64).all()  # R holds u
    assert (raw[..., 1] == 2**15 - 32).all()  # G holds v
    assert (raw[..., 0] == 1).all()  # B holds valid


def test_kitti_png_round_trip_within_half_a_step(tmp_path: Path) -> None:
    flow = _random_flow(6, 9, scale=50.0)
    path = tmp_path / "kitti.png"
    write_kitti_png(path, flow)
    decoded, valid = read_kitti_png(path)
    assert decoded.dtype == np.float32 and decoded.shape == flow.shape
    assert valid.dtype == bool and valid.all()
    assert np.abs(decoded - flow).max() <= 1 / 128 + 1e-6

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float64)
    independent = (raw[..., [2, 1]] - 2**15) / 64.0
    np.testing.assert_allclose(independent, decoded, atol=0)


def test_kitti_png_clips_to_representable_range(tmp_path: Path, caplog) -> None:
    flow = np.array([[[1000.0, -1000.0], [511.99, -512.0]]], np.float32)
    path = tmp_path / "clip.png"
    write_kitti_png(path, flow)
    assert "clip.png: 1 of 2 valid pixels exceed the KITTI PNG range [-512, 511.984] px" in (
        caplog.text
    )
    decoded, valid = read_kitti_png(path)
    assert valid.all()
    assert decoded[0, 0, 0] == KITTI_MAX_FLOW == 511.984375
    assert decoded[0, 0, 1] == KITTI_MIN_FLOW == -512.0
    assert decoded[0, 1, 0] == KITTI_MAX_FLOW
    assert decoded[0, 1, 1] == -512.0
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw[0, 0, 2] == 65535 and raw[0, 0, 1] == 0


def test_kitti_png_invalid_pixels_from_mask_and_non_finite(tmp_path: Path) -> None:
    flow = _random_flow(3, 4)
    flow[0, 0, 0] = np.nan
    flow[1, 1, 1] = np.inf
    mask = np.ones((3, 4), bool)
    mask[2, 3] = False
    path = tmp_path / "valid.png"
    write_kitti_png(path, flow, valid=mask)

    decoded, valid = read_kitti_png(path)
    expected = mask.copy()
    expected[0, 0] = expected[1, 1] = False
    np.testing.assert_array_equal(valid, expected)
    assert (decoded[~valid] == 0).all()
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(raw[..., 0], expected.astype(np.uint16))


def test_kitti_png_rejects_bad_mask_and_non_kitti_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        write_kitti_png(tmp_path / "a.png", np.zeros((3, 3, 2)), valid=np.ones((2, 2)))
    eight_bit = tmp_path / "rgb8.png"
    cv2.imwrite(str(eight_bit), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="uint16"):
        read_kitti_png(eight_bit)


# ------------------------------------------------------------------------------ npy / npz


def test_npy_single_and_stack_round_trip(tmp_path: Path) -> None:
    single = _random_flow()
    write_flow_npy(tmp_path / "one.npy", single)
    assert np.load(tmp_path / "one.npy").dtype == np.float32
    np.testing.assert_array_equal(read_flow_npy(tmp_path / "one.npy"), single)

    stack = np.stack([_random_flow(seed=s) for s in range(3)])
    path = tmp_path / "stack.flow"  # an unusual suffix must be kept as is
    write_flow_npy(path, stack, dtype=np.float16)
    assert path.exists() and not (tmp_path / "stack.flow.npy").exists()
    on_disk = np.load(path)
    assert on_disk.dtype == np.float16 and on_disk.shape == (3, 5, 7, 2)
    back = read_flow_npy(path)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, stack, rtol=1e-3, atol=1e-3)
    assert _leftovers(tmp_path) == []


def test_npz_is_compressed_with_flow_key_and_extras(tmp_path: Path) -> None:
    stack = np.zeros((4, 8, 8, 2), np.float32)
    stack[:, 2:5, 3:6, 0] = 3.25
    path = tmp_path / "clip.npz"
    write_flow_npz(path, stack, dtype=np.float16, indices=np.arange(4), pts=np.linspace(0, 1, 4))

    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        assert names == ["flow.npy", "indices.npy", "pts.npy"]
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in archive.infolist())
    with np.load(path) as independent:
        assert independent["flow"].dtype == np.float16

    flows, extra = read_flow_npz(path)
    assert flows.dtype == np.float32
    np.testing.assert_array_equal(flows, stack)
    np.testing.assert_array_equal(extra["indices"], np.arange(4))
    assert set(extra) == {"indices", "pts"}


def test_npy_npz_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="float16 or float32"):
        write_flow_npy(tmp_path / "a.npy", _random_flow(), dtype=np.float64)
    with pytest.raises(ValueError, match=r"\(5, 7, 2\)"):
        write_flow_npz(tmp_path / "a.npz", _random_flow())
    with pytest.raises(ValueError, match="reserved"):
        write_flow_npz(tmp_path / "a.npz", _random_flow()[None], flow=np.zeros(1))
    with pytest.raises(ValueError, match="pickling"):
        write_flow_npz(tmp_path / "a.npz", _random_flow()[None], meta=np.array([{}], dtype=object))
    np.savez(tmp_path / "other.npz", data=np.zeros(3))
    with pytest.raises(ValueError, match="no 'flow'"):
        read_flow_npz(tmp_path / "other.npz")
    assert _leftovers(tmp_path) == []


def test_float16_overflow_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flow = np.zeros((2, 2, 2), np.float32)
    flow[0, 0, 0] = 1e6
    with caplog.at_level("WARNING", logger="stages.flow_io"):
        write_flow_npy(tmp_path / "big.npy", flow, dtype=np.float16)
    assert "overflow float16" in caplog.text


# --------------------------------------------------------------------------- quantization


@pytest.mark.parametrize("rounding", ["round", "half_even", "floor", "truncate"])
def test_quantize_end_points_and_clipping(rounding: str) -> None:
    values = np.array([-1e6, -20.0, -20.001, 20.0, 20.5, 1e6, np.inf, -np.inf])
    q = quantize_flow(values, bound=20.0, rounding=rounding)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, [0, 0, 0, 255, 255, 255, 255, 0])


def test_quantize_zero_and_ties() -> None:
    ties = np.array([-16.0, -8.0, 0.0, 8.0, 16.0])  # 255 (v + 20) / 40 = 25.5, 76.5, ... 229.5
    np.testing.assert_array_equal(quantize_flow(ties, rounding="round"), [26, 77, 128, 179, 230])
    np.testing.assert_array_equal(
        quantize_flow(ties, rounding="half_even"), [26, 76, 128, 178, 230]
    )
    np.testing.assert_array_equal(quantize_flow(ties, rounding="floor"), [25, 76, 127, 178, 229])
    np.testing.assert_array_equal(quantize_flow(ties, rounding="truncate"), [25, 76, 127, 178, 229])


def test_half_even_matches_opencv_rounding() -> None:
    scaled = 255.0 * (np.array([-16.0, -8.0, 0.0, 8.0, 16.0, 3.3]) + 20.0) / 40.0
    opencv = cv2.convertScaleAbs(scaled[None, :])[0]  # saturate_cast -> cvRound, as in denseflow
    values = np.array([-16.0, -8.0, 0.0, 8.0, 16.0, 3.3])
    np.testing.assert_array_equal(quantize_flow(values, rounding="half_even"), opencv)


def test_quantize_formula_on_a_grid_and_nan() -> None:
    v = np.linspace(-25, 25, 1001)
    expected = np.clip(np.floor(255 * (v + 10) / 20 + 0.5), 0, 255)
    np.testing.assert_array_equal(quantize_flow(v, bound=10.0), expected.astype(np.uint8))
    nan = np.array([np.nan])
    for rounding in ("round", "half_even", "floor", "truncate"):  # NaN: the level of 0 px
        assert (
            quantize_flow(nan, rounding=rounding)[0]
            == quantize_flow(np.zeros(1), rounding=rounding)[0]
        )
    assert quantize_flow(nan)[0] == 128 and quantize_flow(nan, rounding="truncate")[0] == 127


def test_dequantize_inverts_quantize_within_half_a_step() -> None:
    bound = 20.0
    v = np.linspace(-bound, bound, 2001)
    back = dequantize_flow(quantize_flow(v, bound), bound)
    assert back.dtype == np.float32
    assert np.abs(back - v).max() <= bound / 255 + 1e-5
    np.testing.assert_allclose(dequantize_flow(np.array([0, 255]), bound), [-bound, bound])


def test_quantize_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="bound"):
        quantize_flow(np.zeros(2), bound=0.0)
    with pytest.raises(ValueError, match="rounding"):
        quantize_flow(np.zeros(2), rounding="nearest")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ flow JPEGs


def test_layout_defaults_presets_and_names() -> None:
    default = FlowJpegLayout()
    assert default == FLOW_JPEG_PRESETS["mmaction2"]  # the CLI's default preset
    assert default.bound == 20.0 and default.jpeg_quality == 95 and not default.rgb_ends_pairs

    dense = FLOW_JPEG_PRESETS["denseflow"]
    assert (dense.x_name(0), dense.y_name(41)) == ("flow_x_00000.jpg", "flow_y_00041.jpg")
    assert dense.rounding == "half_even" and dense.bound == 20.0

    mm = FLOW_JPEG_PRESETS["mmaction2"]
    assert (mm.x_name(0), mm.y_name(0), mm.image_name(0)) == (
        "x_00001.jpg",
        "y_00001.jpg",
        "img_00001.jpg",
    )
    assert mm.rounding == "truncate" and mm.index_base == 1

    with pytest.raises(dataclasses.FrozenInstanceError):
        default.bound = 5.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        FLOW_JPEG_PRESETS["mine"] = default  # type: ignore[index]


def test_layout_validation() -> None:
    with pytest.raises(ValueError, match="rounding"):
        FlowJpegLayout(rounding="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        FlowJpegLayout(x_template="f_{:05d}.jpg", y_template="f_{:05d}.jpg")
    with pytest.raises(ValueError, match="jpeg_quality"):
        FlowJpegLayout(jpeg_quality=101)
    with pytest.raises(ValueError, match=">= 0"):
        FlowJpegLayout().x_name(-1)


@pytest.mark.parametrize("preset", ["denseflow", "mmaction2"])
def test_flow_jpegs_read_back_with_pil(tmp_path: Path, preset: str) -> None:
    layout = FLOW_JPEG_PRESETS[preset]
    flow = _smooth_flow()
    x_path, y_path = write_flow_jpegs(tmp_path / "video", flow, index=3, layout=layout)
    assert x_path.name == layout.x_template.format(3 + layout.index_base)
    assert y_path.name == layout.y_template.format(3 + layout.index_base)
    assert _leftovers(tmp_path / "video") == []

    step = 2 * layout.bound / 255
    for channel, path in enumerate((x_path, y_path)):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "L"
            levels = np.asarray(image)
        assert levels.shape == flow.shape[:2]
        back = dequantize_flow(levels, layout.bound)
        error = np.abs(back - flow[..., channel])
        # quantization (<= 1 step for truncating presets) plus a few grey levels of JPEG error
        assert error.mean() < 1.0 * step
        assert error.max() < 4.0 * step

    ours = read_flow_jpegs(tmp_path / "video", 3, layout)
    assert ours.shape == flow.shape and ours.dtype == np.float32


def test_flow_jpeg_levels_follow_the_formula(tmp_path: Path) -> None:
    # Uniform patches survive JPEG exactly, so the stored grey level is the quantized value.
    flow = np.zeros((16, 16, 2), np.float32)
    flow[..., 0] = -8.0
    flow[..., 1] = 100.0
    layout = FlowJpegLayout(index_base=0, rounding="round")
    x_path, y_path = write_flow_jpegs(tmp_path, flow, 0, layout)
    with Image.open(x_path) as x_image, Image.open(y_path) as y_image:
        assert (np.asarray(x_image) == 77).all()  # 76.5 rounds half up
        assert (np.asarray(y_image) == 255).all()  # clipped at the bound


def test_flow_jpegs_reject_bad_flow(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(2, 16, 16\)"):
        write_flow_jpegs(tmp_path, np.zeros((2, 16, 16)), 0)
