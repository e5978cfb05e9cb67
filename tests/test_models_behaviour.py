"""Model behaviour beyond the fixtures: padding, odd sizes, batches, warm start, options."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import CheckpointError, Padder, create_model, encoders, forward_interpolate, gma
from models.corr import AllPairsCorrelation, OnDemandCorrelation
from models.flow_grid import coords_grid


@pytest.fixture(scope="module")
def frames(parity_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(parity_dir / "raft_small_demo_pair.npz")
    as_input = lambda rgb: torch.from_numpy(rgb).permute(2, 0, 1)[None].float()  # noqa: E731
    return as_input(data["image1"]), as_input(data["image2"])


@pytest.fixture(scope="module")
def small_model(parity_dir: Path):
    return create_model("raft-small", checkpoint=parity_dir / "raft_small_random.pth")


@pytest.fixture(scope="module")
def large_model(parity_dir: Path):
    return create_model("raft-large", checkpoint=parity_dir / "raft_large_random.pth")


def _official_input_padder(height: int, width: int, mode: str) -> list[int]:
    """The pads of ``InputPadder(dims, mode)`` in princeton-vl/RAFT ``core/utils/utils.py``,
    written out here from its definition (not taken from :mod:`models.padding`):
    each side is padded by ``(((n // 8) + 1) * 8 - n) % 8``; ``sintel`` splits both paddings
    (odd pixel right / bottom), any other mode splits the width padding and puts all of the
    height padding at the bottom. Order ``[left, right, top, bottom]``."""
    pad_ht = (((height // 8) + 1) * 8 - height) % 8
    pad_wd = (((width // 8) + 1) * 8 - width) % 8
    horizontal = [pad_wd // 2, pad_wd - pad_wd // 2]
    if mode == "sintel":
        return [*horizontal, pad_ht // 2, pad_ht - pad_ht // 2]
    return [*horizontal, 0, pad_ht]


def _official_unpad(x: torch.Tensor, pads: list[int]) -> torch.Tensor:
    """``InputPadder.unpad``: rows ``top : ht - bottom``, columns ``left : wd - right``."""
    ht, wd = x.shape[-2:]
    return x[..., pads[2] : ht - pads[3], pads[0] : wd - pads[1]]


@pytest.mark.parametrize("mode", ["sintel", "kitti"])
def test_padder_matches_the_official_input_padder(mode: str) -> None:
    for height in range(1, 42):
        for width in (1, 7, 8, 9, 15, 333, 1242):
            assert list(Padder(height, width, mode=mode).pads) == _official_input_padder(
                height, width, mode
            ), (height, width)
    for height, width in [(251, 333), (375, 1242), (436, 1024), (131, 203), (128, 256)]:
        padder = Padder(height, width, mode=mode)
        pads = _official_input_padder(height, width, mode)
        image = torch.rand(1, 3, height, width)
        padded = padder.pad(image)
        assert torch.equal(padded, F.pad(image, pads, mode="replicate"))
        assert padded.shape[-2] % 8 == 0 and padded.shape[-1] % 8 == 0
        assert torch.equal(padder.unpad(padded), _official_unpad(padded, pads))
        assert torch.equal(padder.unpad(padded), image)
    with pytest.raises(ValueError, match="unpads"):
        Padder(251, 333, mode=mode).unpad(torch.zeros(1, 2, 251, 333))


@pytest.mark.parametrize("mode", ["sintel", "kitti"])
def test_odd_size_equals_manual_pad_forward_crop(small_model, frames, mode) -> None:
    image1, image2 = frames[0][..., 13:144, 21:224], frames[1][..., 13:144, 21:224]  # 131x203
    out = small_model.estimate_flow(image1, image2, iters=6, pad_mode=mode)
    assert out.flow.shape == (1, 2, 131, 203)
    padder = Padder(131, 203, mode=mode)
    with torch.inference_mode():
        manual = small_model(padder.pad(image1), padder.pad(image2), iters=6)
    assert out.flow_low.shape == (1, 2, 136 // 8, 208 // 8)
    assert torch.allclose(out.flow, padder.unpad(manual.flow), atol=1e-5)
    assert torch.isfinite(out.flow).all()


@pytest.mark.parametrize("mode", ["sintel", "kitti"])
def test_frames_under_the_pyramid_minimum_are_padded_further(small_model, frames, mode) -> None:
    padder = Padder(20, 70, mode=mode, minimum=64)
    assert padder.padded_size == (64, 72)
    left, right, top, bottom = padder.pads
    assert (left, right) == (1, 1) and (top, bottom) == ((22, 22) if mode == "sintel" else (0, 44))
    assert Padder(100, 70, mode=mode, minimum=64).pads == Padder(100, 70, mode=mode).pads
    image1, image2 = frames[0][..., :20, :30], frames[1][..., :20, :30]
    out = small_model.estimate_flow(image1, image2, iters=2, pad_mode=mode)
    assert out.flow.shape == (1, 2, 20, 30) and torch.isfinite(out.flow).all()


def test_pad_modes_differ(small_model, frames) -> None:
    image1, image2 = frames[0][..., :131, :203], frames[1][..., :131, :203]
    sintel = small_model.estimate_flow(image1, image2, iters=3, pad_mode="sintel")
    kitti = small_model.estimate_flow(image1, image2, iters=3, pad_mode="kitti")
    assert (sintel.flow - kitti.flow).abs().max() > 1e-3


def test_batch_equals_single_pairs(large_model, frames) -> None:
    image1, image2 = frames[0][..., :160, :256], frames[1][..., :160, :256]
    flipped1, flipped2 = image2.flip(-1), image1.flip(-1)
    batch = large_model.estimate_flow(
        torch.cat([image1, flipped1]), torch.cat([image2, flipped2]), iters=4
    )
    single_a = large_model.estimate_flow(image1, image2, iters=4)
    single_b = large_model.estimate_flow(flipped1, flipped2, iters=4)
    assert (batch.flow[:1] - single_a.flow).abs().max() <= 1e-4
    assert (batch.flow[1:] - single_b.flow).abs().max() <= 1e-4


def test_zero_flow_init_equals_no_init_and_warm_start_runs(small_model, frames) -> None:
    image1, image2 = frames[0][..., :160, :256], frames[1][..., :160, :256]
    cold = small_model.estimate_flow(image1, image2, iters=3)
    zero = small_model.estimate_flow(
        image1, image2, iters=3, flow_init=torch.zeros_like(cold.flow_low)
    )
    assert torch.equal(cold.flow, zero.flow)
    warm = small_model.estimate_flow(
        image1, image2, iters=3, flow_init=forward_interpolate(cold.flow_low)
    )
    assert warm.flow.shape == cold.flow.shape and torch.isfinite(warm.flow).all()
    with pytest.raises(ValueError, match="1/8 grid"):
        small_model.estimate_flow(image1, image2, iters=1, flow_init=torch.zeros(1, 2, 5, 5))
    with pytest.raises(ValueError, match=r"equal shapes, got \(1, 3, 160, 256\) and \(1, 3, 159"):
        small_model.estimate_flow(image1, image2[..., :159, :], iters=1)  # the shapes given
    # a float64 initial flow (torch.from_numpy of a numpy flow) is taken as float32
    as_double = small_model.estimate_flow(
        image1, image2, iters=3, flow_init=forward_interpolate(cold.flow_low).double()
    )
    assert torch.equal(as_double.flow, warm.flow)
    broken = forward_interpolate(cold.flow_low)
    broken[0, 0, 2, 3] = float("nan")
    for corr in ("all-pairs", "on-demand"):
        with pytest.raises(ValueError, match="NaN or infinite"):
            small_model.estimate_flow(image1, image2, iters=1, flow_init=broken, corr=corr)


def test_estimate_flow_is_inference_whatever_the_mode(large_model, frames) -> None:
    # raft-large's context encoder has BatchNorm: in training mode a forward pass would use
    # batch statistics and overwrite the checkpoint's running statistics.
    image1, image2 = frames[0][..., :128, :160], frames[1][..., :128, :160]
    reference = large_model.estimate_flow(image1, image2, iters=2).flow
    weights = {name: value.clone() for name, value in large_model.state_dict().items()}
    large_model.train()
    large_model.cnet.norm1.eval()  # a mix of modes (frozen BatchNorm) is restored as it was
    try:
        flow = large_model.estimate_flow(image1, image2, iters=2).flow
        assert large_model.training and large_model.fnet.training
        assert not large_model.cnet.norm1.training and large_model.cnet.layer1[0].norm1.training
    finally:
        large_model.eval()
    assert torch.equal(flow, reference)
    assert all(
        torch.equal(value, weights[name]) for name, value in large_model.state_dict().items()
    )
    # the result is an ordinary tensor: editable in place, a constant in an autograd graph
    assert not flow.is_inference() and not flow.requires_grad
    flow[:, 1] *= -1
    scale = torch.ones((), requires_grad=True)
    (scale * flow).sum().backward()
    assert scale.grad is not None


def test_estimate_flow_warns_about_normalised_images(small_model, frames) -> None:
    image1, image2 = frames[0][..., :64, :64], frames[1][..., :64, :64]
    with pytest.warns(UserWarning, match="expects RGB in 0..255"):
        small_model.estimate_flow(image1 / 255, image2 / 255, iters=1)
    with pytest.warns(UserWarning, match="torchvision's RAFT takes -1..1"):
        small_model.estimate_flow(image1 / 127.5 - 1, image2 / 127.5 - 1, iters=1)
    black = torch.zeros_like(image1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small_model.estimate_flow(black, black, iters=1)  # a black 0..255 frame is no mistake
        small_model.estimate_flow(image1.to(torch.uint8), image2.to(torch.uint8), iters=1)


def test_empty_batch_keeps_the_fast_kernels(small_model, frames) -> None:
    ready = encoders._nnpack_ready()
    empty = frames[0][:0, :, :64, :96]
    out = small_model.estimate_flow(empty, empty, iters=1)
    assert out.flow.shape == (0, 2, 64, 96)
    assert encoders._nnpack_ready() == ready  # an empty batch is no NNPACK failure


def test_32_iterations(small_model, frames) -> None:
    image1, image2 = frames[0][..., :128, :192], frames[1][..., :128, :192]
    out12 = small_model.estimate_flow(image1, image2, iters=12)
    out32 = small_model.estimate_flow(image1, image2, iters=32)
    assert torch.isfinite(out32.flow).all()
    assert (out12.flow - out32.flow).abs().max() > 0


def test_small_inputs(small_model, frames) -> None:
    # 64..127 px: the coarsest level is a single row; the official code returns NaN here.
    out = small_model.estimate_flow(frames[0][..., :70, :90], frames[1][..., :70, :90], iters=2)
    assert out.flow.shape == (1, 2, 70, 90) and torch.isfinite(out.flow).all()
    # under 64 px: padded up to the pyramid's minimum, the flow cropped back
    out = small_model.estimate_flow(frames[0][..., :40, :90], frames[1][..., :40, :90], iters=2)
    assert out.flow.shape == (1, 2, 40, 90) and torch.isfinite(out.flow).all()


@pytest.mark.parametrize("radius", [3, 4])
def test_on_demand_lookup_equals_all_pairs_under_large_flow(radius: int) -> None:
    torch.manual_seed(0)
    f1, f2 = torch.randn(2, 32, 24, 40), torch.randn(2, 32, 24, 40)
    coords = coords_grid(2, 24, 40, torch.device("cpu"))
    # smooth flow, per-pixel noise (forces the gather fallback), and flow leaving the image
    coords = coords + torch.randn(2, 2, 24, 40) * torch.tensor([0.2, 6.0]).view(2, 1, 1, 1)
    coords[:, :, :4] += 30
    dense = AllPairsCorrelation(f1, f2, radius=radius)(coords)
    lazy = OnDemandCorrelation(f1, f2, radius=radius, tile=4, box_slack=2)(coords)
    assert dense.shape == lazy.shape == (2, 4 * (2 * radius + 1) ** 2, 24, 40)
    assert (dense - lazy).abs().max() <= 1e-5 * dense.abs().max()


def _official_lookup(pyramid: list[torch.Tensor], coords: torch.Tensor, radius: int):
    """The official lookup: grid_sample of every window point (zero padding, align_corners)."""
    b, _, h, w = coords.shape
    line = torch.linspace(-radius, radius, 2 * radius + 1)
    delta = torch.stack(torch.meshgrid(line, line, indexing="ij"), dim=-1)  # official order
    centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
    out = []
    for level, volume in enumerate(pyramid):
        h2, w2 = volume.shape[-2:]
        points = centre / 2**level + delta.view(1, 2 * radius + 1, 2 * radius + 1, 2)
        grid = torch.stack(
            [2 * points[..., 0] / (w2 - 1) - 1, 2 * points[..., 1] / (h2 - 1) - 1], -1
        )
        sampled = F.grid_sample(volume, grid, align_corners=True)
        out.append(sampled.view(b, h, w, -1))
    return torch.cat(out, dim=-1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("radius", [3, 4])
def test_all_pairs_lookup_equals_the_official_grid_sample(radius: int) -> None:
    """Fractional centres, whole-pixel centres, windows partly and wholly outside the map."""
    torch.manual_seed(1)
    f1, f2 = torch.randn(2, 16, 20, 36), torch.randn(2, 16, 20, 36)
    coords = coords_grid(2, 20, 36, torch.device("cpu"))
    coords[:, :, :10] += torch.randn(2, 2, 10, 36) * 4  # fractional, some leaving the image
    coords[:, 0, 12:14] -= 60  # far outside: all-zero windows
    coords[:, 1, 15:17] = torch.tensor([-0.5, 19.5]).view(2, 1)  # straddling the border
    corr = AllPairsCorrelation(f1, f2, radius=radius)
    expected = _official_lookup(corr.pyramid, coords, radius)
    assert torch.allclose(corr(coords), expected, atol=1e-5 * expected.abs().max().item())


def test_lookup_channel_order_is_official() -> None:
    # One feature vector matches only at (x=5, y=2): the peak must be at channel a*k + b with
    # a indexing dx and b indexing dy, the official (transposed) window order.
    f1 = torch.zeros(1, 4, 16, 16)
    f2 = torch.zeros(1, 4, 16, 16)
    f1[0, 0, 3, 3] = 1.0
    f2[0, 0, 2, 5] = 1.0
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    coords = torch.stack([xs, ys])[None]
    for corr in (AllPairsCorrelation(f1, f2), OnDemandCorrelation(f1, f2)):
        window = corr(coords)[0, :81, 3, 3]
        a, b = divmod(int(window.argmax()), 9)
        assert (a - 4, b - 4) == (2, -1)


def test_forward_interpolate_matches_scipy_griddata() -> None:
    interpolate = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(0)
    h, w = 11, 17
    flow = (rng.normal(size=(2, h, w)) * 3).astype(np.float32)
    flow[:, :2] += 30  # some points leave the grid
    x0, y0 = np.meshgrid(np.arange(w), np.arange(h))
    x1, y1 = (x0 + flow[0]).ravel(), (y0 + flow[1]).ravel()
    valid = (x1 > 0) & (x1 < w) & (y1 > 0) & (y1 < h)
    expected = np.stack(
        [
            interpolate.griddata(
                (x1[valid], y1[valid]), flow[c].ravel()[valid], (x0, y0), method="nearest"
            )
            for c in range(2)
        ]
    )
    ours = forward_interpolate(torch.from_numpy(flow)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    batched = forward_interpolate(torch.from_numpy(np.stack([flow, flow])))
    assert torch.equal(batched[0], batched[1])


def test_gma_heads_and_modes(parity_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="1 GMA attention head"):
        create_model("gma", checkpoint=parity_dir / "gma_random.pth", gma_heads=2)
    two_heads = gma(heads=2, attention_mode="position-and-content").eval()
    image = torch.rand(1, 3, 128, 128) * 255
    with torch.inference_mode():
        assert torch.isfinite(two_heads(image, image, iters=2).flow).all()
    with pytest.raises(ValueError, match="attention mode"):
        gma(attention_mode="bogus")


def test_gma_position_logits_follow_the_official_relative_embedding() -> None:
    """Official ``RelPosEmb``: the logit of query ``(x, y)`` for key ``(u, v)`` is
    ``q(x, y) . (rel_height[u - x + M - 1] + rel_width[v - y + M - 1])``, M = max_pos_size;
    ``position`` mode softmaxes exactly these (q already scaled by dim_head ** -0.5)."""
    from models.gma import Attention, RelativePositionEmbedding

    torch.manual_seed(4)
    m, d, h, w = 12, 8, 3, 5
    embedding = RelativePositionEmbedding(m, d)
    q = torch.randn(2, 2, h, w, d)
    expected = torch.empty(2, 2, h, w, h, w)
    for x in range(h):
        for y in range(w):
            for u in range(h):
                for v in range(w):
                    key = embedding.rel_height.weight[u - x + m - 1]
                    key = key + embedding.rel_width.weight[v - y + m - 1]
                    expected[:, :, x, y, u, v] = q[:, :, x, y] @ key
    with torch.no_grad():
        torch.testing.assert_close(embedding(q), expected, rtol=1e-5, atol=1e-5)

    attention = Attention(dim=6, heads=1, dim_head=d, max_pos_size=m, mode="position").eval()
    context = torch.randn(1, 6, h, w)
    with torch.no_grad():
        query = attention.to_qk(context).chunk(2, dim=1)[0]  # (1, d, h, w)
        query = query.view(1, 1, d, h, w).permute(0, 1, 3, 4, 2) * d**-0.5
        logits = attention.pos_emb(query).reshape(1, 1, h * w, h * w)
        torch.testing.assert_close(attention(context), logits.softmax(dim=-1))


def test_bf16_autocast_on_cpu_runs(small_model, frames) -> None:
    image1, image2 = frames[0][..., :128, :192], frames[1][..., :128, :192]
    fp32 = small_model.estimate_flow(image1, image2, iters=4)
    bf16 = small_model.estimate_flow(image1, image2, iters=4, autocast=torch.bfloat16)
    assert bf16.flow.dtype == torch.float32 and torch.isfinite(bf16.flow).all()
    assert (fp32.flow - bf16.flow).abs().mean() < 1.0


def test_gma_aggregation_in_row_blocks_equals_one_product() -> None:
    from models.gma import ATTEND_ROWS, _attend

    torch.manual_seed(2)
    rows = ATTEND_ROWS + 40  # two blocks, the second ragged
    attention = torch.softmax(torch.randn(2, 2, rows, rows), dim=-1)
    v = torch.randn(2, 2, 64, rows).transpose(-1, -2)  # a transposed view, as in Aggregate
    with torch.inference_mode():
        blocked, whole = _attend(attention, v), attention @ v
    # The same dot products, but BLAS may sum a block of rows in another order than the whole
    # matrix (AVX-512 MKL does): equal to float32 rounding, not necessarily bit for bit.
    torch.testing.assert_close(blocked, whole, rtol=1e-5, atol=1e-6)


def test_few_output_convolution_equals_conv2d() -> None:
    from models.update import _few_outputs_conv3x3

    torch.manual_seed(3)
    x, weight, bias = torch.randn(2, 16, 7, 11), torch.randn(2, 16, 3, 3), torch.randn(2)
    with torch.inference_mode():
        out = _few_outputs_conv3x3(x, weight, bias)
        assert torch.allclose(out, F.conv2d(x, weight, bias, padding=1), atol=1e-5)


def test_model_sizes_come_from_its_submodules_and_must_agree() -> None:
    from models import raft_small
    from models.raft import RAFT

    small, gma_model = raft_small(), gma()
    assert (small.hidden_dim, small.context_dim) == (96, 64)
    assert (small.corr_levels, small.corr_radius) == (4, 3)
    assert (gma_model.corr_levels, gma_model.corr_radius) == (4, 4)
    parts = {"fnet": small.fnet, "update_block": small.update_block}
    with pytest.raises(ValueError, match="context encoder gives 256 channels"):
        RAFT(arch="raft-small", cnet=gma_model.cnet, **parts)
    with pytest.raises(ValueError, match="GMA needs both"):
        RAFT(
            arch="gma",
            fnet=gma_model.fnet,
            cnet=gma_model.cnet,
            update_block=gma_model.update_block,
        )
