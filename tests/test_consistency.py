"""Forward-backward occlusion, motion boundaries, E_warp and the other pair metrics, plots."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from stages.base import FrameChunk
from stages.consistency import (
    METRIC_KEYS,
    batch_metrics,
    flow_gradients,
    flow_magnitude_stats,
    flow_masks,
    forward_backward_occlusion,
    masked_channel_mean,
    motion_boundaries,
    pair_metrics,
    photometric_error,
    plot_error_over_time,
    summarize_video,
    warping_error,
)
from stages.settings import WarpConfig
from stages.warp import backward_warp
from stages.warp_stage import WarpStage, pair_products

# --------------------------------------------------------------------------------------------
# Synthetic scenes
# --------------------------------------------------------------------------------------------


def _constant_flow(height: int, width: int, dx: float, dy: float, batch: int = 1) -> torch.Tensor:
    flow = torch.empty(batch, 2, height, width, dtype=torch.float64)
    flow[:, 0] = dx
    flow[:, 1] = dy
    return flow


def _box(height: int, width: int, top: float, left: float, size: int) -> torch.Tensor:
    """(H, W) bool: pixels whose centre lies in the square [left, left+size) x [top, top+size)."""
    ys = torch.arange(height, dtype=torch.float64)[:, None]
    xs = torch.arange(width, dtype=torch.float64)[None, :]
    return (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)


def _square_scene(
    height: int, width: int, top: int, left: int, size: int, dx: float, dy: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A square moving by (dx, dy) over a static background: (flow_fw, flow_bw, box_t, box_t1).

    Forward flow is (dx, dy) on the square's pixels in frame t and 0 elsewhere; backward flow
    is (-dx, -dy) on its pixels in frame t+1 and 0 elsewhere.
    """
    box_t = _box(height, width, top, left, size)
    box_t1 = _box(height, width, top + dy, left + dx, size)
    flow_fw = torch.zeros(1, 2, height, width, dtype=torch.float64)
    flow_bw = torch.zeros_like(flow_fw)
    flow_fw[0, 0][box_t], flow_fw[0, 1][box_t] = dx, dy
    flow_bw[0, 0][box_t1], flow_bw[0, 1][box_t1] = -dx, -dy
    return flow_fw, flow_bw, box_t, box_t1


def _dilate(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """(H, W) bool dilated by a (2r+1)^2 square."""
    pooled = F.max_pool2d(mask[None, None].double(), 2 * radius + 1, stride=1, padding=radius)
    return pooled[0, 0] > 0


def _erode(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    return ~_dilate(~mask, radius)


def _affine_flows(height: int, width: int, zoom: float, degrees: float, shift=(2.0, -1.5)):
    """Exactly consistent forward/backward flows of the map q = A (p - c) + c + shift."""
    angle = math.radians(degrees)
    a = zoom * torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
        dtype=torch.float64,
    )
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64)
    offset = torch.tensor(shift, dtype=torch.float64)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    points = torch.stack([xs, ys], dim=-1)  # (H, W, 2) as (x, y)
    forward_target = (points - centre) @ a.T + centre + offset
    backward_target = (points - centre - offset) @ torch.linalg.inv(a).T + centre
    flow_fw = (forward_target - points).permute(2, 0, 1)[None]
    flow_bw = (backward_target - points).permute(2, 0, 1)[None]
    return flow_fw, flow_bw


def _smooth_texture(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(3, H, W) float64 in [0, 1]: Gaussian-blurred noise (sigma 3 px), contrast stretched."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(3, 1, height, width, generator=generator, dtype=torch.float64)
    radius = 9
    taps = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2) / (2 * 9.0))
    taps = taps / taps.sum()
    blurred = F.conv2d(F.pad(noise, (radius,) * 4, mode="reflect"), taps.view(1, 1, 1, -1))
    blurred = F.conv2d(blurred, taps.view(1, 1, -1, 1))[:, 0]
    low, high = blurred.amin(), blurred.amax()
    return (blurred - low) / (high - low)


def _translating_video(
    canvas: torch.Tensor, frames: int, height: int, width: int, dx: int, dy: int
) -> torch.Tensor:
    """(T, C, H, W) crops of ``canvas`` with frame_{t+1}(q) = frame_t(q - d), d = (dx, dy)."""
    top, left = 2 * frames * abs(dy) + 1, 2 * frames * abs(dx) + 1
    crops = [
        canvas[:, top - t * dy : top - t * dy + height, left - t * dx : left - t * dx + width]
        for t in range(frames)
    ]
    return torch.stack(crops)


@pytest.fixture(scope="module")
def real_frames(videos_dir: Path) -> torch.Tensor:
    """First 3 frames of a real clip (Intel sample-videos, CC BY 4.0): (3, 3, 480, 640) [0, 1]."""
    capture = cv2.VideoCapture(str(videos_dir / "asl_again.mkv"))
    frames = []
    while len(frames) < 3:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    capture.release()
    if len(frames) < 3:
        pytest.skip("OpenCV cannot decode the sample clip")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(torch.float64) / 255.0


# --------------------------------------------------------------------------------------------
# Forward-backward check
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dx", "dy"), [(3, 0), (-2, 4), (1, 1)])
def test_square_occluder_found_exactly(dx: int, dy: int) -> None:
    flow_fw, flow_bw, box_t, box_t1 = _square_scene(40, 48, 12, 15, 10, dx, dy)
    occluded_fw = forward_backward_occlusion(flow_fw, flow_bw)
    # frame t: background the square covers in t+1 has no match
    assert occluded_fw.shape == (1, 1, 40, 48) and occluded_fw.dtype == torch.bool
    assert torch.equal(occluded_fw[0, 0], box_t1 & ~box_t)
    # frame t+1 (check run backwards): background the square uncovered
    occluded_bw = forward_backward_occlusion(flow_bw, flow_fw)
    assert torch.equal(occluded_bw[0, 0], box_t & ~box_t1)


def test_square_with_subpixel_motion_within_one_pixel_of_the_edges() -> None:
    flow_fw, flow_bw, box_t, box_t1 = _square_scene(40, 48, 12, 15, 10, 2.5, 1.5)
    occluded = forward_backward_occlusion(flow_fw, flow_bw)[0, 0]
    covered = box_t1 & ~box_t
    edges = _dilate(box_t) & ~_erode(box_t) | _dilate(box_t1) & ~_erode(box_t1)
    assert bool((occluded[_erode(covered)]).all())  # the core of the covered area is found
    assert not bool((occluded & ~(_dilate(covered) | edges)).any())  # nothing far from it
    assert not bool(occluded[_erode(box_t, 2)].any())  # the square's interior matches
    assert not bool(occluded[~_dilate(box_t | box_t1, 2)].any())  # static background too


def test_consistent_affine_flows_have_no_occlusion_inside_the_frame() -> None:
    height, width = 30, 40
    flow_fw, flow_bw = _affine_flows(height, width, zoom=1.08, degrees=4.0)
    occluded = forward_backward_occlusion(flow_fw, flow_bw)
    target_x = torch.arange(width, dtype=torch.float64) + flow_fw[0, 0]
    target_y = torch.arange(height, dtype=torch.float64)[:, None] + flow_fw[0, 1]
    leaves = (target_x < 0) | (target_x > width - 1) | (target_y < 0) | (target_y > height - 1)
    assert 0 < int(leaves.sum()) < height * width // 2
    assert torch.equal(occluded[0, 0], leaves)  # occluded exactly where the target leaves


def test_translation_out_of_frame_counts_as_occluded() -> None:
    flow_fw = _constant_flow(6, 10, 3.0, 0.0, batch=2)
    occluded = forward_backward_occlusion(flow_fw.float(), -flow_fw.float())
    expected = torch.zeros(2, 1, 6, 10, dtype=torch.bool)
    expected[..., 7:] = True  # x + 3 > 9
    assert torch.equal(occluded, expected)


def test_occlusion_thresholds_are_configurable() -> None:
    flow_fw, flow_bw, box_t, box_t1 = _square_scene(30, 30, 8, 8, 8, 3, 0)
    # residual |f + b|^2 = 9 on the covered strip; alpha2 = 10 accepts it, 8 does not
    assert not bool(forward_backward_occlusion(flow_fw, flow_bw, alpha2=10.0).any())
    assert torch.equal(
        forward_backward_occlusion(flow_fw, flow_bw, alpha2=8.0)[0, 0], box_t1 & ~box_t
    )
    # relative term: 9 < alpha1 * (0 + 9) + 0.5 needs alpha1 > 17/18
    assert not bool(forward_backward_occlusion(flow_fw, flow_bw, alpha1=0.95).any())


def test_occlusion_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        forward_backward_occlusion(torch.zeros(1, 2, 4, 5), torch.zeros(1, 2, 4, 6))


# --------------------------------------------------------------------------------------------
# Motion boundaries
# --------------------------------------------------------------------------------------------


def _differs_from_neighbour(flow: torch.Tensor, offsets) -> torch.Tensor:
    """(H, W) bool: the flow differs from the neighbour at any (dy, dx) in ``offsets`` (inside)."""
    field = flow[0]
    _, height, width = field.shape
    result = torch.zeros(height, width, dtype=torch.bool)
    for dy, dx in offsets:
        shifted = field.clone()
        ys = slice(max(0, -dy), height - max(0, dy))
        xs = slice(max(0, -dx), width - max(0, dx))
        shifted[:, ys, xs] = field[:, ys.start + dy : ys.stop + dy, xs.start + dx : xs.stop + dx]
        result |= (shifted != field).any(dim=0)
    return result


def test_motion_boundaries_on_the_square_edges_only() -> None:
    flow_fw, _, _, _ = _square_scene(32, 36, 10, 12, 9, 3, 1)
    central = motion_boundaries(flow_fw)
    assert central.shape == (1, 1, 32, 36) and central.dtype == torch.bool
    four_neighbours = [(0, 1), (0, -1), (1, 0), (-1, 0)]
    assert torch.equal(central[0, 0], _differs_from_neighbour(flow_fw, four_neighbours))
    # forward differences flag only the pixel before each step (right / down neighbour differs)
    forward = motion_boundaries(flow_fw, difference="forward")
    assert torch.equal(forward[0, 0], _differs_from_neighbour(flow_fw, [(0, 1), (1, 0)]))


def test_smooth_flow_has_no_motion_boundaries() -> None:
    flow_fw, _ = _affine_flows(30, 40, zoom=1.02, degrees=1.0)
    assert not bool(motion_boundaries(flow_fw).any())
    # a large uniform motion is no boundary either, whatever its size
    assert not bool(motion_boundaries(_constant_flow(8, 9, 40.0, -25.0)).any())


def test_flow_gradients_central_and_forward() -> None:
    u = torch.tensor([0.0, 1.0, 4.0, 9.0], dtype=torch.float64)  # x^2 along a row
    flow = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    flow[0, 0] = u
    d_dx, d_dy = flow_gradients(flow)
    np.testing.assert_allclose(d_dx[0, 0, 0].numpy(), [0.5, 2.0, 4.0, 2.5])  # replicate border
    assert not bool(d_dy.any())
    d_dx, _ = flow_gradients(flow, difference="forward")
    np.testing.assert_allclose(d_dx[0, 0, 0].numpy(), [1.0, 3.0, 5.0, 0.0])
    with pytest.raises(ValueError):
        flow_gradients(flow, difference="sobel")  # type: ignore[arg-type]


def test_motion_boundary_threshold_follows_the_formula() -> None:
    # a step of height s in u: central gradient s/2 on both sides of the step
    flow = torch.zeros(1, 2, 4, 6, dtype=torch.float64)
    flow[0, 0, :, 3:] = 0.2
    found = motion_boundaries(flow)[0, 0, 0]
    # (0.1)^2 = 0.01 > 0.002 on the left (|f| = 0) and > 0.01 * 0.04 + 0.002 on the right
    np.testing.assert_array_equal(found.numpy(), [False, False, True, True, False, False])
    assert not bool(motion_boundaries(flow, alpha2=0.011).any())


# --------------------------------------------------------------------------------------------
# E_warp and photometric error
# --------------------------------------------------------------------------------------------


def test_masked_mean_counts_every_channel_of_each_pixel() -> None:
    values = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    values[0, :, 0, 0] = torch.tensor([1.0, 2.0, 6.0])
    values[0, :, 1, 1] = 100.0  # outside the mask
    mask = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    mask[0, 0, 0, 0] = mask[0, 0, 0, 1] = True
    # (1 + 2 + 6 + 0 + 0 + 0) / (3 channels * 2 pixels)
    torch.testing.assert_close(masked_channel_mean(values, mask), torch.tensor([1.5]).double())
    empty = torch.zeros_like(mask)
    torch.testing.assert_close(masked_channel_mean(values, empty), torch.tensor([0.0]).double())


def test_warping_error_reproduces_lai_et_al_formula() -> None:
    generator = torch.Generator().manual_seed(7)
    frame_t = torch.rand(2, 3, 10, 12, generator=generator, dtype=torch.float64)
    frame_t1 = torch.rand(2, 3, 10, 12, generator=generator, dtype=torch.float64)
    flow = torch.zeros(2, 2, 10, 12, dtype=torch.float64)
    noc = torch.rand(2, 1, 10, 12, generator=generator) > 0.3
    e_warp = warping_error(frame_t, frame_t1, flow, noc)
    # evaluate_WarpError.py on (H, W, 3) numpy images and a 3-channel mask
    for b in range(2):
        img1 = frame_t[b].permute(1, 2, 0).numpy()
        warp_img2 = frame_t1[b].permute(1, 2, 0).numpy()
        noc_mask = np.repeat(noc[b, 0].numpy()[..., None], 3, axis=2).astype(np.float64)
        diff = (warp_img2 - img1) * noc_mask
        assert e_warp[b].item() == pytest.approx(np.sum(np.square(diff)) / np.sum(noc_mask))
    absolute = photometric_error(frame_t, frame_t1, flow, noc)
    expected = ((frame_t1 - frame_t).abs() * noc).sum(dim=(1, 2, 3)) / (3 * noc.sum((1, 2, 3)))
    torch.testing.assert_close(absolute, expected)


def test_warping_error_validity_options() -> None:
    frame_t = torch.zeros(1, 1, 4, 5, dtype=torch.float64)
    frame_t1 = torch.zeros_like(frame_t)
    frame_t1[..., -1] = 1.0  # only the last column is bright
    flow = _constant_flow(4, 5, 2.0, 0.0)  # targets of the last 2 columns leave the frame
    # counted: columns 0..2, whose targets 2..4 include the bright column once
    assert warping_error(frame_t, frame_t1, flow).item() == pytest.approx(1 / 3)
    # as Lai et al.: keep all pixels; border clamp reads column 4 for columns 2..4
    assert warping_error(frame_t, frame_t1, flow, require_valid=False).item() == pytest.approx(
        3 / 5
    )


def _bilinear_border(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image (H, W, C)`` sampled bilinearly at ``(x, y)`` with coordinates clamped to the
    frame, as FlowNet2's Resample2d that Lai et al. warp with."""
    h, w = image.shape[:2]
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = (x - x0)[..., None], (y - y0)[..., None]
    top = image[y0, x0] * (1 - ax) + image[y0, x1] * ax
    bottom = image[y1, x0] * (1 - ax) + image[y1, x1] * ax
    return top * (1 - ay) + bottom * ay


def test_lai_et_al_settings_reproduce_their_script_with_targets_outside_the_frame() -> None:
    """``mb_difference=forward`` and ``count_outside`` give evaluate_WarpError.py's number:
    its occlusion mask (forward-backward check OR motion boundary of forward differences, no
    frame test) and border-clamped samples for targets outside the frame."""
    generator = torch.Generator().manual_seed(3)
    h, w = 12, 16
    frame_t = torch.rand(1, 3, h, w, generator=generator, dtype=torch.float64)
    frame_t1 = torch.rand(1, 3, h, w, generator=generator, dtype=torch.float64)
    flow_fw = _constant_flow(h, w, 2.5, -1.25).double()
    flow_fw[:, :, 4:8, 5:9] += torch.tensor([3.0, 2.0], dtype=torch.float64)[:, None, None]
    flow_bw = -flow_fw + 0.3 * torch.rand(1, 2, h, w, generator=generator, dtype=torch.float64)
    lai = WarpConfig(mb_difference="forward", count_outside=True)
    ours = batch_metrics(frame_t, frame_t1, flow_fw, flow_bw, lai)

    fw = flow_fw[0].permute(1, 2, 0).numpy()
    bw = flow_bw[0].permute(1, 2, 0).numpy()
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    tx, ty = gx + fw[..., 0], gy + fw[..., 1]
    bw_w = _bilinear_border(bw, tx, ty)
    mag = lambda f: f[..., 0] ** 2 + f[..., 1] ** 2  # noqa: E731
    mask1 = mag(fw + bw_w) > 0.01 * (mag(bw_w) + mag(fw)) + 0.5
    du, dv = np.zeros_like(fw), np.zeros_like(fw)
    du[:, :-1] = fw[:, :-1] - fw[:, 1:]
    dv[:-1, :] = fw[:-1, :] - fw[1:, :]
    mask2 = (du**2 + dv**2).sum(axis=-1) > 0.01 * mag(fw) + 0.002
    noc = np.repeat(~(mask1 | mask2)[..., None], 3, axis=2).astype(np.float64)
    img1 = frame_t[0].permute(1, 2, 0).numpy()
    warp_img2 = _bilinear_border(frame_t1[0].permute(1, 2, 0).numpy(), tx, ty)
    expected = np.sum(np.square((warp_img2 - img1) * noc)) / np.sum(noc)
    assert (tx > w - 1).any() and (ty < 0).any()  # some targets leave the frame
    assert ours["e_warp"].item() == pytest.approx(expected, rel=1e-12)
    assert ours["counted_fraction"].item() == pytest.approx(noc[..., 0].mean(), rel=1e-12)
    strict = batch_metrics(frame_t, frame_t1, flow_fw, flow_bw)  # the default leaves them out
    assert strict["counted_fraction"].item() < ours["counted_fraction"].item()
    with pytest.raises(ValueError, match="mb_difference"):
        WarpConfig(mb_difference="sideways")


def test_uint8_frames_are_scaled_to_unit_range() -> None:
    frame_t = torch.full((1, 3, 4, 4), 100, dtype=torch.uint8)
    frame_t1 = torch.full((1, 3, 4, 4), 151, dtype=torch.uint8)
    flow = torch.zeros(1, 2, 4, 4)
    assert warping_error(frame_t, frame_t1, flow).item() == pytest.approx(0.04, rel=1e-5)
    assert photometric_error(frame_t, frame_t1, flow).item() == pytest.approx(0.2, rel=1e-5)
    with pytest.warns(UserWarning, match=r"must be in \[0, 1\], these reach 151"):
        warping_error(frame_t.float(), frame_t1.float(), flow)  # 0..255 given as floats


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_e_warp_of_a_translating_texture(dtype: torch.dtype) -> None:
    dx, dy = 2, 1
    video = _translating_video(_smooth_texture(120, 140), 6, 48, 64, dx, dy).to(dtype)
    flow_fw = _constant_flow(48, 64, dx, dy, batch=5).to(dtype)
    exact = batch_metrics(video[:-1], video[1:], flow_fw, -flow_fw)
    assert float(exact["e_warp"].max()) == 0.0  # integer flow: exact samples
    assert float(exact["photometric_error"].max()) == 0.0
    np.testing.assert_allclose(exact["counted_fraction"].numpy(), (47 * 62) / (48 * 64))
    # shuffled frames, same flow: the error is large
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    shuffled = video[order]
    wrong = batch_metrics(shuffled[:-1], shuffled[1:], flow_fw, -flow_fw)
    assert float(wrong["e_warp"].min()) > 1e-3
    # and so is ignoring the motion
    still = warping_error(video[:-1], video[1:], torch.zeros_like(flow_fw))
    assert float(still.min()) > 1e-4


def test_brightness_flicker_raises_e_warp() -> None:
    video = _translating_video(_smooth_texture(100, 120), 3, 40, 50, -3, 2) * 0.8
    flow = _constant_flow(40, 50, -3.0, 2.0)
    steady = warping_error(video[0:1], video[1:2], flow)
    assert steady.item() == 0.0
    brighter = warping_error(video[0:1], video[1:2] + 0.1, flow)  # additive flicker
    assert brighter.item() == pytest.approx(0.01, rel=1e-9)
    assert photometric_error(video[0:1], video[1:2] + 0.1, flow).item() == pytest.approx(0.1)
    scaled = warping_error(video[0:1], video[1:2] * 1.25, flow)  # gain flicker
    counted = video[0:1, :, :-2, 3:]  # pixels whose targets stay inside (x - 3 >= 0, y + 2 <= 39)
    assert scaled.item() == pytest.approx(float((0.25 * counted).square().mean()), rel=1e-9)


def test_e_warp_on_a_real_frame_moved_by_integer_flow(real_frames: torch.Tensor) -> None:
    frame = real_frames[0:1]
    frame_t, frame_t1 = frame[..., 20:420, 30:600], frame[..., 16:416, 23:593]  # d = (7, 4)
    flow = _constant_flow(400, 570, 7.0, 4.0)
    metrics = pair_metrics(frame_t, frame_t1, flow, -flow)[0]
    assert metrics["e_warp"] == 0.0 and metrics["photometric_error"] == 0.0
    assert metrics["valid_fraction"] == pytest.approx((396 * 563) / (400 * 570))
    assert warping_error(frame_t, frame_t1, torch.zeros_like(flow)).item() > 1e-4


def test_zero_flow_e_warp_on_real_frames_is_the_plain_mse(real_frames: torch.Tensor) -> None:
    frames = real_frames
    e_warp = warping_error(frames[:-1], frames[1:], torch.zeros(2, 2, 480, 640))
    expected = ((frames[1:] - frames[:-1]) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(e_warp, expected)


# --------------------------------------------------------------------------------------------
# Pair metrics and summaries
# --------------------------------------------------------------------------------------------


def test_pair_metrics_keys_and_values() -> None:
    flow_fw, flow_bw, box_t, box_t1 = _square_scene(30, 40, 8, 10, 8, 3, 0)
    frame = _smooth_texture(30, 40)[None]
    rows = pair_metrics(frame, frame, flow_fw, flow_bw)
    assert len(rows) == 1 and list(rows[0]) == list(METRIC_KEYS)
    row = rows[0]
    assert all(isinstance(value, float) for value in row.values())
    pixels = 30 * 40
    assert row["occluded_fraction"] == pytest.approx(float((box_t1 & ~box_t).sum()) / pixels)
    assert row["valid_fraction"] == 1.0
    boundary = _differs_from_neighbour(flow_fw, [(0, 1), (0, -1), (1, 0), (-1, 0)])
    assert row["motion_boundary_fraction"] == pytest.approx(float(boundary.sum()) / pixels)
    counted = ~(box_t1 & ~box_t) & ~boundary
    assert row["counted_fraction"] == pytest.approx(float(counted.sum()) / pixels)
    assert row["flow_mag_max"] == 3.0 and row["flow_mag_median"] == 0.0
    assert row["flow_mag_mean"] == pytest.approx(3.0 * 64 / pixels)
    # keeping motion boundaries counts more pixels
    kept = pair_metrics(frame, frame, flow_fw, flow_bw, exclude_motion_boundaries=False)[0]
    assert kept["counted_fraction"] > row["counted_fraction"]


def test_pair_metrics_without_backward_flow() -> None:
    frame = _smooth_texture(20, 24)[None]
    row = pair_metrics(frame, frame, _constant_flow(20, 24, 1.0, 0.0))[0]
    assert math.isnan(row["occluded_fraction"])
    assert row["valid_fraction"] == pytest.approx(23 / 24) == row["counted_fraction"]


def _random_clip(seed: int, pairs: int, height: int, width: int, scale: float):
    """``pairs + 1`` random frames in [0, 1] and random forward / backward flows (px)."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.rand(pairs + 1, 3, height, width, generator=generator)
    flows = torch.randn(pairs, 2, height, width, generator=generator) * scale
    back = torch.randn(pairs, 2, height, width, generator=generator) * scale
    return frames, flows, back


def test_batched_metrics_match_one_pair_at_a_time() -> None:
    frames, flows, back = _random_clip(11, 3, 16, 20, scale=2.0)
    batch = pair_metrics(frames[:-1], frames[1:], flows, back)
    for i in range(3):
        single = pair_metrics(
            frames[i : i + 1], frames[i + 1 : i + 2], flows[i : i + 1], back[i : i + 1]
        )
        assert batch[i] == pytest.approx(single[0])


def test_flow_magnitude_stats_match_numpy() -> None:
    generator = torch.Generator().manual_seed(5)
    flow = torch.randn(2, 2, 17, 23, generator=generator) * 3
    stats = flow_magnitude_stats(flow)
    magnitude = np.hypot(flow[:, 0].numpy(), flow[:, 1].numpy()).reshape(2, -1)
    np.testing.assert_allclose(stats["mean"].numpy(), magnitude.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(stats["median"].numpy(), np.median(magnitude, axis=1), rtol=1e-6)
    np.testing.assert_allclose(
        stats["p95"].numpy(), np.percentile(magnitude, 95, axis=1), rtol=1e-6
    )
    np.testing.assert_allclose(stats["max"].numpy(), magnitude.max(axis=1), rtol=1e-6)


def test_summarize_video() -> None:
    per_pair = pd.DataFrame(
        {
            "frame": [0, 1, 2, 3],
            "e_warp": [0.01, 0.03, float("nan"), 0.02],
            "photometric_error": [0.1, 0.2, 0.3, 0.4],
            "flow_mag_max": [3.0, 9.0, 1.0, 2.0],
            "flow_mag_mean": [1.0, 2.0, 3.0, 4.0],
        }
    )
    summary = summarize_video(per_pair)
    assert summary["num_pairs"] == 4
    assert summary["e_warp"] == pytest.approx(0.02)  # NaN skipped
    assert summary["e_warp_median"] == pytest.approx(0.02)
    assert summary["e_warp_max"] == pytest.approx(0.03)
    assert summary["photometric_error"] == pytest.approx(0.25)
    assert summary["flow_mag_max"] == 9.0 and summary["flow_mag_mean"] == 2.5
    assert "frame" not in summary
    assert summarize_video(per_pair.iloc[:0])["num_pairs"] == 0
    empty = summarize_video(pd.DataFrame([]))  # what pair_metrics gives a one-frame video
    assert empty["num_pairs"] == 0 and set(METRIC_KEYS) <= set(empty)
    assert math.isnan(empty["e_warp"]) and math.isnan(empty["e_warp_max"])
    with pytest.raises(ValueError):
        summarize_video(per_pair, columns=["missing"])


def test_video_e_warp_is_the_mean_over_pairs() -> None:
    video = _translating_video(_smooth_texture(90, 100), 5, 32, 40, 1, 1)
    flow = _constant_flow(32, 40, 1.0, 1.0, batch=4)
    flicker = video.clone()
    flicker[2] = flicker[2] + 0.05  # pairs (1, 2) and (2, 3) see the flash
    table = pd.DataFrame(pair_metrics(flicker[:-1], flicker[1:], flow, -flow))
    np.testing.assert_allclose(table["e_warp"], [0.0, 0.0025, 0.0025, 0.0], atol=1e-12)
    assert summarize_video(table)["e_warp"] == pytest.approx(0.00125)


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------


def test_plot_error_over_time_writes_a_png(tmp_path: Path) -> None:
    generator = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "frame": np.arange(40) * 2,
            "e_warp": generator.random(40) * 0.01,
            "photometric_error": generator.random(40) * 0.05,
        }
    )
    table.loc[5, "e_warp"] = float("nan")
    out = tmp_path / "plots" / "errors.png"
    written = plot_error_over_time(
        table, ["e_warp", "photometric_error"], out, worst=3, title="clip", x="frame"
    )
    assert written == out and out.is_file()
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1000, 400)
    assert sorted(p.name for p in out.parent.iterdir()) == ["errors.png"]  # no temp left
    # single column by name, index as x, nothing marked
    plot_error_over_time(table, "e_warp", out, worst=0)
    with Image.open(out) as image:
        image.verify()


def test_plot_rejects_missing_columns(tmp_path: Path) -> None:
    table = pd.DataFrame({"e_warp": [0.1, 0.2]})
    with pytest.raises(ValueError):
        plot_error_over_time(table, ["nope"], tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_error_over_time(table, "e_warp", tmp_path / "x.png", x="frame")
    with pytest.raises(ValueError):
        plot_error_over_time(table, "e_warp", tmp_path / "x.png", worst=-1)
    assert not any(tmp_path.iterdir())


def test_non_finite_flow_counts_as_occluded() -> None:
    flow_fw = torch.zeros(1, 2, 5, 6)
    flow_fw[0, 0, 2, 3] = float("nan")
    flow_bw = torch.zeros(1, 2, 5, 6)
    flow_bw[0, 1, 4, 0] = float("inf")  # the target of pixel (4, 0)
    occluded = forward_backward_occlusion(flow_fw, flow_bw)
    expected = torch.zeros(1, 1, 5, 6, dtype=torch.bool)
    expected[0, 0, 2, 3] = expected[0, 0, 4, 0] = True
    # as with grid_sample, a zero bilinear weight times inf is NaN: pixel (3, 0) samples at
    # exactly (0, 3) but its footprint includes (0, 4) with weight 0
    expected[0, 0, 3, 0] = True
    assert torch.equal(occluded, expected)


def test_precomputed_masks_and_warp_give_the_same_metrics() -> None:
    frames, flows, back = _random_clip(12, 2, 24, 32, scale=3.0)
    plain = batch_metrics(frames[:-1], frames[1:], flows, back)
    masks = flow_masks(flows, back)
    warped = backward_warp(frames[1:], flows, padding="border")
    given = batch_metrics(frames[:-1], frames[1:], flows, back, masks=masks, warped=warped)
    for key in METRIC_KEYS:
        torch.testing.assert_close(given[key], plain[key], equal_nan=True, rtol=0, atol=0)
    assert torch.equal(masks.occluded, forward_backward_occlusion(flows, back))
    assert torch.equal(masks.boundaries, motion_boundaries(flows))
    assert flow_masks(flows, None).occluded is None


def test_warp_stage_warps_frame_and_backward_flow_in_one_pass_exactly() -> None:
    """The warp stage samples frame t+1 and the backward flow together (same sample points);
    the warped frame, the masks and every metric equal the separate calls bit for bit."""
    frames, flows, back = _random_clip(14, 3, 40, 52, scale=4.0)
    flows[1, :, 5:9, 7:12] = 80.0  # some targets far outside the frame
    pixels = (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    chunk = FrameChunk(
        "v", pixels, np.arange(4), np.arange(4) / 25.0,
        artifacts={"pairs": np.array([[0, 1], [1, 2], [2, 3]]), "flow_fw": flows,
                   "flow_bw": back},
    )  # fmt: skip
    config = WarpConfig(enabled=True)
    unit = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    for n, products in enumerate(pair_products(chunk, pixels, config)):
        fw, bw = flows[n : n + 1], back[n : n + 1]
        warped, inside = backward_warp(unit[n + 1 : n + 2], fw, padding="border")
        masks = flow_masks(fw, bw, config)
        assert torch.equal(products.warped, warped) and torch.equal(products.inside, inside)
        assert torch.equal(products.masks.occluded, masks.occluded)
        assert torch.equal(products.masks.boundaries, masks.boundaries)
        metrics = batch_metrics(unit[n : n + 1], unit[n + 1 : n + 2], fw, bw, config)
        for key in METRIC_KEYS:
            assert products.row[key] == float(metrics[key][0]) or math.isnan(products.row[key])
    bw_at_target = backward_warp(back, flows, padding="border")
    assert torch.equal(
        forward_backward_occlusion(flows, back, warped_bw=bw_at_target),
        forward_backward_occlusion(flows, back),
    )


def test_flow_magnitude_quantiles_agree_on_every_path() -> None:
    """numpy's multi-rank partition (CPU) and kthvalue (other devices, autograd) agree."""
    generator = torch.Generator().manual_seed(6)
    flow = torch.randn(3, 2, 31, 37, generator=generator) * 4
    flow[1, :, 0, 0] = float("nan")
    fast = flow_magnitude_stats(flow)
    tracked = flow_magnitude_stats(flow.clone().requires_grad_(True))
    for key in ("median", "p95"):
        torch.testing.assert_close(fast[key], tracked[key].detach(), rtol=0, atol=0)


def test_warp_stage_pictures_are_black_where_the_flow_leaves_the_frame(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(13)
    frames = torch.randint(0, 256, (2, 20, 30, 3), dtype=torch.uint8, generator=generator)
    flow = torch.zeros(1, 2, 20, 30)
    flow[:, 0] = 2.5  # the last 3 columns point past the right edge
    chunk = FrameChunk(
        "v", frames.numpy(), np.arange(2), np.arange(2) / 25.0,
        artifacts={"pairs": np.array([[0, 1]]), "flow_fw": flow, "flow_bw": -flow},
    )  # fmt: skip
    stage = WarpStage(tmp_path, WarpConfig(enabled=True, video=False), fps=25.0)
    stage.setup()
    stage.process(chunk)
    stage.finish()
    picture = np.asarray(Image.open(tmp_path / "warped" / "000000.png"))
    source = frames[1].numpy().astype(np.float64)
    expected = np.round((source[:, 2:29] + source[:, 3:30]) / 2)  # x + 2.5: half-way
    np.testing.assert_allclose(picture[:, :27], expected, atol=1)
    assert (picture[:, 27:] == 0).all()  # x + 2.5 > 29: outside
    occlusion = np.asarray(Image.open(tmp_path / "occlusion" / "000000.png"))
    assert (occlusion[:, 27:] == 255).all() and (occlusion[:, :27] == 0).all()
    table = pd.read_csv(tmp_path / "consistency.csv")
    assert table["valid_fraction"][0] == pytest.approx(27 / 30)
