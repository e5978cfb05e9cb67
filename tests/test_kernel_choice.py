"""Per-machine kernel choice: timed once per shape, remembered, saved per machine."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.encoders import conv2d, winograd_applies
from models.kernel_choice import KERNELS, KernelChoices, conv_key
from pipeline import kernel_cache


def _counting(value: float, calls: list[str], name: str):
    def candidate() -> torch.Tensor:
        calls.append(name)
        return torch.full((1,), value)

    return candidate


def test_first_use_times_every_candidate_then_remembers_the_choice() -> None:
    choices = KernelChoices(repeats=2)
    calls: list[str] = []
    candidates = {"a": _counting(1.0, calls, "a"), "b": _counting(2.0, calls, "b")}
    first = choices.run("k", candidates)
    assert calls.count("a") == 3 and calls.count("b") == 3  # warm-up + 2 timed runs each
    name = choices.choice("k")
    assert name in ("a", "b") and first.item() == {"a": 1.0, "b": 2.0}[name]
    calls.clear()
    choices.run("k", candidates)
    assert calls == [name]  # no timing the second time
    assert choices.used() == {"k": name} and choices.timed_keys() == {"k"}


def test_the_faster_candidate_wins() -> None:
    import time

    def slow() -> torch.Tensor:
        time.sleep(0.01)
        return torch.zeros(1)

    choices = KernelChoices(repeats=2)
    choices.run("k", {"slow": slow, "fast": lambda: torch.ones(1)})
    assert choices.choice("k") == "fast"


def test_failing_candidates_are_left_out_and_unknown_choices_timed_again() -> None:
    def broken() -> torch.Tensor:
        raise RuntimeError("kernel missing")

    choices = KernelChoices({"k": "gone"}, repeats=1)
    assert choices.run("k", {"broken": broken, "ok": lambda: torch.ones(1)}).item() == 1.0
    assert choices.choice("k") == "ok"  # the loaded choice was not on offer
    with pytest.raises(RuntimeError, match="kernel missing"):
        choices.run("other", {"broken": broken})


def test_fast_conv2d_runs_the_chosen_kernel_within_the_accuracy_bound() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 20, 24, generator=generator)
    weight = torch.randn(32, 16, 3, 3, generator=generator)
    bias = torch.randn(32, generator=generator)
    with torch.inference_mode():
        out = conv2d(x, weight, bias, (1, 1), fast=True)
        again = conv2d(x, weight, bias, (1, 1), fast=True)
    reference = F.conv2d(x, weight, bias, padding=1)
    scale = reference.abs().max().item()  # NNPACK rounds to ~1e-5 of the output's range
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-4 * scale)
    assert torch.equal(again, out) or KERNELS.choice(conv_key(x, weight)) is None
    if winograd_applies(x, weight, (1, 1)):
        key = conv_key(x, weight)
        assert key.startswith("conv3x3 16->32 20x24 b2 t") and KERNELS.choice(key) in (
            "nnpack",
            "onednn",
        )


def test_choices_are_saved_per_machine_and_loaded_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MOTIONPIPE_CACHE", str(tmp_path))
    monkeypatch.setattr(kernel_cache, "KERNELS", KernelChoices(repeats=1))
    monkeypatch.setattr(kernel_cache, "_saved", set())
    kernel_cache.KERNELS.run("conv3x3 8->8 4x4 b1 t1", {"onednn": lambda: torch.ones(1)})
    assert kernel_cache.save_kernel_choices()
    assert not kernel_cache.save_kernel_choices()  # nothing new since
    path = kernel_cache.kernel_cache_path()
    assert path.parent == tmp_path / "kernels"
    content = json.loads(path.read_text())
    assert content["torch"] == torch.__version__ and "flags" in content
    assert content["decisions"] == {"conv3x3 8->8 4x4 b1 t1": "onednn"}

    fresh = KernelChoices()
    monkeypatch.setattr(kernel_cache, "KERNELS", fresh)
    assert kernel_cache.load_kernel_choices() == 1
    assert fresh.choice("conv3x3 8->8 4x4 b1 t1") == "onednn"

    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="pipeline.kernel_cache"):
        assert kernel_cache.load_kernel_choices() == 0
    assert "ignoring the kernel choices" in caplog.text
