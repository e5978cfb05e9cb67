"""Backward warping: exactness on integer and half-pixel flows, validity mask, borders, dtypes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages.warp import backward_warp, inside_frame, pixel_grid, sample_positions


def _random_image(
    batch: int = 2, channels: int = 3, height: int = 9, width: int = 11, seed: int = 0
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, height, width, generator=generator, dtype=torch.float64)


def _constant_flow(
    batch: int, height: int, width: int, dx: float, dy: float, dtype=torch.float32
) -> torch.Tensor:
    flow = torch.empty(batch, 2, height, width, dtype=dtype)
    flow[:, 0] = dx
    flow[:, 1] = dy
    return flow


def _grid_sample_reference(image: torch.Tensor, flow: torch.Tensor, mode: str, padding: str):
    """The same warp through grid_sample(align_corners=True) on normalised coordinates."""
    _, _, height, width = image.shape
    positions = pixel_grid(height, width, dtype=flow.dtype) + flow
    grid = torch.stack(
        [2 * positions[:, 0] / (width - 1) - 1, 2 * positions[:, 1] / (height - 1) - 1], dim=-1
    )
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding, align_corners=True)


@pytest.fixture(scope="module")
def real_frame(videos_dir: Path) -> torch.Tensor:
    """First frame of a real clip (Intel sample-videos, CC BY 4.0): (1, 3, 480, 640) in [0, 1]."""
    capture = cv2.VideoCapture(str(videos_dir / "asl_again.mkv"))
    ok, bgr = capture.read()
    capture.release()
    if not ok:
        pytest.skip("OpenCV cannot decode the sample clip")
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].to(torch.float32) / 255.0


def test_pixel_grid_layout() -> None:
    grid = pixel_grid(2, 3, dtype=torch.float32)
    assert grid.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(grid[0, 0].numpy(), [[0, 1, 2], [0, 1, 2]])  # x = column
    np.testing.assert_array_equal(grid[0, 1].numpy(), [[0, 0, 0], [1, 1, 1]])  # y = row


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("channels", [1, 3, 5])
def test_zero_flow_is_exact_identity(dtype, mode, padding, channels) -> None:
    image = (_random_image(channels=channels) * 255 - 100).to(dtype)
    flow = torch.zeros(2, 2, 9, 11, dtype=torch.float32)
    warped, valid = backward_warp(image, flow, mode=mode, padding=padding)
    assert warped.dtype == dtype and warped.shape == image.shape
    assert torch.equal(warped, image)
    assert valid.shape == (2, 1, 9, 11) and valid.dtype == torch.bool and bool(valid.all())


def test_zero_flow_identity_on_a_real_frame(real_frame: torch.Tensor) -> None:
    flow = torch.zeros(1, 2, *real_frame.shape[2:])
    warped, valid = backward_warp(real_frame, flow)
    assert torch.equal(warped, real_frame) and bool(valid.all())


@pytest.mark.parametrize(("dx", "dy"), [(3, -2), (-4, 1), (0, 5), (7, 0)])
def test_integer_shift_moves_pixels_exactly(dx: int, dy: int) -> None:
    image = _random_image(height=12, width=15).to(torch.float32)
    warped, valid = backward_warp(image, _constant_flow(2, 12, 15, dx, dy))
    rows = slice(max(0, -dy), 12 - max(0, dy))  # rows y with 0 <= y + dy <= 11
    cols = slice(max(0, -dx), 15 - max(0, dx))
    source_rows = slice(rows.start + dy, rows.stop + dy)
    source_cols = slice(cols.start + dx, cols.stop + dx)
    assert torch.equal(warped[..., rows, cols], image[..., source_rows, source_cols])
    expected_valid = torch.zeros(2, 1, 12, 15, dtype=torch.bool)
    expected_valid[..., rows, cols] = True
    assert torch.equal(valid, expected_valid)
    # zeros padding: a whole pixel or more outside reads 0
    assert bool((warped[~expected_valid.expand_as(warped)] == 0).all())


def test_integer_shift_of_a_real_frame(real_frame: torch.Tensor) -> None:
    # frame_t1 is frame_t moved by (+5, +3) px: frame_t1(q) = frame_t(q - d), so warping
    # frame_t1 with flow d gives back frame_t wherever q + d stays inside.
    frame_t = real_frame[..., 10:410, 10:560]
    frame_t1 = real_frame[..., 7:407, 5:555]
    flow = _constant_flow(1, 400, 550, 5, 3)
    warped, valid = backward_warp(frame_t1, flow)
    assert torch.equal(warped[..., :-3, :-5], frame_t[..., :-3, :-5])
    assert int(valid.sum()) == 397 * 545


def test_half_pixel_flow_averages_neighbours() -> None:
    image = _random_image(height=6, width=7)
    warped, valid = backward_warp(image, _constant_flow(2, 6, 7, 0.5, 0.0, torch.float64))
    horizontal = (image[..., :-1] + image[..., 1:]) / 2
    torch.testing.assert_close(warped[..., :-1], horizontal, rtol=0, atol=1e-15)
    assert bool(valid[..., :-1].all()) and not bool(valid[..., -1].any())
    # the last column samples at x = W - 0.5: half of its neighbour is padding
    torch.testing.assert_close(warped[..., -1], image[..., -1] / 2, rtol=0, atol=1e-15)

    warped, _ = backward_warp(image, _constant_flow(2, 6, 7, 0.5, 0.5, torch.float64))
    four = (
        image[..., :-1, :-1] + image[..., :-1, 1:] + image[..., 1:, :-1] + image[..., 1:, 1:]
    ) / 4
    torch.testing.assert_close(warped[..., :-1, :-1], four, rtol=0, atol=1e-15)


def test_border_padding_clamps_the_sample_point() -> None:
    image = _random_image(height=5, width=6)
    warped, valid = backward_warp(
        image, _constant_flow(2, 5, 6, 2.25, -10.0, torch.float64), padding="border"
    )
    assert not bool(valid.any())
    # y clamps to row 0, x = col + 2.25 clamps to <= 5
    expected = torch.empty_like(image)
    for col in range(6):
        x = min(col + 2.25, 5.0)
        left = int(np.floor(x))
        right = min(left + 1, 5)
        weight = x - left
        value = (1 - weight) * image[..., 0, left] + weight * image[..., 0, right]  # (B, C)
        expected[..., col] = value[..., None]
    torch.testing.assert_close(warped, expected, rtol=0, atol=1e-14)


def test_valid_mask_is_exactly_the_frame_rectangle() -> None:
    height, width = 5, 7
    # targets: exactly on the four borders (valid) and just beyond them (invalid)
    flow = torch.zeros(1, 2, height, width, dtype=torch.float64)
    flow[0, 0, 0, 0] = -1e-9  # x = -1e-9
    flow[0, 0, 0, 1] = -1.0  # x = 0 exactly
    flow[0, 0, 1, 0] = width - 1.0  # x = W - 1 exactly
    flow[0, 0, 1, 1] = width - 1.0 + 1e-9
    flow[0, 1, 2, 0] = -2.0  # y = 0 exactly
    flow[0, 1, 2, 1] = -2.0 - 1e-9
    flow[0, 1, 3, 3] = 1.0  # y = 4 = H - 1 exactly
    flow[0, 1, 4, 4] = 1e-9
    flow[0, :, 4, 5] = float("nan")
    _, valid = backward_warp(torch.zeros(1, 1, height, width), flow)
    expected = torch.ones(1, 1, height, width, dtype=torch.bool)
    for y, x in [(0, 0), (1, 1), (2, 1), (4, 4), (4, 5)]:
        expected[0, 0, y, x] = False
    assert torch.equal(valid, expected)


def test_valid_mask_matches_numpy_on_random_flow() -> None:
    generator = torch.Generator().manual_seed(3)
    flow = torch.randn(3, 2, 20, 30, generator=generator) * 6
    _, valid = backward_warp(torch.zeros(3, 2, 20, 30), flow)
    f = flow.numpy()
    xs = np.arange(30)[None, None, :] + f[:, 0]
    ys = np.arange(20)[None, :, None] + f[:, 1]
    expected = (xs >= 0) & (xs <= 29) & (ys >= 0) & (ys <= 19)
    np.testing.assert_array_equal(valid[:, 0].numpy(), expected)
    assert 0.2 < expected.mean() < 0.9  # both kinds present


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_matches_grid_sample_align_corners(mode: str, padding: str) -> None:
    image = _random_image(batch=2, channels=4, height=13, width=17)
    flow = torch.randn(
        2, 2, 13, 17, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    flow = flow * 5 + 0.3  # avoid nearest-mode ties at exact .5 positions
    warped, _ = backward_warp(image, flow, mode=mode, padding=padding)
    reference = _grid_sample_reference(image, flow, mode, padding)
    torch.testing.assert_close(warped, reference, rtol=0, atol=1e-12)


def test_float32_and_float64_agree() -> None:
    image = _random_image(batch=2, channels=3, height=24, width=32)
    flow = torch.randn(
        2, 2, 24, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    flow = flow * 4
    warped64, valid64 = backward_warp(image, flow)
    warped32, valid32 = backward_warp(image.float(), flow.float())
    assert warped32.dtype == torch.float32 and warped64.dtype == torch.float64
    torch.testing.assert_close(warped32.double(), warped64, rtol=0, atol=1e-5)
    # masks agree except where a target lies within float32 rounding of a border
    assert (valid32 != valid64).float().mean().item() < 1e-3


def test_half_precision_image_is_interpolated_in_float32() -> None:
    image = _random_image(height=16, width=16)
    flow = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(4)) * 3
    warped16, _ = backward_warp(image.half(), flow.half())
    warped32, _ = backward_warp(image.float(), flow.half().float())
    assert warped16.dtype == torch.float16
    torch.testing.assert_close(warped16.float(), warped32, rtol=0, atol=1e-3)


def test_uint8_image_becomes_float32_without_rescaling() -> None:
    image = torch.arange(2 * 3 * 4 * 5, dtype=torch.int64).reshape(2, 3, 4, 5).to(torch.uint8)
    warped, _ = backward_warp(image, _constant_flow(2, 4, 5, 0.5, 0.0))
    assert warped.dtype == torch.float32
    expected = (image[..., :-1].float() + image[..., 1:].float()) / 2
    torch.testing.assert_close(warped[..., :-1], expected, rtol=0, atol=1e-5)


def test_gradients_reach_image_and_flow() -> None:
    image = _random_image(batch=1, channels=2, height=5, width=6).requires_grad_(True)
    flow = torch.rand(1, 2, 5, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    flow = (flow * 2.6 - 1.3 + 0.17).requires_grad_(True)  # away from integer positions
    assert torch.autograd.gradcheck(lambda i, f: backward_warp(i, f)[0], (image, flow))


def test_sample_positions_and_inside_frame() -> None:
    flow = _constant_flow(1, 3, 4, 1.5, -1.0)
    positions = sample_positions(flow)
    assert positions.dtype == torch.float32
    np.testing.assert_array_equal(positions[0, 0, 0].numpy(), [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_array_equal(positions[0, 1, :, 0].numpy(), [-1.0, 0.0, 1.0])
    inside = inside_frame(positions, 3, 4)
    expected = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(inside[0, 0].numpy(), expected)


@pytest.mark.parametrize(
    ("image_shape", "flow_shape", "kwargs"),
    [
        ((1, 3, 4, 5), (1, 3, 4, 5), {}),  # flow with 3 channels
        ((1, 3, 4, 5), (2, 2, 4, 5), {}),  # batch mismatch
        ((1, 3, 4, 5), (1, 2, 4, 6), {}),  # size mismatch
        ((3, 4, 5), (1, 2, 4, 5), {}),  # image without batch axis
        ((1, 3, 4, 5), (1, 2, 4, 5), {"mode": "bicubic"}),
        ((1, 3, 4, 5), (1, 2, 4, 5), {"padding": "reflection"}),
    ],
)
def test_bad_inputs_raise(image_shape, flow_shape, kwargs) -> None:
    with pytest.raises(ValueError):
        backward_warp(torch.zeros(image_shape), torch.zeros(flow_shape), **kwargs)


@pytest.mark.parametrize(("padding", "fill"), [("zeros", 0.0), ("border", 7.0)])
def test_non_finite_flow_is_invalid_and_reads_the_padding(padding: str, fill: float) -> None:
    image = torch.full((1, 2, 4, 5), 7.0)
    flow = torch.zeros(1, 2, 4, 5)
    bad = [(1, 1), (2, 2), (3, 3)]
    flow[0, 0, 1, 1] = float("nan")
    flow[0, 1, 2, 2] = float("inf")
    flow[0, 0, 3, 3] = float("-inf")
    warped, valid = backward_warp(image, flow, padding=padding)
    assert int(valid.sum()) == 20 - len(bad)
    assert bool(torch.isfinite(warped).all())
    for y, x in bad:
        assert not bool(valid[0, 0, y, x])
        assert warped[0, :, y, x].tolist() == [fill, fill]


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_frames_larger_than_a_band_warp_as_a_whole(padding: str) -> None:
    """Frames of several row bands (here ~3.4) give the grid_sample result across band edges,
    and a channels-last batch (frames from numpy) the same as a contiguous one."""
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(2, 3, 300, 768, generator=generator, dtype=torch.float64)
    flow = 6 * torch.randn(2, 2, 300, 768, generator=generator, dtype=torch.float64)
    warped, valid = backward_warp(image, flow, padding=padding)
    reference = _grid_sample_reference(image, flow, "bilinear", padding)
    torch.testing.assert_close(warped, reference, atol=1e-9, rtol=0)
    np.testing.assert_array_equal(
        valid.numpy(), inside_frame(sample_positions(flow), 300, 768).numpy()
    )
    channels_last = image.contiguous(memory_format=torch.channels_last)
    assert torch.equal(backward_warp(channels_last, flow, padding=padding)[0], warped)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_far_away_finite_points_read_the_padding(padding: str) -> None:
    """Finite sample points far outside the frame (1e20 px) read 0 with zeros padding and the
    nearest border pixel with border padding; nothing overflows to inf or NaN."""
    image = torch.arange(1.0, 21.0).view(1, 1, 4, 5)
    flow = torch.zeros(1, 2, 4, 5)
    flow[0, 0, 0, 0], flow[0, 1, 0, 0] = 1e20, 1e20  # far right and below: corner (3, 4)
    flow[0, 0, 1, 1], flow[0, 1, 1, 1] = -1e20, 0.25  # far left on row 1.25
    flow[0, 1, 2, 3] = -3e7  # far above column 3
    warped, valid = backward_warp(image, flow, padding=padding)
    assert bool(torch.isfinite(warped).all())
    assert [bool(valid[0, 0, y, x]) for y, x in [(0, 0), (1, 1), (2, 3)]] == [False] * 3
    got = [float(warped[0, 0, y, x]) for y, x in [(0, 0), (1, 1), (2, 3)]]
    if padding == "zeros":
        assert got == [0.0, 0.0, 0.0]
    else:
        assert got == [20.0, 0.75 * 6.0 + 0.25 * 11.0, 4.0]


@pytest.mark.parametrize(("padding", "expected"), [("zeros", [2.5, 5.0]), ("border", [5.0, 5.0])])
def test_one_pixel_image(padding: str, expected: list[float]) -> None:
    """A 1x1 image: half a pixel to the right reads half the pixel (zeros) or all of it."""
    image = torch.full((1, 1, 1, 1), 5.0)
    warped = [
        float(backward_warp(image, _constant_flow(1, 1, 1, dx, 0.0), padding=padding)[0])
        for dx in (0.5, 0.0)
    ]
    assert warped == expected
