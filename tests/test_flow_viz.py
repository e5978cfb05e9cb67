"""Middlebury colour coding of flow fields."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
import pytest

from stages.flow_viz import (
    caption_height,
    color_wheel_legend,
    flow_to_color,
    legend_panel,
    legend_width,
    make_color_wheel,
    side_by_side,
    video_scale,
    with_caption,
)


def _unit_flow(angles: np.ndarray, magnitude: float = 1.0) -> np.ndarray:
    """(1, N, 2) flow of the given magnitude at image-coordinate angles (x right, y down)."""
    return np.stack([np.cos(angles), np.sin(angles)], axis=-1)[None] * magnitude


def _hue_degrees(rgb: np.ndarray) -> np.ndarray:
    return np.array([colorsys.rgb_to_hsv(*(pixel / 255.0))[0] * 360 for pixel in rgb])


def test_color_wheel_layout() -> None:
    wheel = make_color_wheel()
    assert wheel.shape == (55, 3)
    assert wheel.min() >= 0 and wheel.max() <= 255
    # segment starts: RY=15, YG=6, GC=4, CB=11, BM=13, MR=6
    np.testing.assert_array_equal(wheel[0], [255, 0, 0])  # red
    np.testing.assert_array_equal(wheel[15], [255, 255, 0])  # yellow
    np.testing.assert_array_equal(wheel[21], [0, 255, 0])  # green
    np.testing.assert_array_equal(wheel[25], [0, 255, 255])  # cyan
    np.testing.assert_array_equal(wheel[36], [0, 0, 255])  # blue
    np.testing.assert_array_equal(wheel[49], [255, 0, 255])  # magenta
    np.testing.assert_array_equal(wheel[1], [255, np.floor(255 / 15), 0])
    np.testing.assert_array_equal(wheel[54], [255, 0, 255 - np.floor(255 * 5 / 6)])


def test_zero_flow_is_white() -> None:
    image = flow_to_color(np.zeros((3, 4, 2), np.float32))
    assert image.dtype == np.uint8 and image.shape == (3, 4, 3)
    assert (image == 255).all()


def test_cardinal_directions() -> None:
    # right, down, left, up at the normalising magnitude
    flow = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]])
    image = flow_to_color(flow)
    # right: angle atan2(-0, -1) = -pi -> wheel entry 0, pure red
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0])
    # down: entry 13.5 of RY -> G = (221 + 238) / 2
    np.testing.assert_array_equal(image[0, 1], [255, 229, 0])
    # left: entry 27 = CB[2] -> G = 255 - floor(255 * 2 / 11)
    np.testing.assert_array_equal(image[0, 2], [0, 209, 255])
    # up: entry 40.5 of BM -> R = (78 + 98) / 2
    np.testing.assert_array_equal(image[0, 3], [88, 0, 255])


def test_rightward_flow_is_red_whatever_the_sign_of_zero() -> None:
    flow = np.array([[[2.0, 0.0], [2.0, -0.0]]])
    image = flow_to_color(flow)
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(image[0, 1], [255, 0, 0])


def test_bgr_flag_reverses_channels() -> None:
    flow = np.array([[[1.0, 0.0], [0.0, -1.0]]])
    np.testing.assert_array_equal(
        flow_to_color(flow, convert_to_bgr=True), flow_to_color(flow)[..., ::-1]
    )


def test_hue_changes_monotonically_around_the_circle() -> None:
    angles = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    image = flow_to_color(_unit_flow(angles), max_flow=1.0)
    hue = np.unwrap(np.radians(_hue_degrees(image[0])))
    steps = np.degrees(np.diff(hue))
    assert (steps >= -0.5).all(), steps.min()  # non-decreasing, up to 8-bit rounding
    assert 340 < np.degrees(hue[-1] - hue[0]) < 360  # one full turn, red back to red


def test_magnitude_controls_saturation_and_fixed_scale() -> None:
    flow = np.array([[[0.25, 0.0], [0.5, 0.0], [1.0, 0.0], [2.0, 0.0]]])
    image = flow_to_color(flow, max_flow=1.0).astype(int)
    # inside the rim: red stays 255, green/blue fall linearly toward 0 with magnitude
    np.testing.assert_array_equal(image[0, :3, 0], [255, 255, 255])
    assert image[0, 0, 1] > image[0, 1, 1] > image[0, 2, 1] == 0
    np.testing.assert_array_equal(image[0, 1], [255, 127, 127])
    # beyond max_flow: the saturated colour darkened to 75 %
    np.testing.assert_array_equal(image[0, 3], [191, 0, 0])
    # without max_flow the largest vector (2.0) sets the scale
    np.testing.assert_array_equal(flow_to_color(flow)[0, 3], [255, 0, 0])


def test_nan_and_unknown_flow_are_black_and_ignored_for_scale() -> None:
    flow = np.array([[[np.nan, 0.0], [1.0, np.inf], [2e9, 0.0], [4.0, 0.0], [0.0, 0.0]]])
    image = flow_to_color(flow)
    assert (image[0, :3] == 0).all()
    np.testing.assert_array_equal(image[0, 3], [255, 0, 0])  # scale is 4, not inf
    np.testing.assert_array_equal(image[0, 4], [255, 255, 255])
    assert (flow_to_color(np.full((2, 2, 2), np.nan)) == 0).all()


def test_flow_to_color_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        flow_to_color(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="max_flow"):
        flow_to_color(np.zeros((2, 2, 2)), max_flow=0.0)


def test_color_wheel_legend() -> None:
    legend = color_wheel_legend(31)
    assert legend.shape == (31, 31, 3) and legend.dtype == np.uint8
    np.testing.assert_array_equal(legend[15, 15], [255, 255, 255])  # centre: zero motion
    np.testing.assert_array_equal(legend[15, 30], [255, 0, 0])  # right rim: red
    np.testing.assert_array_equal(legend[15, 0], [0, 209, 255])  # left rim
    np.testing.assert_array_equal(legend[0, 0], [255, 255, 255])  # outside the disc
    np.testing.assert_array_equal(legend[30, 15], flow_to_color(np.array([[[0.0, 1.0]]]))[0, 0])
    with pytest.raises(ValueError, match="size"):
        color_wheel_legend(2)


def test_side_by_side() -> None:
    frame = np.zeros((8, 10, 3), np.uint8)
    flow_rgb = flow_to_color(np.ones((8, 6, 2)))
    both = side_by_side(frame, flow_rgb, gap=2)
    assert both.shape == (8, 18, 3) and both.dtype == np.uint8
    assert (both[:, :10] == 0).all() and (both[:, 10:12] == 255).all()
    np.testing.assert_array_equal(both[:, 12:], flow_rgb)

    half = flow_to_color(np.ones((4, 5, 2)))  # flow at half resolution
    assert side_by_side(frame, half).shape == (8, 20, 3)
    with pytest.raises(ValueError, match="uint8"):
        side_by_side(frame.astype(np.float32), flow_rgb)


# ---------------------------------------------------------------- pictures that explain themselves


def _saturation(image: np.ndarray) -> float:
    """Mean colourfulness of an RGB picture: 0 for white, ~1 for the wheel's rim colours."""
    return float((image.max(axis=-1).astype(float) - image.min(axis=-1)).mean() / 255)


def test_video_scale_ignores_outliers_keeps_a_floor_and_leaves_headroom() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.2, size=(4, 60, 80, 2))
    assert video_scale(noise, minimum=2.0) == 2.0  # a still scene: the floor
    moving = noise.copy()
    moving[:, 10:40, 10:50] += (3.0, 4.0)  # a 5 px/frame object on a quarter of the picture
    moving[0, 0, 0] = (500.0, 0.0)  # one outlier does not set the scale
    assert video_scale(moving, minimum=2.0) == pytest.approx(1.1 * 5.0, rel=0.1)
    moving[0, 0, 1] = (np.nan, 0.0)  # unknown vectors are skipped
    assert np.isfinite(video_scale(moving))
    with pytest.raises(ValueError, match="shape"):
        video_scale(np.zeros((4, 5)))


def test_still_scene_noise_stays_pale_with_the_video_scale() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.2, size=(40, 50, 2))
    per_frame = flow_to_color(noise)  # the largest noise vector reaches the rim
    per_video = flow_to_color(noise, max_flow=video_scale(noise))
    assert _saturation(per_video) < 0.5 * _saturation(per_frame)


def test_legend_panel_shows_the_wheel_and_the_rim() -> None:
    panel = legend_panel(240, 3.6, "per video")
    assert panel.shape == (240, legend_width(240), 3) and panel.dtype == np.uint8
    colours = {tuple(p) for p in panel.reshape(-1, 3)}
    assert (255, 0, 0) in colours  # the rim's red: flow pointing right
    assert (255, 255, 255) in colours  # white: still centre (and the text)
    small = legend_panel(48, 1.0, "frame max")
    assert small.shape == (48, legend_width(48), 3)
    assert legend_panel(1, 1.0, "x").shape == (1, legend_width(1), 3)  # nothing fits: cut off
    with pytest.raises(ValueError):
        legend_panel(0, 1.0, "x")


def test_caption_bar_sits_above_the_picture() -> None:
    picture = np.full((60, 80, 3), 200, np.uint8)
    labelled = with_caption(picture, "frame 3")
    bar = caption_height(60)
    assert labelled.shape == (60 + bar, 80, 3)
    np.testing.assert_array_equal(labelled[bar:], picture)
    assert (labelled[:bar] > 128).any()  # the text is drawn in white on the dark bar


def test_writers_draw_one_scale_per_video_with_its_legend(tmp_path) -> None:
    import torch

    from stages.base import FrameChunk
    from stages.settings import OutputConfig
    from stages.writers import FlowWriters

    frames = np.zeros((5, 48, 64, 3), np.uint8)
    flows = np.zeros((4, 48, 64, 2), np.float32)
    flows[:, 10:30, 10:30] = (3.0, 0.0)
    flows[3, 10:30, 10:30] = (9.0, 0.0)  # later motion: darker past the rim, not rescaled
    writers = FlowWriters(tmp_path, OutputConfig(formats=("viz",), viz_video=False))
    for first, last, overlap in ((0, 4, 0), (3, 5, 1)):  # two chunks: pairs 0-2, then pair 3
        pairs = np.stack([np.arange(first, last - 1), np.arange(first + 1, last)], 1)
        chunk = FrameChunk(
            "v", frames[first:last], np.arange(first, last), np.arange(first, last) / 25.0,
            overlap=overlap,
            artifacts={"pairs": pairs,
                       "flow_fw": torch.from_numpy(flows[first : last - 1]).permute(0, 3, 1, 2)},
        )  # fmt: skip
        writers.process(chunk)
    writers.finish()
    rim = writers.summary["viz_rim_px"]
    assert writers.summary["viz_scale"] == "video" and rim == pytest.approx(3.3)
    pictures = [cv2.imread(str(tmp_path / "viz" / f"{t:06d}.png"))[..., ::-1] for t in range(4)]
    assert pictures[0].shape == (48, 64 + legend_width(48), 3)
    np.testing.assert_array_equal(pictures[0][:, 64:], legend_panel(48, rim, "per video"))
    assert pictures[3][20, 20].max() < pictures[0][20, 20].max()  # 9 px: past the rim, dimmed


def test_float32_flow_is_coloured_like_float64_flow() -> None:
    """float32 input is computed in float32 (2x faster): at most one level off, rarely."""
    flow = np.random.default_rng(4).normal(0, 5, (60, 80, 2))
    wide = flow_to_color(flow, max_flow=8.0).astype(int)
    narrow = flow_to_color(flow.astype(np.float32), max_flow=8.0).astype(int)
    assert np.abs(wide - narrow).max() <= 1 and (wide != narrow).mean() < 1e-3


def test_legend_panels_are_cached_and_read_only() -> None:
    panel = legend_panel(120, 2.5, "per video")
    assert legend_panel(120, 2.5, "per video") is panel
    assert not panel.flags.writeable
    assert legend_panel(120, 2.6, "per video") is not panel
