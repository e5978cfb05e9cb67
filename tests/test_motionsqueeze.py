"""Tests of models.motionsqueeze: official parity, conventions, shapes, errors and memory."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from models.motionsqueeze import (
    MotionSqueeze,
    MotionSqueezeOutput,
    local_correlation,
    soft_argmax_displacement,
    strip_training_prefix,
)

FIXTURE_ATOL = {"displacement": 1e-5, "confidence": 1e-5, "refined": 1e-5, "reduced": 1e-4}


@pytest.fixture(scope="module")
def ms_case(parity_dir: Path) -> dict[str, Any]:
    arrays = np.load(parity_dir / "motionsqueeze_random.npz")
    case = {key: arrays[key] for key in arrays.files}
    case["state_dict"] = torch.load(parity_dir / "motionsqueeze_random.pth", weights_only=True)
    return case


def _official_module(case: dict[str, Any]) -> MotionSqueeze:
    model = MotionSqueeze(
        in_channels=case["features"].shape[1],
        num_segments=int(case["num_segments"]),
        patch_size=int(case["patch"]),
        patch_dilation=int(case["patch_dilation"]),
        sigma=float(case["sigma"]),
        temperature=float(case["temperature"]),
    )
    model.load_state_dict(case["state_dict"], strict=True)
    return model.eval()


def _naive_correlation(f1: torch.Tensor, f2: torch.Tensor, patch: int, dil: int) -> torch.Tensor:
    """Float64 loop reference: relu(n1(p) . n2(p + d)), zero outside, index (dy+r)*P+(dx+r)."""
    f1, f2 = f1.double(), f2.double()
    n1 = f1 / (f1.pow(2).sum(1, keepdim=True) + 1e-6).sqrt()
    n2 = f2 / (f2.pow(2).sum(1, keepdim=True) + 1e-6).sqrt()
    b, _, h, w = f1.shape
    r = patch // 2
    out = torch.zeros(b, patch * patch, h, w, dtype=torch.float64)
    for iy, ix in itertools.product(range(patch), range(patch)):
        dy, dx = (iy - r) * dil, (ix - r) * dil
        y0, y1 = max(0, -dy), min(h, h - dy)
        x0, x1 = max(0, -dx), min(w, w - dx)
        if y0 >= y1 or x0 >= x1:
            continue
        dots = (n1[:, :, y0:y1, x0:x1] * n2[:, :, y0 + dy : y1 + dy, x0 + dx : x1 + dx]).sum(1)
        out[:, iy * patch + ix, y0:y1, x0:x1] = dots
    return out.clamp_min(0)


# --------------------------------------------------------------------------- official parity


def test_fixture_parity(ms_case: dict[str, Any]) -> None:
    model = _official_module(ms_case)
    with torch.no_grad():
        out = model(torch.from_numpy(ms_case["features"]))
    assert isinstance(out, MotionSqueezeOutput)
    for name, atol in FIXTURE_ATOL.items():
        got = getattr(out, name)
        want = torch.from_numpy(ms_case[name])
        assert got.shape == want.shape, name
        diff = (got - want).abs().max().item()
        assert diff <= atol, f"{name}: max abs diff {diff:.3e} > {atol:.0e}"


def test_fixture_matching_from_official_reduced(ms_case: dict[str, Any]) -> None:
    """The parameter-free part alone, fed the official reduced features."""
    t = int(ms_case["num_segments"])
    reduced = torch.from_numpy(ms_case["reduced"])  # (T, R, H, W), one clip
    patch, dil = int(ms_case["patch"]), int(ms_case["patch_dilation"])
    corr = local_correlation(reduced[:-1], reduced[1:], patch, dil)
    assert corr.shape == (t - 1, patch * patch, *reduced.shape[-2:])
    displacement, confidence = soft_argmax_displacement(
        corr, patch, dil, float(ms_case["sigma"]), float(ms_case["temperature"])
    )
    for name, got in (("displacement", displacement), ("confidence", confidence)):
        diff = (got - torch.from_numpy(ms_case[name])).abs().max().item()
        assert diff <= 1e-6, f"{name}: max abs diff {diff:.3e}"


def test_fixture_content_shifts(ms_case: dict[str, Any]) -> None:
    """Sign/axis conventions: median displacement * 7 is the known content shift."""
    pixels = torch.from_numpy(ms_case["displacement"]) * 7.0
    median = pixels.flatten(2).median(dim=-1).values  # (T-1, 2) as (x, y)
    shifts = torch.from_numpy(ms_case["content_shifts_dxdy"]).float()
    inside = shifts.abs().max(dim=1).values <= 7
    torch.testing.assert_close(median[inside], shifts[inside], atol=1e-3, rtol=0)


# --------------------------------------------------------------------------- weights


def test_strip_training_prefix_loads_into_module() -> None:
    model = MotionSqueeze(in_channels=32, num_segments=3)
    for param in model.parameters():
        torch.nn.init.normal_(param)
    checkpoint: dict[str, torch.Tensor] = {
        "module.base_model.conv1.weight": torch.zeros(64, 3, 7, 7),
        "module.base_model.layer2.0.bn1.running_mean": torch.zeros(128),
        "module.new_fc.weight": torch.zeros(10, 2048),
    }
    checkpoint.update({f"module.base_model.{k}": v.clone() for k, v in model.state_dict().items()})
    stripped = strip_training_prefix(checkpoint)
    assert set(stripped) == set(model.state_dict())

    fresh = MotionSqueeze(in_channels=32, num_segments=3)
    fresh.load_state_dict(stripped, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key

    # a bare DataParallel prefix and a nested {"state_dict": ...} checkpoint work too
    bare = {f"module.{k}": v for k, v in model.state_dict().items()}
    assert set(strip_training_prefix({"epoch": 3, "state_dict": bare})) == set(stripped)
    with pytest.raises(ValueError, match="no MotionSqueeze keys"):
        strip_training_prefix({"module.base_model.fc.weight": torch.zeros(1)})


def test_official_key_names(ms_case: dict[str, Any]) -> None:
    model = MotionSqueeze(in_channels=512, num_segments=8)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ms_case["state_dict"].items()}
    assert ours == theirs


# --------------------------------------------------------------------------- conventions


def test_local_correlation_matches_naive_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    f1 = torch.randn(2, 12, 9, 11, generator=gen)
    f2 = torch.randn(2, 12, 9, 11, generator=gen)
    for patch, dil in ((7, 1), (5, 2), (15, 1)):
        got = local_correlation(f1, f2, patch, dil)
        want = _naive_correlation(f1, f2, patch, dil).float()
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("dx", "dy", "dil"), [(3, -2, 1), (-7, 5, 1), (0, 0, 1), (4, -6, 2)])
def test_translation_recovered(dx: int, dy: int, dil: int) -> None:
    gen = torch.Generator().manual_seed(1)
    f1 = torch.randn(1, 32, 30, 34, generator=gen)
    f2 = torch.roll(f1, shifts=(dy, dx), dims=(2, 3))  # f2(p + d) = f1(p)
    corr = local_correlation(f1, f2, 15, dil)
    displacement, confidence = soft_argmax_displacement(corr, 15, dil)
    pixels = displacement * 7 * dil  # (1, 2, H, W) in feature pixels
    m = 7 * dil  # margin: away from the borders and the roll wrap-around
    inner = pixels[0, :, m:-m, m:-m]
    torch.testing.assert_close(inner[0], torch.full_like(inner[0], dx), atol=1e-4, rtol=0)
    torch.testing.assert_close(inner[1], torch.full_like(inner[1], dy), atol=1e-4, rtol=0)
    assert torch.all(confidence[0, 0, m:-m, m:-m] > 0.999)


def test_module_translation_recovered() -> None:
    torch.manual_seed(2)
    model = MotionSqueeze(in_channels=48, num_segments=3).eval()
    canvas = torch.rand(1, 48, 40, 40)
    shifts = [(2, -1), (-3, 4)]  # (dx, dy) from segment t to t + 1
    frames = [canvas]
    for dx, dy in shifts:
        frames.append(torch.roll(frames[-1], shifts=(dy, dx), dims=(2, 3)))
    with torch.no_grad():
        out = model(torch.cat(frames))  # (T, C, H, W), one clip
    for t, (dx, dy) in enumerate(shifts):
        pixels = out.displacement[t, :, 8:-8, 8:-8] * 7
        assert torch.allclose(pixels[0], torch.tensor(float(dx)), atol=1e-3)
        assert torch.allclose(pixels[1], torch.tensor(float(dy)), atol=1e-3)


def test_exact_tie_picks_first_index() -> None:
    """Two equal maxima: the Gaussian is centred on the first in (dy, dx) row-major order."""
    patch = 15
    corr = torch.zeros(1, patch * patch, 2, 3)
    first = (-3 + 7) * patch + (-6 + 7)  # (dy, dx) = (-3, -6)
    second = (3 + 7) * patch + (6 + 7)  # (dy, dx) = (3, 6)
    corr[:, [first, second]] = 0.9
    displacement, confidence = soft_argmax_displacement(corr, patch)
    torch.testing.assert_close(displacement[0, 0] * 7, torch.full((2, 3), -6.0))
    torch.testing.assert_close(displacement[0, 1] * 7, torch.full((2, 3), -3.0))
    torch.testing.assert_close(confidence, torch.full((1, 1, 2, 3), 0.9))


def test_periodic_features_tie_to_first_displacement() -> None:
    """Features periodic in x (period 5): displacements -4, 1 and 6 match exactly equally."""
    gen = torch.Generator().manual_seed(3)
    base = torch.randint(0, 3, (1, 16, 12, 5), generator=gen).float()  # exact small integers
    f1 = base.repeat(1, 1, 1, 6)  # (1, 16, 12, 30)
    f2 = torch.roll(f1, shifts=1, dims=3)  # true shift dx = +1, aliases at -4 and +6
    corr = local_correlation(f1, f2, 15)
    r = 7
    tied = corr[:, [r * 15 + r - 4, r * 15 + r + 1, r * 15 + r + 6], :, 4:-7]
    assert torch.equal(tied[:, 0], tied[:, 1]) and torch.equal(tied[:, 0], tied[:, 2])
    displacement, _ = soft_argmax_displacement(corr, 15)
    pixels = displacement[0, :, :, 4:-7] * 7
    torch.testing.assert_close(pixels[0], torch.full_like(pixels[0], -4.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(pixels[1], torch.zeros_like(pixels[1]), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- shapes and errors


def test_other_width_and_segments_shapes() -> None:
    n, t, c, h, w = 2, 4, 128, 14, 12
    model = MotionSqueeze(in_channels=c, num_segments=t).eval()
    with torch.no_grad():
        out = model(torch.relu(torch.randn(n * t, c, h, w)))
    assert out.displacement.shape == (n * (t - 1), 2, h, w)
    assert out.confidence.shape == (n * (t - 1), 1, h, w)
    assert out.refined.shape == (n * t, c, h, w)
    assert out.reduced.shape == (n * t, 64, h, w)
    assert out.displacement.abs().max() <= 1.0 + 1e-6
    assert torch.all((out.confidence >= 0) & (out.confidence <= 1.0 + 1e-6))


def test_clips_are_independent() -> None:
    """TSN order: clip n only sees segments n*T .. n*T + T - 1."""
    torch.manual_seed(4)
    model = MotionSqueeze(in_channels=16, num_segments=3, reduced_channels=8).eval()
    a, b = torch.randn(3, 16, 10, 10), torch.randn(3, 16, 10, 10)
    with torch.no_grad():
        both = model(torch.cat([a, b]))
        alone = model(b)
    for name in MotionSqueezeOutput._fields:
        part = getattr(both, name)[getattr(alone, name).shape[0] :]
        torch.testing.assert_close(part, getattr(alone, name), atol=1e-6, rtol=0)


def test_gradients_flow() -> None:
    model = MotionSqueeze(in_channels=8, num_segments=2, reduced_channels=4, patch_size=5)
    features = torch.randn(2, 8, 6, 7, requires_grad=True)
    out = model(features)
    (out.refined.sum() + out.displacement.sum()).backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert model.chnl_reduction[0].weight.grad is not None


def test_invalid_inputs_raise() -> None:
    model = MotionSqueeze(in_channels=16, num_segments=4)
    with pytest.raises(ValueError, match=r"\(6, 16, 8, 8\).*num_segments=4"):
        model(torch.randn(6, 16, 8, 8))
    with pytest.raises(ValueError, match=r"\(8, 15, 8, 8\)"):
        model(torch.randn(8, 15, 8, 8))
    with pytest.raises(ValueError, match="num_segments"):
        MotionSqueeze(in_channels=16, num_segments=1)
    with pytest.raises(ValueError, match="odd"):
        MotionSqueeze(in_channels=16, num_segments=2, patch_size=4)
    with pytest.raises(ValueError, match=r"\(1, 4, 5, 5\) and \(1, 4, 5, 6\)"):
        local_correlation(torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 6))
    with pytest.raises(ValueError, match=r"\(1, 224, 3, 3\)"):
        soft_argmax_displacement(torch.randn(1, 224, 3, 3), 15)


# --------------------------------------------------------------------------- memory


class _LargestStorage(TorchFunctionMode):
    """Records the largest storage (bytes) behind any tensor a torch function returns.

    Storage, not ``numel``: strided views (e.g. the unfolded windows) allocate nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        result = func(*args, **(kwargs or {}))
        results = result if isinstance(result, (tuple, list)) else (result,)
        for item in results:
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.untyped_storage().nbytes())
        return result


def test_memory_is_not_quadratic() -> None:
    """A 56x56 map (3136 positions) never materialises a 3136 x 3136 all-pairs tensor."""
    h = w = 56
    model = MotionSqueeze(in_channels=64, num_segments=2).eval()
    features = torch.randn(2, 64, h, w)
    recorder = _LargestStorage()
    with torch.no_grad(), recorder:
        out = model(features)
    assert out.displacement.shape == (1, 2, h, w)
    window_bytes = 15 * 15 * h * w * 4  # the float32 (P*P, H, W) correlation of the one pair
    all_pairs_bytes = (h * w) ** 2 * 4
    assert recorder.largest <= window_bytes
    assert recorder.largest < all_pairs_bytes // 10
