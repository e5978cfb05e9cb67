"""``inspect``: the traced refinement against the official code, the CLI, the report page."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from models import Padder, RefineTrace, create_model
from pipeline.cli import main
from pipeline.images import read_rgb
from pipeline.inspect import inspect_pair, read_ground_truth, read_video_pair, save_arrays
from stages.flow_io import write_flo
from tests.media import read_frame_index, write_video

INSPECT_FIXTURE = "raft_large_frame0047_0048.npz"
FLOW_TOL, CORR_REL_TOL = 5e-3, 1e-3


def _crop_pair(parity_dir: Path, folder: Path, box: tuple[int, int, int, int]) -> list[str]:
    paths = []
    for name in ("frame_0047.png", "frame_0048.png"):
        path = folder / name
        Image.open(parity_dir / name).convert("RGB").crop(box).save(path)
        paths.append(str(path))
    return paths


def _rel(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def test_iterations_and_correlation_rows_match_the_official_code(
    parity_dir: Path, tmp_path: Path
) -> None:
    fixture_path = parity_dir.parent / "inspect" / INSPECT_FIXTURE
    if not fixture_path.is_file():
        pytest.skip(f"inspect fixture not found at {fixture_path}")
    expected = np.load(fixture_path)
    model = create_model("raft-large", checkpoint=parity_dir / "raft_large_random.pth")
    result = inspect_pair(
        model,
        read_rgb(parity_dir / "frame_0047.png"),
        read_rgb(parity_dir / "frame_0048.png"),
        pixels=[tuple(p) for p in expected["pixels"].tolist()],
        iters=int(expected["iters"]),
        pad_mode="sintel",
    )
    assert result.pads == (0, 0, 2, 2)
    save_arrays(result, tmp_path)
    iterations = np.load(tmp_path / "iterations.npz")
    flow = iterations["flow"]
    assert flow.dtype == np.float32
    assert flow.shape == expected["flow_predictions"].shape
    worst = np.abs(flow - expected["flow_predictions"]).max(axis=(1, 2, 3))
    assert worst.max() <= FLOW_TOL, f"per-iteration max |diff| {worst}"
    # delta: how far each iteration moved the flow, from the saved flows themselves
    steps = np.diff(np.concatenate([np.zeros_like(flow[:1]), flow]), axis=0)
    np.testing.assert_allclose(iterations["delta"], np.linalg.norm(steps, axis=-1).mean((1, 2)),
                               rtol=1e-4)  # fmt: skip
    correlation = np.load(tmp_path / "correlation.npz")
    for k in range(4):
        ours, theirs = correlation[f"level{k}"], expected[f"level{k}"]
        assert ours.shape == theirs.shape
        assert _rel(ours, theirs) <= CORR_REL_TOL, f"level {k}: {_rel(ours, theirs):.2e}"
    iters = int(expected["iters"])
    assert correlation["centres"].shape == (3, iters, 2)
    assert correlation["lookups"].shape == (3, iters, 4, 9, 9)


def test_trace_changes_nothing_and_equals_flow_predictions(parity_dir: Path) -> None:
    model = create_model("raft-small", checkpoint=parity_dir / "raft_small_random.pth")
    generator = torch.Generator().manual_seed(0)
    image1 = torch.rand(1, 3, 64, 80, generator=generator) * 255
    image2 = torch.roll(image1, shifts=(1, 2), dims=(2, 3))
    with torch.no_grad():
        predictions = model.flow_predictions(image1, image2, iters=3)
        fmap1, fmap2 = model.encode_features(torch.cat([image1, image2])).chunk(2)
        context = model.encode_context(image1)
        plain = model.refine(fmap1, fmap2, context, iters=3)
        trace = RefineTrace(cells=[(0, 0), (9, 7)])
        traced = model.refine(fmap1, fmap2, context, iters=3, trace=trace)
        on_demand = RefineTrace(cells=trace.cells)
        model.refine(fmap1, fmap2, context, iters=1, corr="on-demand", trace=on_demand)
    for a, b in zip(plain, traced, strict=True):
        assert torch.equal(a, b)
    assert len(trace.flows_up) == 3 and torch.equal(trace.flows_up[-1], plain[1])
    for ours, theirs in zip(trace.flows_up, predictions, strict=True):
        assert (ours - theirs).abs().max() <= 1e-4
    for ours, theirs in zip(on_demand.correlation, trace.correlation, strict=True):
        assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    with pytest.raises(ValueError, match=r"\[\[10, 0\]\]"):
        model.refine(fmap1, fmap2, context, iters=1, trace=RefineTrace(cells=[(10, 0)]))


@pytest.fixture(scope="module")
def gma_run(parity_dir: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inspect_gma")
    images = _crop_pair(parity_dir, folder, (300, 100, 300 + 150, 100 + 101))
    out = folder / "out"
    result = CliRunner().invoke(
        main,
        ["inspect", *images, "-o", str(out), "--model", "gma", "--iters", "3",
         "--checkpoint", str(parity_dir / "gma_random.pth"), "--pixel", "149,100",
         "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_gma_through_the_cli(gma_run: Path, parity_dir: Path) -> None:
    out = gma_run
    flow = np.load(out / "iterations.npz")["flow"]
    assert flow.shape == (3, 101, 150, 2) and flow.dtype == np.float32
    correlation = np.load(out / "correlation.npz")
    pads = Padder(101, 150).pads  # sintel
    left, _, top, _ = pads
    assert correlation["pads"].tolist() == list(pads)
    assert correlation["cells"].tolist() == [[(149 + left) // 8, (100 + top) // 8]]
    h8, w8 = (101 + top + pads[3]) // 8, (150 + left + pads[1]) // 8
    assert correlation["level0"].shape == (1, h8, w8)
    assert correlation["level1"].shape == (1, h8 // 2, w8 // 2)
    attention = np.load(out / "attention.npz")["attention"]
    assert attention.shape == (1, 1, h8, w8)
    np.testing.assert_allclose(attention.sum(axis=(2, 3)), 1.0, rtol=1e-4)
    weights = np.load(out / "upsampling.npz")["weights"]
    assert weights.shape == (1, 3, 3)
    np.testing.assert_allclose(weights.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    names = {p.name for p in out.iterdir()}
    assert {"report.html", "iterations.png", "features.png", "pixel0_correlation.png",
            "pixel0_upsampling.png", "pixel0_attention.png"} <= names  # fmt: skip


def test_raft_small_kitti_padding_through_the_cli(parity_dir: Path, tmp_path: Path) -> None:
    width, height = 100, 77  # kitti mode: all 3 rows of height padding at the bottom
    images = _crop_pair(parity_dir, tmp_path, (500, 200, 500 + width, 200 + height))
    out = tmp_path / "out"
    checkpoint = parity_dir / "raft_small_random.pth"
    gt = np.broadcast_to(np.float32([2.0, -1.0]), (height, width, 2))
    write_flo(tmp_path / "gt.flo", gt)
    result = CliRunner().invoke(
        main,
        ["inspect", *images, "-o", str(out), "--model", "raft-small", "--iters", "2",
         "--checkpoint", str(checkpoint), "--pixel", "99,76", "--pixel", "0,0",
         "--pad-mode", "kitti", "--gt", str(tmp_path / "gt.flo"), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not (out / "upsampling.npz").exists() and not (out / "attention.npz").exists()
    iterations = np.load(out / "iterations.npz")
    epe = np.linalg.norm(iterations["flow"] - gt, axis=-1).mean(axis=(1, 2))
    np.testing.assert_allclose(iterations["epe"], epe, rtol=1e-5)
    padder = Padder(height, width, mode="kitti")
    left, _, top, _ = padder.pads
    correlation = np.load(out / "correlation.npz")
    cells = [[(99 + left) // 8, (76 + top) // 8], [left // 8, top // 8]]
    assert correlation["cells"].tolist() == cells
    np.testing.assert_allclose(correlation["targets"], [[101, 75], [2, -1]])
    np.testing.assert_allclose(correlation["target_centres"], np.add(cells, [0.25, -0.125]))
    # The rows are the network's own volume: recompute them from its features.
    model = create_model("raft-small", checkpoint=checkpoint)
    frames = [torch.from_numpy(read_rgb(p)).permute(2, 0, 1)[None].float() for p in images]
    with torch.inference_mode():
        fmaps = model.encode_features(torch.cat([padder.pad(f) for f in frames]))
    fmap1, fmap2 = fmaps.chunk(2)
    for p, (cx, cy) in enumerate(cells):
        row = torch.einsum("c,chw->hw", fmap1[0, :, cy, cx], fmap2[0]) / math.sqrt(128)
        assert _rel(correlation["level0"][p], row.numpy()) <= 1e-5
    assert (tmp_path / "out" / "pixel0_correlation.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (["100,10"], "pixel 100,10 lies outside the 100x77 image"),
        (["5,-1"], "pixel 5,-1 lies outside"),
        (["3;4"], "'3;4' is not a pixel"),
        ([f"{i},1" for i in range(17)], "17 pixels given"),
    ],
)
def test_bad_pixels_are_refused(parity_dir: Path, tmp_path: Path, pixels, message) -> None:
    images = _crop_pair(parity_dir, tmp_path, (0, 0, 100, 77))
    args = ["inspect", *images, "-o", str(tmp_path / "out"), "--checkpoint", "random"]
    for pixel in pixels:
        args += ["--pixel", pixel]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_the_python_api_refuses_an_empty_pixel_list() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="no pixel given"):
        inspect_pair(create_model("raft-small").eval(), frame, frame, pixels=[])


def test_video_frame_pair(tmp_path: Path, parity_dir: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", width=96, height=72, num_frames=5)
    first, second = read_video_pair(video, 2)
    assert (read_frame_index(first), read_frame_index(second)) == (2, 3)
    out = tmp_path / "out"
    args = ["inspect", "--video", str(video), "--frame", "2", "-o", str(out), "--model",
            "raft-small", "--checkpoint", str(parity_dir / "raft_small_random.pth"),
            "--iters", "2", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    correlation = np.load(out / "correlation.npz")
    assert correlation["pixels"].tolist() == [[48, 36]]  # default: the centre
    model = create_model("raft-small", checkpoint=parity_dir / "raft_small_random.pth")
    direct = inspect_pair(model, first, second, pixels=[(48, 36)], iters=2)
    np.testing.assert_allclose(np.load(out / "iterations.npz")["flow"], direct.flows, atol=1e-5)
    late = CliRunner().invoke(main, [*args[:4], "4", *args[5:]])
    assert late.exit_code == 2 and "frame 4 needs frames 4 and 5" in late.output
    images = _crop_pair(parity_dir, tmp_path, (0, 0, 96, 72))
    stray = CliRunner().invoke(main, ["inspect", *images, "--frame", "2", *args[5:]])
    assert stray.exit_code == 2 and "--frame picks a pair of --video's frames" in stray.output


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_report_renders_in_a_headless_browser(gma_run: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed")
    shot = tmp_path / "shot.png"
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1200,1600", (gma_run / "report.html").resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 10, "the screenshot is blank"
    # The embedded pictures rendered: many distinct colours, not only text on white.
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 1000


def test_default_model_works_offline_with_the_shipped_model(
    parity_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """``--model auto`` (the default) chooses as ``run`` does: with an empty cache, the model
    that ships with the package, so ``inspect`` needs no download."""
    monkeypatch.setenv("MOTIONPIPE_CACHE", str(tmp_path / "empty-cache"))
    images = _crop_pair(parity_dir, tmp_path, (0, 0, 96, 64))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["inspect", *images, "-o", str(out), "--iters", "1"])
    assert result.exit_code == 0, result.output
    report = (out / "report.html").read_text()
    assert "raft-small-convex" in report and "motionpipe-small-v3" in report
    # a checkpoint without --model brings its architecture: a registry name or a file
    for checkpoint in ("motionpipe-small-v3", str(parity_dir / "raft_small_random.pth")):
        args = ["inspect", *images, "-o", str(tmp_path / "o2"), "--checkpoint", checkpoint,
                "--iters", "1"]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    assert "raft-small" in (tmp_path / "o2" / "report.html").read_text()
    refused = CliRunner().invoke(main, ["inspect", *images, "-o", str(out), "--checkpoint",
                                        "random"])  # fmt: skip
    assert refused.exit_code == 2 and "explicit --model" in refused.output


def test_a_second_inspection_and_ground_truth_invalid_at_a_pixel(
    parity_dir: Path, tmp_path: Path
) -> None:
    """Ground truth that is unknown at a traced pixel (Sintel's 1e10 marker) gives no true
    correspondence there, not one 1e10 px away; a later inspection into the same folder
    removes what the earlier one wrote that it does not (a user's files stay)."""
    images = _crop_pair(parity_dir, tmp_path, (500, 200, 600, 277))
    gt = np.full((77, 100, 2), 1.5, np.float32)
    gt[5, 10] = 1e10
    write_flo(tmp_path / "gt.flo", gt)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    base = ["inspect", *images, "-o", str(out), "--model", "raft-small", "--iters", "1",
            "--checkpoint", str(parity_dir / "raft_small_random.pth"), "--device", "cpu"]  # fmt: skip
    first = CliRunner().invoke(
        main, [*base, "--pixel", "10,5", "--pixel", "50,40", "--gt", str(tmp_path / "gt.flo")]
    )
    assert first.exit_code == 0, first.output
    targets = np.load(out / "correlation.npz")["targets"]
    assert np.isnan(targets[0]).all() and targets[1].tolist() == [51.5, 41.5]
    assert "none (invalid there)" in (out / "report.html").read_text()
    assert (out / "pixel1_correlation.png").is_file()
    second = CliRunner().invoke(main, [*base, "--pixel", "20,20"])
    assert second.exit_code == 0, second.output
    assert not (out / "pixel1_correlation.png").exists()
    assert (out / "notes.txt").read_text() == "mine"
    stacked = tmp_path / "stacked.npy"
    np.save(stacked, np.zeros((3, 77, 100, 2), np.float32))
    with pytest.raises(ValueError, match=r"one \(H, W, 2\) flow field expected"):
        read_ground_truth(stacked)
    single = write_video(tmp_path / "one.mp4", width=96, height=72, num_frames=1)
    with pytest.raises(ValueError, match=r"1 decoded frame\(s\) \(no pair to inspect\)"):
        read_video_pair(single, 0)
