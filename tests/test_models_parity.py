"""Parity with the official RAFT / RAFT-small / GMA outputs, through the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from models import create_model
from pipeline.cli import main

ARCH_OF_FIXTURE = {"raft_large": "raft-large", "raft_small": "raft-small", "gma": "gma"}
FLOW_UP_MAX, FLOW_LOW_MAX, MEAN_MAX = 5e-3, 5e-3, 1e-4


def _pair_cases(parity_dir: Path) -> list[dict]:
    cases = json.loads((parity_dir / "cases.json").read_text())["cases"]
    return [case for case in cases if case["kind"] == "pair"]


def _case_ids() -> list[str]:
    return ["raft_large_demo_pair", "raft_small_demo_pair", "gma_frame0047_0048"]


@pytest.fixture(scope="module", params=_case_ids())
def case(request, parity_dir: Path) -> dict:
    by_file = {Path(c["file"]).stem: c for c in _pair_cases(parity_dir)}
    spec = by_file[request.param]
    data = np.load(parity_dir / spec["file"])
    model = create_model(ARCH_OF_FIXTURE[spec["model"]], checkpoint=parity_dir / spec["weights"])
    return {"spec": spec, "data": data, "model": model}


def _as_input(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float()


def _assert_close(actual: np.ndarray, expected: np.ndarray, max_tol: float, name: str) -> None:
    diff = np.abs(actual - expected)
    assert actual.shape == expected.shape, f"{name}: {actual.shape} vs {expected.shape}"
    assert diff.max() <= max_tol, f"{name}: max |diff| {diff.max():.2e} > {max_tol:.0e}"
    assert diff.mean() <= MEAN_MAX, f"{name}: mean |diff| {diff.mean():.2e} > {MEAN_MAX:.0e}"


@pytest.mark.parametrize("corr", ["all-pairs", "on-demand"])
def test_api_reproduces_official_flow(case: dict, corr: str) -> None:
    data, spec = case["data"], case["spec"]
    out = case["model"].estimate_flow(
        _as_input(data["image1"]),
        _as_input(data["image2"]),
        iters=int(data["iters"]),
        pad_mode=spec["padder_mode"],
        corr=corr,
    )
    _assert_close(out.flow[0].numpy(), data["flow_up"], FLOW_UP_MAX, "flow_up")
    _assert_close(out.flow_low[0].numpy(), data["flow_low"], FLOW_LOW_MAX, "flow_low")


def test_on_demand_equals_all_pairs(case: dict) -> None:
    data = case["data"]
    args = (_as_input(data["image1"]), _as_input(data["image2"]))
    dense = case["model"].estimate_flow(*args, iters=4, corr="all-pairs")
    lazy = case["model"].estimate_flow(*args, iters=4, corr="on-demand")
    assert (dense.flow - lazy.flow).abs().max() <= 1e-3


def test_cli_reproduces_official_flow(case: dict, parity_dir: Path, tmp_path: Path) -> None:
    spec = case["spec"]
    data = case["data"]
    images = []
    for key in ("image1", "image2"):
        path = tmp_path / f"{key}.png"
        cv2.imwrite(str(path), cv2.cvtColor(data[key], cv2.COLOR_RGB2BGR))
        images.append(str(path))
    output = tmp_path / "flow.flo"
    result = CliRunner().invoke(
        main,
        [
            "pair", *images, "-o", str(output),
            "--model", ARCH_OF_FIXTURE[spec["model"]],
            "--checkpoint", str(parity_dir / spec["weights"]),
            "--iters", str(int(data["iters"])), "--pad-mode", spec["padder_mode"],
            "--device", "cpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    flow = cv2.readOpticalFlow(str(output))  # independent reader
    _assert_close(flow.transpose(2, 0, 1), data["flow_up"], FLOW_UP_MAX, "flow_up via CLI")


def test_cli_kitti_padding_on_an_odd_size_pads_at_the_bottom(
    parity_dir: Path, tmp_path: Path
) -> None:
    """``pair --pad-mode kitti`` on a 333x251 pair equals the network run on the input padded
    the official way, written out here by hand: width 333 -> 336 split 1 | 2, height 251 ->
    256 with all 5 rows at the bottom (``InputPadder(mode='kitti')``), then cropped back."""
    data = np.load(parity_dir / "raft_large_demo_pair.npz")
    crops = [data[key][40:291, 100:433] for key in ("image1", "image2")]  # (251, 333, 3)
    images = []
    for n, rgb in enumerate(crops):
        path = tmp_path / f"{n}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append(str(path))
    weights = parity_dir / "raft_large_random.pth"
    output = tmp_path / "flow.flo"
    result = CliRunner().invoke(
        main,
        ["pair", *images, "-o", str(output), "--model", "raft-large", "--checkpoint",
         str(weights), "--pad-mode", "kitti", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    flow = cv2.readOpticalFlow(str(output)).transpose(2, 0, 1)

    model = create_model("raft-large", checkpoint=weights)
    padded = [
        torch.nn.functional.pad(_as_input(rgb), [1, 2, 0, 5], mode="replicate") for rgb in crops
    ]
    assert padded[0].shape[-2:] == (256, 336)
    with torch.inference_mode():
        manual = model(*padded, iters=12).flow[0, :, 0:251, 1:334].numpy()
    _assert_close(flow, manual, FLOW_UP_MAX, "kitti-padded flow via CLI")
