"""Variational refinement after a network (``flow.refine``): when it applies, what it does."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from models.weights import WEIGHTS
from pipeline.cli import main
from pipeline.config import ConfigError, load_config
from stages.flow_refine import refine_flow, refine_flows, resolve_refine
from stages.settings import FlowConfig

SHIPPED = next(spec for spec in WEIGHTS.values() if spec.bundled)


def _shifted_pair(dx: float, dy: float, size: tuple[int, int] = (96, 128)):
    """A smooth random texture and the same texture moved by (dx, dy) px: exact flow (dx, dy)."""
    rng = np.random.default_rng(5)
    h, w = size
    texture = cv2.GaussianBlur(rng.random((h + 16, w + 16, 3), dtype=np.float32), (0, 0), 2.0)
    texture = (255 * (texture - texture.min()) / np.ptp(texture)).astype(np.uint8)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32) + 8, np.arange(h, dtype=np.float32) + 8)
    image1 = cv2.remap(texture, gx, gy, cv2.INTER_CUBIC)
    image2 = cv2.remap(texture, gx - dx, gy - dy, cv2.INTER_CUBIC)
    return image1, image2


def test_auto_follows_the_registry_entry() -> None:
    assert resolve_refine("auto", SHIPPED.arch, SHIPPED.name) == "variational"
    assert resolve_refine("auto", "raft-large", "raft-things") == "none"
    assert resolve_refine("auto", "raft-large", "/some/file.pth") == "none"
    assert resolve_refine("auto", "raft-large", None) == "none"
    assert resolve_refine("variational", "raft-large", "raft-things") == "variational"
    assert resolve_refine("none", SHIPPED.arch, SHIPPED.name) == "none"
    # DIS ends with the same step already
    assert resolve_refine("variational", "dis", None) == "none"
    with pytest.raises(ValueError, match="refine must be one of"):
        resolve_refine("tv-l1", "raft-large", None)


def test_config_rejects_an_unknown_refinement() -> None:
    with pytest.raises(ValueError, match=r"flow\.refine must be one of"):
        FlowConfig(refine="smooth")
    with pytest.raises(ConfigError, match=r"flow\.refine"):
        load_config(None, {"flow.refine": "smooth"})


def test_refinement_pulls_a_coarse_flow_to_the_true_sub_pixel_motion() -> None:
    image1, image2 = _shifted_pair(1.4, -0.6)
    coarse = np.zeros((*image1.shape[:2], 2), np.float32)
    coarse[..., 0], coarse[..., 1] = 1.0, -1.0  # what a 1/8-grid estimate might round to
    refined = refine_flow(coarse, image1, image2)
    assert refined.dtype == np.float32 and refined.shape == coarse.shape
    inner = (slice(8, -8), slice(8, -8))
    truth = np.array([1.4, -0.6], np.float32)
    before = np.linalg.norm(coarse[inner] - truth, axis=-1).mean()
    after = np.linalg.norm(refined[inner] - truth, axis=-1).mean()
    # a few cheap iterations from the given flow: a step toward the truth, not all the way
    assert after < 0.95 * before, (before, after)
    mean = refined[inner].reshape(-1, 2).mean(axis=0)
    assert mean[0] > 1.0 and mean[1] > -1.0, mean
    assert np.array_equal(coarse[..., 0], np.ones_like(coarse[..., 0]))  # the input is kept
    with pytest.raises(ValueError, match="do not match"):
        refine_flow(coarse[:-1], image1, image2)


def test_batched_refinement_equals_pair_by_pair() -> None:
    image1, image2 = _shifted_pair(0.7, 0.3)
    frames = np.stack([image1, image2, image1])
    flows = torch.zeros(2, 2, *image1.shape[:2])
    flows[1] -= 0.5
    refined = refine_flows(flows, frames, [(0, 1), (2, 1)])
    assert refined.shape == flows.shape and refined.dtype == torch.float32
    for n, (a, b) in enumerate([(0, 1), (2, 1)]):
        one = refine_flow(flows[n].permute(1, 2, 0).numpy(), frames[a], frames[b])
        assert np.array_equal(refined[n].permute(1, 2, 0).numpy(), one)


def test_run_applies_and_records_the_resolved_refinement(tmp_path: Path) -> None:
    from tests.media import write_video

    video = tmp_path / "clip.mp4"
    write_video(video, num_frames=3, width=96, height=64)
    flows = {}
    for refine in ("auto", "none"):
        out = tmp_path / refine
        # the --refine flag and the config key it overrides
        how = ["--set", f"flow.refine={refine}"] if refine == "auto" else ["--refine", refine]
        args = ["run", str(video), "-o", str(out), "--model", "raft-small-convex", "--iters", "2",
                *how]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        meta = json.loads((out / "clip" / "meta.json").read_text())
        assert meta["refine"] == ("variational" if refine == "auto" else "none")
        flows[refine] = np.load(out / "clip" / "flow.npy")
    assert flows["auto"].shape == flows["none"].shape
    assert np.abs(flows["auto"] - flows["none"]).max() > 0.01


def test_pair_refines_as_asked(tmp_path: Path) -> None:
    from stages.flow_io import read_flo, write_image

    image1, image2 = _shifted_pair(1.4, -0.6, size=(64, 96))
    write_image(tmp_path / "a.png", image1)
    write_image(tmp_path / "b.png", image2)
    flows = {}
    for refine in ("none", "variational"):
        output = tmp_path / f"{refine}.flo"
        args = ["pair", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(output),
                "--model", "raft-small-convex", "--iters", "2", "--refine", refine]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        flows[refine] = read_flo(output)
    expected = refine_flow(flows["none"], image1, image2)
    assert np.abs(flows["variational"] - expected).max() < 1e-4


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 5), (5, 1)])
def test_refining_fields_with_a_side_of_one_pixel(height: int, width: int) -> None:
    """numpy calls such views contiguous whatever their strides, OpenCV does not: the refiner
    gets a real copy (a 1x1 video used to fail with an OpenCV layout error)."""
    flows = torch.full((2, 2, height, width), 0.5)
    frames = np.random.default_rng(0).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    refined = refine_flows(flows, frames, [(0, 1), (1, 2)])
    assert refined.shape == flows.shape and bool(torch.isfinite(refined).all())
