"""Tests of stages.motion_features on synthetic clips with known motion."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from models.motionsqueeze import SoftArgmaxWindow
from stages.motion_features import (
    LEADING_COLUMNS,
    clip_features,
    clip_key,
    clip_windows,
    features_table,
    flow_feature_columns,
    flow_stack_to_numpy,
    flow_statistics,
    frame_descriptor,
    motionsqueeze_feature_columns,
    motionsqueeze_maps,
    motionsqueeze_statistics,
    read_clip_maps,
    read_table,
    write_clip_maps,
    write_table,
)
from stages.settings import FeaturesConfig

# (dx, dy) in image coordinates (y down) -> HOF bin: 0 right, 2 up, 4 left, 6 down.
DIRECTIONS = [
    ((2.0, 0.0), 0),
    ((2.0, -2.0), 1),
    ((0.0, -2.0), 2),
    ((-2.0, -2.0), 3),
    ((-2.0, 0.0), 4),
    ((-2.0, 2.0), 5),
    ((0.0, 2.0), 6),
    ((2.0, 2.0), 7),
]


def _constant_flow(dx: float, dy: float, pairs: int = 3, height: int = 24, width: int = 32):
    """``(pairs, H, W, 2)`` float32 flow of a uniform translation."""
    flows = np.empty((pairs, height, width, 2), dtype=np.float32)
    flows[..., 0], flows[..., 1] = dx, dy
    return flows


def _square_flow(dx: float, dy: float, size: int = 64, lo: int = 16, hi: int = 48) -> np.ndarray:
    """``(1, size, size, 2)`` flow: a square ``[lo, hi)^2`` moves by (dx, dy), the rest is still."""
    flows = np.zeros((1, size, size, 2), dtype=np.float32)
    flows[0, lo:hi, lo:hi] = (dx, dy)
    return flows


def _hist(columns: dict[str, float], prefix: str, n_bins: int = 8) -> np.ndarray:
    return np.array([columns[f"{prefix}_{k:02d}"] for k in range(n_bins)])


def _texture(height: int, width: int, seed: int = 0, blur: float = 3.0) -> np.ndarray:
    """Smooth random RGB texture, ``(H, W, 3)`` uint8 using the full 0..255 range."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), blur)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).round().astype(np.uint8)


def _translating_frames(
    height: int, width: int, dx: int, dy: int, count: int, blur: float = 3.0
) -> np.ndarray:
    """``(count, H, W, 3)`` uint8 frames whose content moves by (dx, dy) px per frame."""
    margin = max(abs(dx), abs(dy)) * (count - 1)
    canvas = _texture(height + 2 * margin, width + 2 * margin, blur=blur)
    return np.stack(
        [
            canvas[
                margin - t * dy : margin - t * dy + height,
                margin - t * dx : margin - t * dx + width,
            ]
            for t in range(count)
        ]
    )


def _translating_features(
    dx: int, dy: int, count: int = 4, channels: int = 32, size: int = 40, seed: int = 0
) -> torch.Tensor:
    """``(count, C, size, size)`` random feature maps whose content moves by (dx, dy) cells."""
    margin = max(abs(dx), abs(dy)) * (count - 1)
    generator = torch.Generator().manual_seed(seed)
    canvas = torch.randn(channels, size + 2 * margin, size + 2 * margin, generator=generator)
    crops = [
        canvas[
            :, margin - t * dy : margin - t * dy + size, margin - t * dx : margin - t * dx + size
        ]
        for t in range(count)
    ]
    return torch.stack(crops)


# --------------------------------------------------------------------------------------------
# clip windows
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_frames", "kwargs", "expected"),
    [
        (0, {}, []),
        (1, {}, []),
        (2, {}, [(0, 2)]),
        (5, {}, [(0, 5)]),
        (5, {"drop_tail": True}, [(0, 5)]),
        (8, {}, [(0, 8)]),
        (9, {}, [(0, 8), (7, 9)]),
        (15, {}, [(0, 8), (7, 15)]),
        (16, {}, [(0, 8), (7, 15), (14, 16)]),
        (16, {"drop_tail": True}, [(0, 8), (7, 15)]),
        (20, {"stride": 8}, [(0, 8), (8, 16), (16, 20)]),
        (17, {"stride": 8}, [(0, 8), (8, 16)]),
        (12, {"clip_len": 8, "stride": 4}, [(0, 8), (4, 12)]),
        (40, {"clip_len": 16, "stride": 16}, [(0, 16), (16, 32), (32, 40)]),
        (25, {"clip_len": 4, "stride": 10}, [(0, 4), (10, 14), (20, 24)]),
    ],
)
def test_clip_windows(num_frames: int, kwargs: dict, expected: list[tuple[int, int]]) -> None:
    assert clip_windows(num_frames, **kwargs) == expected


@pytest.mark.parametrize("clip_len", [2, 3, 8, 16])
def test_default_clip_windows_partition_the_pairs(clip_len: int) -> None:
    for num_frames in range(2, 60):
        pairs = [
            t for start, end in clip_windows(num_frames, clip_len) for t in range(start, end - 1)
        ]
        assert pairs == list(range(num_frames - 1)), num_frames
        assert all(end - start <= clip_len for start, end in clip_windows(num_frames, clip_len))


@pytest.mark.parametrize(
    "kwargs", [{"num_frames": -1}, {"num_frames": 9, "clip_len": 1}, {"num_frames": 9, "stride": 0}]
)
def test_clip_windows_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        clip_windows(**kwargs)


def test_clip_key() -> None:
    key = clip_key("a/b.mp4", 2, 14, 16, [0.5, 0.54])
    assert list(key) == list(LEADING_COLUMNS)
    assert key == {
        "video": "a/b.mp4",
        "clip_index": 2,
        "start_frame": 14,
        "end_frame": 16,
        "start_time": 0.5,
        "end_time": 0.54,
    }
    with pytest.raises(ValueError, match="timestamps"):
        clip_key("v", 0, 0, 8, [0.0, 1.0])


# --------------------------------------------------------------------------------------------
# flow statistics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("motion", "expected_bin"), DIRECTIONS)
def test_translation_statistics(motion: tuple[float, float], expected_bin: int) -> None:
    dx, dy = motion
    columns = flow_statistics(_constant_flow(dx, dy))
    assert tuple(columns) == flow_feature_columns()

    hof = _hist(columns, "hof")
    # angles come from cv2.phase (error <= ~0.01 degree, i.e. 2e-4 of a 45-degree bin)
    assert hof[expected_bin] == pytest.approx(1.0, abs=1e-3)
    assert hof.sum() + columns["hof_static"] == pytest.approx(1.0)
    assert columns["hof_static"] == 0.0

    speed = math.hypot(dx, dy)
    for name in ("mean", "p10", "p50", "p90", "p99", "max"):
        assert columns[f"flow_mag_{name}"] == pytest.approx(speed, rel=1e-6), name
    assert columns["flow_mag_std"] == pytest.approx(0.0, abs=1e-6)
    assert columns["moving_fraction"] == 1.0
    assert (columns["flow_mean_x"], columns["flow_mean_y"]) == pytest.approx((dx, dy))
    assert columns["flow_coherence"] == pytest.approx(1.0)
    assert columns["flow_div_mean"] == 0.0
    assert columns["flow_curl_mean"] == 0.0
    # uniform motion has no motion boundary
    for name in ("mbhx", "mbhy"):
        assert np.all(_hist(columns, name) == 0.0)
        assert columns[f"{name}_mag_mean"] == 0.0


def test_zero_motion_is_static() -> None:
    columns = flow_statistics(_constant_flow(0.0, 0.0))
    assert columns["hof_static"] == 1.0
    assert np.all(_hist(columns, "hof") == 0.0)
    assert columns["moving_fraction"] == 0.0
    assert columns["flow_mag_max"] == 0.0
    assert columns["flow_coherence"] == 0.0


def test_hof_interpolates_between_bins_and_weights_by_magnitude() -> None:
    # 22.5 degrees above the x axis: half in "right", half in "up-right"
    angle = math.radians(22.5)
    hof = _hist(flow_statistics(_constant_flow(3 * math.cos(angle), -3 * math.sin(angle))), "hof")
    assert hof[:2] == pytest.approx([0.5, 0.5], abs=1e-4)

    # left half still, right half moving 3 px right: static pixels weigh 1, moving ones 3
    flows = _constant_flow(0.0, 0.0, pairs=2, width=32)
    flows[:, :, 16:, 0] = 3.0
    columns = flow_statistics(flows)
    assert columns["moving_fraction"] == 0.5
    assert columns["hof_00"] == pytest.approx(0.75)
    assert columns["hof_static"] == pytest.approx(0.25)
    assert columns["flow_mag_p10"] == 0.0
    assert columns["flow_mag_p90"] == 3.0
    assert columns["flow_mag_mean"] == pytest.approx(1.5)
    assert columns["flow_mag_std"] == pytest.approx(1.5)
    assert columns["flow_coherence"] == pytest.approx(1.0)


def test_static_threshold_and_bin_count_are_configurable() -> None:
    flows = _constant_flow(0.3, 0.0)
    assert flow_statistics(flows)["hof_static"] == 1.0  # 0.3 px is below the default 0.4
    columns = flow_statistics(flows, n_bins=4, static_threshold=0.1)
    assert tuple(columns) == flow_feature_columns(4)
    assert columns["hof_00"] == pytest.approx(1.0) and columns["hof_static"] == 0.0
    assert columns["hof_03"] == 0.0 and "hof_04" not in columns


def test_divergence_and_curl_of_linear_fields() -> None:
    ys, xs = np.mgrid[0:32, 0:40].astype(np.float32)
    xs -= 20.0
    ys -= 16.0
    expansion = np.stack([0.1 * xs, 0.1 * ys], axis=-1)[None]
    columns = flow_statistics(expansion)
    assert columns["flow_div_mean"] == pytest.approx(0.2, rel=1e-5)
    assert columns["flow_curl_mean"] == pytest.approx(0.0, abs=1e-6)
    # u = -k y, v = k x: the right side moves down, i.e. clockwise on screen
    rotation = np.stack([-0.1 * ys, 0.1 * xs], axis=-1)[None]
    columns = flow_statistics(rotation)
    assert columns["flow_curl_mean"] == pytest.approx(0.2, rel=1e-5)
    assert columns["flow_div_mean"] == pytest.approx(0.0, abs=1e-6)


def test_mbh_of_a_moving_square_lies_on_its_edges() -> None:
    flows = _square_flow(3.0, 0.0)
    columns = flow_statistics(flows)
    du_dy, du_dx = np.gradient(flows[0, :, :, 0])  # centred differences, as documented
    assert columns["mbhx_mag_mean"] == pytest.approx(np.hypot(du_dx, du_dy).mean(), rel=1e-6)
    assert columns["mbhy_mag_mean"] == 0.0  # v is zero everywhere

    mbhx, mbhy = _hist(columns, "mbhx"), _hist(columns, "mbhy")
    assert np.all(mbhy == 0.0)
    # u grows into the square at its left (bin 0 = right) and top (bin 6 = down) edges and
    # falls off at the right (bin 4) and bottom (bin 2) edges
    assert mbhx[[0, 2, 4, 6]].sum() > 0.9
    assert mbhx[0] == pytest.approx(mbhx[4]) and mbhx[2] == pytest.approx(mbhx[6])
    assert mbhx.sum() == pytest.approx(1.0, abs=0.1)


def test_mbh_ignores_camera_motion_and_separates_components() -> None:
    square = _square_flow(0.0, 3.0)
    columns = flow_statistics(square)
    assert np.all(_hist(columns, "mbhx") == 0.0)
    assert _hist(columns, "mbhy")[[0, 2, 4, 6]].sum() > 0.9
    panned = square.copy()
    panned[..., 0] -= 2.0  # the whole scene also pans left
    moved = flow_statistics(panned)
    for name in ("mbhx", "mbhy"):
        np.testing.assert_allclose(_hist(moved, name), _hist(columns, name), atol=1e-6)
    assert moved["hof_04"] > 0.5 and moved["flow_mean_x"] == pytest.approx(-2.0)


def test_flow_statistics_on_estimated_flow_follow_the_screen_convention() -> None:
    """DIS flow of a texture moving right / up lands in bin 0 / bin 2."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    for (dx, dy), expected_bin in (((2, 0), 0), ((0, -2), 2)):
        frames = _translating_frames(96, 128, dx, dy, count=2, blur=2.0)
        gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
        flow = dis.calc(gray[0], gray[1], None)
        columns = flow_statistics(flow)
        assert int(np.argmax(_hist(columns, "hof"))) == expected_bin
        assert columns[f"hof_{expected_bin:02d}"] > 0.9
        assert columns["flow_mag_p50"] == pytest.approx(2.0, abs=0.1)


def test_fields_of_one_pixel_row_column_or_both_have_statistics() -> None:
    """A side of one pixel has no neighbour, so no derivative along it (0): a 1x1 video's
    flow gets its HOF and a zero MBH; a one-row field with u = x has divergence 1."""
    tiny = flow_statistics(np.array([[[[3.0, 0.0]]]] * 2, np.float32))  # (2, 1, 1, 2), right
    assert all(math.isfinite(value) for value in tiny.values())
    assert tiny["hof_00"] > 0.9 and tiny["mbhx_mag_mean"] == tiny["flow_div_mean"] == 0.0
    row = np.zeros((2, 1, 6, 2), np.float32)
    row[..., 0] = np.arange(6)  # u grows to the right
    stats = flow_statistics(row)
    assert stats["flow_div_mean"] == pytest.approx(1.0) and stats["mbhx_00"] > 0.99
    column = flow_statistics(np.ascontiguousarray(row.transpose(0, 2, 1, 3)))  # (2, 6, 1, 2)
    assert column["flow_div_mean"] == 0.0  # u varies down the column: no x derivative


def test_flow_stack_to_numpy_and_input_checks() -> None:
    torch_flow = torch.zeros(2, 2, 5, 6)
    torch_flow[:, 0] = 1.5
    torch_flow[:, 1] = -0.5
    stack = flow_stack_to_numpy(torch_flow)
    assert stack.shape == (2, 5, 6, 2) and stack.dtype == np.float32
    assert np.all(stack[..., 0] == 1.5) and np.all(stack[..., 1] == -0.5)
    with pytest.raises(ValueError, match="N, 2, H, W"):
        flow_stack_to_numpy(torch.zeros(2, 3, 5, 6))
    with pytest.raises(ValueError, match="H, W, 2"):
        flow_statistics(np.zeros((2, 5, 6, 3), np.float32))
    with pytest.raises(ValueError, match="empty"):
        flow_statistics(np.zeros((2, 0, 6, 2), np.float32))
    with pytest.raises(ValueError, match="floating"):
        flow_statistics(np.zeros((2, 5, 6, 2), np.int16))
    bad = np.zeros((2, 5, 6, 2), np.float32)
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="field 1"):
        flow_statistics(bad)


# --------------------------------------------------------------------------------------------
# MotionSqueeze features
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("motion", [(2, -1), (-3, 2), (0, 0), (7, 0)])
def test_motionsqueeze_recovers_a_translation(motion: tuple[int, int]) -> None:
    dx, dy = motion
    features = _translating_features(dx, dy)
    maps = motionsqueeze_maps(features)
    assert maps.displacement.shape == (3, 2, 40, 40)
    assert maps.confidence.shape == (3, 1, 40, 40)
    assert maps.displacement.dtype == torch.float32 and maps.confidence.dtype == torch.float32

    m = max(abs(dx), abs(dy))
    inner = (slice(None), slice(None), slice(m, 40 - m), slice(m, 40 - m))
    cells = maps.displacement[inner] * 7  # window radius (15 - 1) / 2
    torch.testing.assert_close(cells[:, 0], torch.full_like(cells[:, 0], dx), atol=1e-4, rtol=0)
    torch.testing.assert_close(cells[:, 1], torch.full_like(cells[:, 1], dy), atol=1e-4, rtol=0)
    torch.testing.assert_close(maps.confidence[inner], torch.ones_like(maps.confidence[inner]))

    columns = motionsqueeze_statistics(maps.displacement[inner], maps.confidence[inner])
    assert tuple(columns) == motionsqueeze_feature_columns()
    assert columns["ms_disp_mean_x_px"] == pytest.approx(dx, abs=1e-4)
    assert columns["ms_disp_mean_y_px"] == pytest.approx(dy, abs=1e-4)
    assert columns["ms_disp_mean_x"] == pytest.approx(dx / 7, abs=1e-5)
    assert columns["ms_disp_mag_mean_px"] == pytest.approx(math.hypot(dx, dy), abs=1e-4)
    assert columns["ms_conf_mean"] == pytest.approx(1.0, abs=1e-5)
    assert columns["ms_conf_p10"] == pytest.approx(1.0, abs=1e-5)
    direction = _hist(columns, "ms_dir")
    assert direction.sum() + columns["ms_dir_static"] == pytest.approx(1.0)
    if motion == (0, 0):
        assert columns["ms_dir_static"] == pytest.approx(1.0)
    else:
        expected = np.zeros(8)
        angle = math.degrees(math.atan2(-dy, dx)) % 360 / 45  # fractional bin
        lower = math.floor(angle)
        expected[lower % 8] += 1 - (angle - lower)
        expected[(lower + 1) % 8] += angle - lower
        np.testing.assert_allclose(direction, expected, atol=1e-3)


def test_motionsqueeze_window_parameters_set_the_units() -> None:
    features = _translating_features(4, -2, count=3)
    maps = motionsqueeze_maps(features, SoftArgmaxWindow(patch_size=7, dilation=2))
    inner = maps.displacement[:, :, 4:-4, 4:-4] * 3 * 2  # radius 3, dilation 2
    torch.testing.assert_close(inner[:, 0], torch.full_like(inner[:, 0], 4.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(inner[:, 1], torch.full_like(inner[:, 1], -2.0), atol=1e-4, rtol=0)
    columns = motionsqueeze_statistics(
        maps.displacement[:, :, 4:-4, 4:-4],
        maps.confidence[:, :, 4:-4, 4:-4],
        patch_size=7,
        dilation=2,
    )
    assert columns["ms_disp_mean_x_px"] == pytest.approx(4.0, abs=1e-4)


def test_motionsqueeze_batching_does_not_change_the_maps() -> None:
    features = _translating_features(1, 1, count=6, channels=8, size=16)
    one = motionsqueeze_maps(features, pairs_per_batch=1)
    many = motionsqueeze_maps(features, pairs_per_batch=4)
    torch.testing.assert_close(one.displacement, many.displacement, rtol=0, atol=0)
    torch.testing.assert_close(one.confidence, many.confidence, rtol=0, atol=0)


def test_motionsqueeze_input_checks() -> None:
    with pytest.raises(ValueError, match="T >= 2"):
        motionsqueeze_maps(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="floating"):
        motionsqueeze_maps(torch.zeros(2, 4, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="confidence"):
        motionsqueeze_statistics(torch.zeros(2, 2, 4, 4), torch.zeros(2, 1, 4, 5))
    # all-zero confidence (e.g. blank frames): an empty direction histogram, not NaN
    columns = motionsqueeze_statistics(torch.zeros(2, 2, 4, 4), torch.zeros(2, 1, 4, 4))
    assert not any(math.isnan(value) for value in columns.values())
    assert columns["ms_dir_static"] == 0.0


# --------------------------------------------------------------------------------------------
# classical-backend descriptor
# --------------------------------------------------------------------------------------------


def test_frame_descriptor_layout() -> None:
    frames = _translating_frames(37, 45, 1, 0, count=3)
    descriptor = frame_descriptor(frames)
    assert descriptor.shape == (3, 45, 5, 6)  # 5 channels x 3 x 3, ceil(37/8) x ceil(45/8)
    assert descriptor.dtype == torch.float32 and descriptor.is_contiguous()
    base = frame_descriptor(frames, context=1)
    assert base.shape == (3, 5, 5, 6)
    # each base channel is standardised over its frame
    torch.testing.assert_close(base.mean(dim=(2, 3)), torch.zeros(3, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        base.std(dim=(2, 3), unbiased=False), torch.ones(3, 5), atol=1e-4, rtol=0
    )
    # the centre of the 3 x 3 neighbourhood is the base channel
    torch.testing.assert_close(descriptor[:, 4::9], base)
    assert frame_descriptor(frames, stride=4, context=5).shape == (3, 125, 10, 12)
    assert frame_descriptor(frames[:, :3, :3]).shape == (3, 45, 1, 1)


def test_frame_descriptor_of_a_blank_frame_is_zero() -> None:
    frames = np.full((2, 16, 16, 3), 128, dtype=np.uint8)
    descriptor = frame_descriptor(frames)
    assert torch.all(descriptor == 0)
    maps = motionsqueeze_maps(descriptor)
    assert torch.all(maps.confidence == 0) and torch.isfinite(maps.displacement).all()


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, 16, 16, 3), dtype=np.float32),
        np.zeros((2, 16, 16), dtype=np.uint8),
        np.zeros((2, 16, 16, 4), dtype=np.uint8),
    ],
)
def test_frame_descriptor_rejects_bad_frames(frames: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        frame_descriptor(frames)


def test_frame_descriptor_rejects_bad_parameters() -> None:
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="context"):
        frame_descriptor(frames, context=2)
    with pytest.raises(ValueError, match="stride"):
        frame_descriptor(frames, stride=0)


def test_frame_descriptor_motion_matches_the_frame_motion() -> None:
    """16 px right and 8 px up per frame is (2, -1) cells of the stride-8 grid."""
    frames = _translating_frames(128, 160, 16, -8, count=3, blur=4.0)
    maps = motionsqueeze_maps(frame_descriptor(frames))
    cells = maps.displacement[:, :, 2:-2, 3:-3] * 7
    torch.testing.assert_close(cells[:, 0], torch.full_like(cells[:, 0], 2.0), atol=0.05, rtol=0)
    torch.testing.assert_close(cells[:, 1], torch.full_like(cells[:, 1], -1.0), atol=0.05, rtol=0)


def test_clip_features_bundles_both_families() -> None:
    config = FeaturesConfig(hof_bins=4)
    frames = _translating_frames(64, 64, 8, 0, count=3, blur=4.0)
    columns, maps = clip_features(
        config, flows=_constant_flow(8.0, 0.0, pairs=2), features=frame_descriptor(frames)
    )
    assert tuple(columns) == flow_feature_columns(4) + motionsqueeze_feature_columns(4)
    assert maps is not None and maps.displacement.shape == (2, 2, 8, 8)
    assert columns["hof_00"] == pytest.approx(1.0)
    only_flow, no_maps = clip_features(config, flows=_constant_flow(1.0, 0.0))
    assert no_maps is None and tuple(only_flow) == flow_feature_columns(4)
    with pytest.raises(ValueError, match="patch_size"):
        FeaturesConfig(patch_size=4)
    with pytest.raises(ValueError, match="clip_len"):
        FeaturesConfig(clip_len=1)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def test_clip_maps_round_trip(tmp_path: Path) -> None:
    maps = motionsqueeze_maps(_translating_features(2, -1, count=3, channels=8, size=12))
    path = tmp_path / "clip_00000.npz"
    write_clip_maps(
        path,
        displacement=maps.displacement,
        confidence=maps.confidence,
        frame_indices=np.arange(3),
        patch_size=15,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["clip_00000.npz"]  # no temporary left
    with np.load(path) as archive:
        assert archive["displacement"].dtype == np.float16
        assert archive["confidence"].dtype == np.float16
    loaded = read_clip_maps(path)
    assert loaded.displacement.dtype == np.float32 and loaded.displacement.shape == (2, 2, 12, 12)
    np.testing.assert_allclose(loaded.displacement, maps.displacement.numpy(), atol=1e-3)
    np.testing.assert_allclose(loaded.confidence, maps.confidence.numpy(), atol=1e-3)
    np.testing.assert_array_equal(loaded.extra["frame_indices"], np.arange(3))
    assert int(loaded.extra["patch_size"]) == 15

    # float32 is exact, and overwriting replaces the file
    write_clip_maps(
        path, displacement=maps.displacement.numpy(), confidence=maps.confidence, dtype=np.float32
    )
    exact = read_clip_maps(path)
    np.testing.assert_array_equal(exact.displacement, maps.displacement.numpy())
    assert exact.extra == {}


def test_write_clip_maps_rejects_bad_input(tmp_path: Path) -> None:
    disp, conf = np.zeros((2, 2, 4, 4), np.float32), np.zeros((2, 1, 4, 4), np.float32)
    path = tmp_path / "maps.npz"
    with pytest.raises(ValueError, match="confidence"):
        write_clip_maps(path, displacement=disp, confidence=conf[:1])
    with pytest.raises(ValueError, match="float16"):
        write_clip_maps(path, displacement=disp + 1e6, confidence=conf)
    with pytest.raises(ValueError, match="floating"):
        write_clip_maps(path, displacement=disp, confidence=conf, dtype=np.int8)
    with pytest.raises(ValueError, match="object"):
        write_clip_maps(path, displacement=disp, confidence=conf, names=np.array([{}], object))
    assert list(tmp_path.iterdir()) == []


def _rows() -> list[dict]:
    rows = []
    for index, (start, end) in enumerate(clip_windows(10, 8)):
        flows = _constant_flow(1.0 + index, 0.5, pairs=end - start - 1)
        row = clip_key("0001", index, start, end, np.arange(start, end) / 25.0)
        row.update(flow_statistics(flows))
        if index == 0:  # the second clip has no MotionSqueeze columns
            maps = motionsqueeze_maps(_translating_features(1, 0, count=end - start, size=10))
            row.update(motionsqueeze_statistics(*maps))
        rows.append(row)
    return rows


def test_features_table_order_and_types() -> None:
    table = features_table(_rows())
    expected = [*LEADING_COLUMNS, *flow_feature_columns(), *motionsqueeze_feature_columns()]
    assert list(table.columns) == expected
    assert len(table) == 2
    assert table["video"].tolist() == ["0001", "0001"]
    assert table["clip_index"].dtype == np.int64 and table["end_frame"].tolist() == [8, 10]
    assert table["end_time"].tolist() == pytest.approx([7 / 25, 9 / 25])
    assert table["ms_conf_mean"].isna().tolist() == [False, True]
    assert table["flow_mean_x"].tolist() == pytest.approx([1.0, 2.0])

    chosen = features_table(_rows(), columns=["hof_00", "flow_mag_mean"])
    assert list(chosen.columns) == [*LEADING_COLUMNS, "hof_00", "flow_mag_mean"]
    empty = features_table([])
    assert list(empty.columns) == list(LEADING_COLUMNS) and len(empty) == 0
    with pytest.raises(ValueError, match="leading"):
        features_table([{"video": "v", "hof_00": 1.0}])


@pytest.mark.parametrize("name", ["features.parquet", "features.csv"])
def test_table_round_trips(tmp_path: Path, name: str) -> None:
    table = features_table(_rows())
    path = tmp_path / name
    write_table(table, path)
    write_table(table, path)  # overwriting is fine
    assert [p.name for p in tmp_path.iterdir()] == [name]
    pd.testing.assert_frame_equal(read_table(path), table, check_dtype=False, rtol=0, atol=0)
    # video names pandas would read as missing stay names; missing numbers stay NaN
    words = table.assign(video=["NA", "null"])
    write_table(words, path)
    back = read_table(path)
    assert back["video"].tolist() == ["NA", "null"]
    assert back["ms_conf_mean"].isna().tolist() == [False, True]
    write_table(table, path)
    # plain pandas readers see the same numbers
    plain = (
        pd.read_csv(path, dtype={"video": str}) if name.endswith(".csv") else pd.read_parquet(path)
    )
    assert list(plain.columns) == list(table.columns)
    np.testing.assert_allclose(plain["flow_mag_p90"], table["flow_mag_p90"], rtol=1e-12)
    assert plain["video"].tolist() == ["0001", "0001"]
    if name.endswith(".parquet"):
        assert plain["clip_index"].dtype == np.int64
