"""The chunked flow stage: borders, frame reuse, backward flow, warm start, DIS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import Padder, create_model, forward_interpolate
from stages.decode import DecodedFrame, iter_chunks
from stages.flow import FlowStage
from tests.media import pattern_frame

HEIGHT, WIDTH = 72, 96


def _frames(count: int) -> list[DecodedFrame]:
    return [
        DecodedFrame(index=i, pts=i / 25, rgb=pattern_frame(i, WIDTH, HEIGHT)) for i in range(count)
    ]


@pytest.fixture(scope="module")
def network(parity_dir: Path):
    return create_model("raft-small", checkpoint=parity_dir / "raft_small_random.pth")


def _run(stage: FlowStage, frames: list[DecodedFrame], chunk_size: int) -> dict[str, np.ndarray]:
    stage.setup()
    out: dict[str, list] = {"pairs": [], "flow_fw": [], "flow_bw": [], "features": []}
    for chunk in iter_chunks(frames, "clip", chunk_size, overlap=stage.config.gap):
        stage.process(chunk)
        for key in out:
            if key in chunk.artifacts:
                out[key].append(np.asarray(chunk.artifacts[key]))
    return {k: np.concatenate(v) for k, v in out.items() if v}


@pytest.mark.parametrize(
    ("count", "chunk_size", "gap", "batch_pairs", "cpu_workers"),
    [
        (11, 4, 1, 1, 1), (11, 4, 1, 1, 2), (10, 3, 2, 1, 2), (10, 3, 2, 1, 3), (3, 8, 1, 1, 2),
        (11, 5, 1, 3, 1), (11, 5, 1, 3, 2), (9, 4, 2, 2, 2),
    ],
)  # fmt: skip
def test_chunked_equals_pair_by_pair(
    network, count, chunk_size, gap, batch_pairs, cpu_workers
) -> None:
    """Every pair once, in order, equal to the pair-by-pair API, with frames and pairs computed
    one at a time or side by side on ``cpu_workers``."""
    frames = _frames(count)
    stage = FlowStage(
        model="raft-small", network=network, iters=3, gap=gap, backward=True,
        batch_pairs=batch_pairs, cpu_workers=cpu_workers,
    )  # fmt: skip
    result = _run(stage, frames, chunk_size)
    expected_pairs = [(t, t + gap) for t in range(count - gap)]
    assert [tuple(p) for p in result["pairs"]] == expected_pairs  # none lost, none duplicated
    for n, (a, b) in enumerate(expected_pairs):
        image = lambda i: torch.from_numpy(frames[i].rgb).permute(2, 0, 1)[None].float()  # noqa: E731
        fw = network.estimate_flow(image(a), image(b), iters=3).flow[0].numpy()
        bw = network.estimate_flow(image(b), image(a), iters=3).flow[0].numpy()
        assert np.abs(result["flow_fw"][n] - fw).max() <= 1e-4
        assert np.abs(result["flow_bw"][n] - bw).max() <= 1e-4


def test_each_frame_is_encoded_once(network, monkeypatch) -> None:
    calls = []
    original = network.encode_features

    def counting(images, **kwargs):
        calls.append(images.shape[0])
        return original(images, **kwargs)

    monkeypatch.setattr(network, "encode_features", counting)
    stage = FlowStage(model="raft-small", network=network, iters=1, keep_features=True)
    result = _run(stage, _frames(9), chunk_size=3)
    assert sum(calls) == 9
    # features of overlapping frames are delivered with every chunk that holds them
    assert result["features"].shape[0] == 9 + 2


@pytest.mark.parametrize(("height", "width", "cells"), [(48, 64, (6, 8)), (50, 70, (8, 9))])
def test_encoder_maps_leave_out_cells_of_padding_alone(network, height, width, cells) -> None:
    """Frames under the pyramid's 64 px minimum are padded by more than a cell: those cells
    carry no image and are not handed to the feature stage (48 px: 8 px of padding above and
    below; 50 px: 7 px each side, which still holds image)."""
    frames = [DecodedFrame(index=i, pts=i / 25, rgb=pattern_frame(i, width, height))
              for i in range(3)]  # fmt: skip
    stage = FlowStage(model="raft-small", network=network, iters=1, keep_features=True)
    assert _run(stage, frames, chunk_size=3)["features"].shape[-2:] == cells


@pytest.mark.parametrize(("batch_pairs", "cpu_workers"), [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_gma_contexts_are_computed_once_and_released(
    parity_dir: Path, monkeypatch, batch_pairs: int, cpu_workers: int
) -> None:
    """GMA's per-frame context holds an (h*w)^2 attention matrix: each source frame's context is
    computed once (also across chunk borders), at most a batch of them per worker is alive at a
    time, and a single pair's context is used as stored, not copied."""
    gma = create_model("gma", checkpoint=parity_dir / "gma_random.pth")
    frames = _frames(9)
    stage = FlowStage(
        model="gma", network=gma, iters=2, backward=True, batch_pairs=batch_pairs,
        cpu_workers=cpu_workers,
    )  # fmt: skip
    stage.setup()
    computed: list[int] = []
    alive: list[int] = []
    copied: list[bool] = []
    original_context, original_refine = gma.encode_context, gma.refine

    def counting_context(images, **kwargs):
        computed.append(images.shape[0])
        return original_context(images, **kwargs)

    def watching_refine(*args, **kwargs):
        alive.append(len(stage._carry.contexts))
        stored = [c.attention for c in stage._carry.contexts.values()]
        copied.append(not any(args[2].attention is a for a in stored))
        return original_refine(*args, **kwargs)

    monkeypatch.setattr(gma, "encode_context", counting_context)
    monkeypatch.setattr(gma, "refine", watching_refine)
    result = _run(stage, frames, chunk_size=4)
    assert sum(computed) == 9  # every frame is the source of a forward or a backward pair
    # a window per worker, plus the frame carried to the next chunk
    assert max(alive) <= cpu_workers * batch_pairs + 1
    if batch_pairs == 1:
        assert not any(copied)
    image = lambda i: torch.from_numpy(frames[i].rgb).permute(2, 0, 1)[None].float()  # noqa: E731
    for n in range(8):
        fw = gma.estimate_flow(image(n), image(n + 1), iters=2).flow[0].numpy()
        bw = gma.estimate_flow(image(n + 1), image(n), iters=2).flow[0].numpy()
        assert np.abs(result["flow_fw"][n] - fw).max() <= 1e-4
        assert np.abs(result["flow_bw"][n] - bw).max() <= 1e-4


def test_warm_start_uses_previous_pair(network) -> None:
    frames = _frames(4)
    stage = FlowStage(model="raft-small", network=network, iters=2, warm_start=True)
    result = _run(stage, frames, chunk_size=2)
    image = lambda i: torch.from_numpy(frames[i].rgb).permute(2, 0, 1)[None].float()  # noqa: E731
    previous = None
    for n in range(3):
        init = None if previous is None else forward_interpolate(previous)
        out = network.estimate_flow(image(n), image(n + 1), iters=2, flow_init=init)
        previous = out.flow_low
        assert np.abs(result["flow_fw"][n] - out.flow[0].numpy()).max() <= 1e-4


def test_dis_backend_recovers_translation() -> None:
    frames = _frames(5)
    stage = FlowStage(model="dis", backward=True)
    result = _run(stage, frames, chunk_size=2)
    assert result["flow_fw"].shape == (4, 2, HEIGHT, WIDTH)
    centre = result["flow_fw"][:, :, 24:-12, 12:-12]  # below the frame-index band
    assert np.allclose(np.median(centre, axis=(2, 3)), [[2.0, 1.0]], atol=0.25)  # pattern velocity
    back = np.median(result["flow_bw"][:, :, 24:-12, 12:-12], axis=(2, 3))
    assert np.allclose(back, [[-2.0, -1.0]], atol=0.25)


def test_single_frame_video_gives_no_pairs(network) -> None:
    stage = FlowStage(model="raft-small", network=network, iters=1)
    result = _run(stage, _frames(1), chunk_size=4)
    assert result["pairs"].shape == (0, 2)
    assert result["flow_fw"].shape == (0, 2, HEIGHT, WIDTH)


def test_side_by_side_steps_follow_the_memory_budget_and_warm_start(network) -> None:
    """Frames and pairs go side by side only where one encoder pass or one refinement per
    worker fits the memory budget; a warm-started refinement is a chain, one pair at a time."""
    stage = FlowStage(model="raft-large", network=network, cpu_workers=2)
    stage.setup()
    try:
        workers = stage._workers
        sintel = Padder(436, 1024)  # 0.46 GB of encoder activations per frame
        assert stage._side_by_side(sintel, "all-pairs", batch_pairs=1) == (workers, workers)
        full_hd = Padder(1080, 1920)  # 2.1 GB per frame: one at a time, all threads
        assert stage._side_by_side(full_hd, "on-demand", batch_pairs=1) == (None, None)
        hd = Padder(720, 1280)  # all-pairs pyramid and activations: 1.3 GB per pair
        assert stage._side_by_side(hd, "all-pairs", batch_pairs=1) == (None, None)
        roomy = FlowStage(model="raft-large", network=network, cpu_workers=2,
                          memory_budget_mb=3000)  # fmt: skip
        roomy._workers = workers
        assert roomy._side_by_side(hd, "all-pairs", batch_pairs=1) == (workers, workers)
    finally:
        stage.teardown()
    chain = FlowStage(model="raft-large", network=network, cpu_workers=2, warm_start=True)
    chain.setup()
    assert chain._side_by_side(Padder(436, 1024), "all-pairs", batch_pairs=1)[1] is None
    chain.teardown()


def test_automatic_workers_depend_on_device_and_threads(network, monkeypatch) -> None:
    stage = FlowStage(model="raft-small", network=network)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert stage.resolved_cpu_workers() == 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert stage.resolved_cpu_workers() == 1
    assert FlowStage(model="dis").resolved_cpu_workers() == 1
    assert FlowStage(model="raft-small", device="cuda").resolved_cpu_workers() == 1
    with pytest.raises(ValueError, match="cpu_workers"):
        FlowStage(model="raft-small", cpu_workers=0)


def test_a_failing_frame_fails_the_chunk_with_its_error(network, monkeypatch) -> None:
    stage = FlowStage(model="raft-small", network=network, iters=1, cpu_workers=2)
    original = network.encode_features
    calls: list[int] = []

    def broken_on_third(images, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("encoder failed on frame 3")
        return original(images, **kwargs)

    monkeypatch.setattr(network, "encode_features", broken_on_third)
    with pytest.raises(RuntimeError, match="encoder failed on frame 3"):
        _run(stage, _frames(6), chunk_size=8)
    stage.teardown()


def test_auto_correlation_is_on_demand_above_the_threshold_for_every_command() -> None:
    """``flow.corr: auto`` (run) and the estimators of ``pair`` / ``evaluate`` share one rule."""
    from pipeline.estimators import NetworkEstimator
    from stages.settings import correlation_kind

    assert correlation_kind("auto", 1001, 1000) == "on-demand"
    assert correlation_kind("auto", 1000, 1000) == "all-pairs"
    assert correlation_kind("all-pairs", 10**9, 0) == "all-pairs"
    torch.manual_seed(0)
    network = create_model("raft-small").eval()
    image1, image2 = pattern_frame(0, 64, 48), pattern_frame(1, 64, 48)

    def flow(**options) -> np.ndarray:
        return NetworkEstimator(network, iters=2, **options)(image1, image2)

    assert np.array_equal(flow(corr="auto", on_demand_above_pixels=0), flow(corr="on-demand"))
    assert np.array_equal(flow(corr="auto"), flow(corr="all-pairs"))  # 64x64 padded: small
