"""The fast kernels (NNPACK, folded BatchNorm, hoisted GRU, Winograd GRU) against the official
operations, and the fallback when the private NNPACK op fails."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import models.encoders as encoders
from models import RAFT, create_model
from models.kernel_choice import KernelChoices

WEIGHTS = {
    "raft-large": "raft_large_random.pth",
    "raft-small": "raft_small_random.pth",
    "gma": "gma_random.pth",
}
ITERS = 12
# Measured on the 2-core AVX2 test machine at 128x160, 12 iterations: max |fast - reference|
# is 2.3e-5 px (raft-large), 1.4e-4 px (raft-small, flows up to 29 px) and 2.0e-5 px (gma);
# NNPACK's F(6x6, 3x3) rounding (~1e-5 relative) is most of it (without it: <= 3.1e-5 px).
MAX_DIFF_PX = 2e-4
MEAN_DIFF_PX = 2e-5


def _crop(path: Path) -> torch.Tensor:
    """A 128x160 crop of a parity frame as ``(1, 3, 128, 160)`` float 0..255 RGB."""
    rgb = np.asarray(Image.open(path).convert("RGB"))[200:328, 400:560]
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float()


@pytest.fixture(scope="module")
def pair(parity_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    return _crop(parity_dir / "frame_0047.png"), _crop(parity_dir / "frame_0048.png")


@pytest.fixture(scope="module", params=sorted(WEIGHTS))
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(arch: str, parity_dir: Path) -> RAFT:
    return create_model(arch, checkpoint=parity_dir / WEIGHTS[arch])


@pytest.fixture(scope="module")
def reference_flow(model: RAFT, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    model.set_fast_kernels(False)
    try:
        return _flow(model, pair)
    finally:
        model.set_fast_kernels(True)


@pytest.fixture
def fresh_nnpack_state(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """NNPACK's process-wide state, emptied for one test and put back afterwards, with an
    empty kernel-choice table: choices loaded or timed earlier in the process (e.g. from this
    machine's kernel cache by a ``run`` test) may have settled on oneDNN for these shapes, and
    then NNPACK would never be offered."""
    state: dict[str, bool] = {}
    monkeypatch.setattr(encoders, "_NNPACK_STATE", state)
    monkeypatch.setattr(encoders, "KERNELS", KernelChoices())
    return state


def _flow(model: RAFT, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model.estimate_flow(*pair, iters=ITERS).flow


def _assert_same_flow(flow: torch.Tensor, reference: torch.Tensor) -> None:
    difference = (flow - reference).abs()
    assert flow.shape == reference.shape == (1, 2, 128, 160)
    assert difference.max().item() <= MAX_DIFF_PX, f"max |diff| {difference.max().item():.2e}"
    assert difference.mean().item() <= MEAN_DIFF_PX, f"mean |diff| {difference.mean().item():.2e}"


def test_fast_kernels_equal_the_official_operations(
    model: RAFT, pair: tuple[torch.Tensor, torch.Tensor], reference_flow: torch.Tensor
) -> None:
    _assert_same_flow(_flow(model.set_fast_kernels(True), pair), reference_flow)


@pytest.mark.parametrize("arch", ["raft-small"], indirect=True)  # NNPACK in encoders and GRU
@pytest.mark.parametrize("failure", ["missing", AttributeError, TypeError, RuntimeError])
def test_without_a_working_nnpack_op_the_flow_stays_the_same(
    failure: str | type[Exception],
    model: RAFT,
    pair: tuple[torch.Tensor, torch.Tensor],
    reference_flow: torch.Tensor,
    fresh_nnpack_state: dict[str, bool],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A build without the private op uses the public convolution quietly; an op that raises
    anything is given up after its first call, with one warning."""
    calls = []

    def broken(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(args)
        raise failure("simulated failure of the private op")

    if failure == "missing":
        monkeypatch.delattr(torch, "_nnpack_spatial_convolution", raising=False)
    else:
        fresh_nnpack_state["ready"] = True  # as on a build where NNPACK is present
        monkeypatch.setattr(torch, "_nnpack_spatial_convolution", broken, raising=False)
    with caplog.at_level(logging.WARNING, logger=encoders.__name__):
        flow = _flow(model, pair)
        again = _flow(model, pair)
    warnings = [r.getMessage() for r in caplog.records if r.name == encoders.__name__]
    if failure == "missing":
        assert calls == [] and warnings == []  # nothing failed
    else:
        assert len(calls) == 1  # never retried after the first failure
        assert len(warnings) == 1 and failure.__name__ in warnings[0]
    assert fresh_nnpack_state["ready"] is False
    _assert_same_flow(flow, reference_flow)
    assert torch.equal(flow, again)
