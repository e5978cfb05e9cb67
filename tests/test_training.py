"""Training: the training-mode forward, the loss, the generator and the train command."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from models import Padder, create_model, raft_small_convex
from models.losses import flow_metrics, sequence_loss
from models.weights import BUNDLED_DIR, infer_architecture, load_checkpoint
from pipeline.cli import main
from pipeline.config import ConfigError
from pipeline.train_config import load_train_config
from pipeline.training import freeze_batchnorm, validate
from pipeline.training_log import RunLog, read_log
from stages.training.synthetic import LayeredPairConfig, MotionRange, generate_pair
from stages.training.textures import PROCEDURAL_KINDS, TexturePool, procedural_texture
from tests.conftest import REPO_ROOT


def _rgb(path: Path) -> torch.Tensor:
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


def test_flow_predictions_match_the_official_training_mode_output(
    parity_dir: Path, inspect_dir: Path
) -> None:
    """Every iteration's upsampled flow equals the list the official RAFT returns."""
    fixture = np.load(inspect_dir / "raft_large_frame0047_0048.npz")
    model = create_model("raft-large", checkpoint=parity_dir / "raft_large_random.pth")
    image1, image2 = _rgb(parity_dir / "frame_0047.png"), _rgb(parity_dir / "frame_0048.png")
    padder = Padder(436, 1024)
    with torch.inference_mode():
        predictions = model.flow_predictions(
            padder.pad(image1), padder.pad(image2), iters=int(fixture["iters"])
        )
    ours = torch.stack([padder.unpad(p)[0] for p in predictions]).permute(0, 2, 3, 1).numpy()
    expected = fixture["flow_predictions"]
    assert ours.shape == expected.shape
    difference = np.abs(ours - expected)
    assert difference.max() < 5e-3
    assert difference.mean() < 1e-4


def test_last_prediction_is_the_inference_flow_and_bilinear_shortcut_keeps_it() -> None:
    torch.manual_seed(0)
    model = raft_small_convex().eval()
    image1, image2 = torch.rand(1, 3, 128, 128) * 255, torch.rand(1, 3, 128, 128) * 255
    with torch.inference_mode():
        full = model.flow_predictions(image1, image2, iters=3)
        cheap = model.flow_predictions(image1, image2, iters=3, convex_every_iteration=False)
        final = model(image1, image2, iters=3).flow
    assert len(full) == len(cheap) == 3
    torch.testing.assert_close(full[-1], final, atol=1e-4, rtol=0)
    torch.testing.assert_close(cheap[-1], full[-1], atol=1e-5, rtol=0)
    assert not torch.allclose(cheap[0], full[0])  # earlier iterations upsampled bilinearly


def test_sequence_loss_weights_iterations_and_masks_invalid_and_long_vectors() -> None:
    gt = torch.zeros(1, 2, 2, 2)
    gt[0, 0, 0, 0] = 500.0  # longer than max_flow: not counted
    valid = torch.ones(1, 2, 2)
    valid[0, 1, 1] = 0
    first = torch.ones(1, 2, 2, 2)  # |error| 1 in both channels everywhere
    second = 2 * torch.ones(1, 2, 2, 2)
    loss = sequence_loss([first, second], gt, valid, gamma=0.5)
    # Counted: 2 of 4 pixels (2 channels each) over 8 entries: mean = 0.5 * |error|.
    assert loss.item() == pytest.approx(0.5 * 0.5 * 1 + 1.0 * 0.5 * 2)
    metrics = flow_metrics(second, gt, valid)
    assert metrics["epe"] == pytest.approx(2 * np.sqrt(2))
    assert metrics["1px"] == 0.0


def test_training_steps_lower_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    pool = TexturePool(seed=3, pool_size=4, size=128)
    config = LayeredPairConfig(height=64, width=64, sprites=(1, 2))
    pairs = [generate_pair(rng, pool, config) for _ in range(2)]
    image1 = torch.stack([torch.from_numpy(p.image1).permute(2, 0, 1).float() for p in pairs])
    image2 = torch.stack([torch.from_numpy(p.image2).permute(2, 0, 1).float() for p in pairs])
    flow = torch.stack([torch.from_numpy(p.flow).permute(2, 0, 1) for p in pairs])
    valid = torch.ones(2, 64, 64)
    model = raft_small_convex().set_fast_kernels(False).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4)
    losses = []
    for _ in range(12):
        loss = sequence_loss(model.flow_predictions(image1, image2, iters=3), flow, valid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_generated_flow_is_exact_and_pairs_are_reproducible() -> None:
    pool = TexturePool(seed=5, pool_size=4, size=128)
    config = LayeredPairConfig(height=96, width=128, sprites=(2, 4), noise=0.0)
    pair = generate_pair(np.random.default_rng(11), pool, config)
    again = generate_pair(np.random.default_rng(11), TexturePool(seed=5, pool_size=4, size=128),
                          config)  # fmt: skip
    np.testing.assert_array_equal(pair.image1, again.image1)
    np.testing.assert_array_equal(pair.flow, again.flow)
    assert pair.image1.shape == (96, 128, 3) and pair.image1.dtype == np.uint8
    assert pair.flow.shape == (96, 128, 2) and pair.flow.dtype == np.float32
    # Warping frame 2 back with the ground truth reproduces frame 1 where nothing occludes.
    ys, xs = np.mgrid[0:96, 0:128].astype(np.float32)
    back = cv2.remap(pair.image2.astype(np.float32), xs + pair.flow[..., 0],
                     ys + pair.flow[..., 1], cv2.INTER_LINEAR)  # fmt: skip
    visible = ~pair.occluded
    assert visible.mean() > 0.3
    error = np.abs(back - pair.image1.astype(np.float32))[visible]
    assert np.median(error) < 2.0
    # A wrong flow (off by one pixel) warps much worse: the check above has teeth.
    shifted = cv2.remap(pair.image2.astype(np.float32), xs + pair.flow[..., 0] + 1,
                        ys + pair.flow[..., 1], cv2.INTER_LINEAR)  # fmt: skip
    assert (
        np.abs(shifted - pair.image1)[visible].mean() > np.abs(back - pair.image1)[visible].mean()
    )


def test_pure_translation_gives_constant_flow() -> None:
    still = (MotionRange(1.0, 3.0, 3.0),)
    config = LayeredPairConfig(
        height=64, width=64, sprites=(0, 0), background_motion=still, background_rotation=0,
        background_zoom=0, background_shear=0, perspective=0, nonrigid=0, noise=0,
    )  # fmt: skip
    pair = generate_pair(np.random.default_rng(0), TexturePool(size=96, pool_size=2), config)
    magnitude = np.linalg.norm(pair.flow, axis=-1)
    np.testing.assert_allclose(magnitude, 3.0, atol=1e-4)
    assert np.ptp(pair.flow[..., 0]) < 1e-4 and np.ptp(pair.flow[..., 1]) < 1e-4


def test_camouflaged_sprites_share_the_background_texture_and_move_on_their_own() -> None:
    """camouflage=1: the sprite is another placement of the background's texture, so its
    colours match the background's while its motion differs; camouflage=0 (the default)
    draws nothing extra, so the pairs of earlier configs stay the same."""
    still = (MotionRange(1.0, 0.0, 0.0),)
    moving = (MotionRange(1.0, 6.0, 6.0),)
    common = dict(height=96, width=96, sprites=(1, 1), sprite_size=(0.5, 0.5), nonrigid=0,
                  background_motion=still, sprite_motion=moving, flat_sprites=0, noise=0)  # fmt: skip
    pool = TexturePool(seed=3, pool_size=8, size=256)
    pair = generate_pair(np.random.default_rng(4), pool, LayeredPairConfig(**common, camouflage=1))
    moved = np.linalg.norm(pair.flow, axis=-1) > 3
    assert 0.05 < moved.mean() < 0.6  # the sprite, and it moves
    inside, outside = pair.image1[moved].astype(float), pair.image1[~moved].astype(float)
    assert np.abs(inside.mean(0) - outside.mean(0)).max() < 25  # same texture, same colours
    plain = LayeredPairConfig(**common)
    assert plain.camouflage == 0
    np.testing.assert_array_equal(
        generate_pair(np.random.default_rng(4), pool, plain).image1,
        generate_pair(
            np.random.default_rng(4), pool, LayeredPairConfig(**common, camouflage=0)
        ).image1,
    )
    with pytest.raises(ValueError, match="camouflage"):
        LayeredPairConfig(camouflage=1.5)


@pytest.mark.parametrize("kind", PROCEDURAL_KINDS)
def test_procedural_textures_are_deterministic_rgb(kind: str) -> None:
    a = procedural_texture(np.random.default_rng(1), 64, kind)
    b = procedural_texture(np.random.default_rng(1), 64, kind)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="crop"):
        load_train_config(None, {"crop": [100, 64]})
    with pytest.raises(ConfigError, match="unknown key"):
        load_train_config(None, {"synthetic.wobble": 1})
    with pytest.raises(ConfigError, match="synthetic"):
        load_train_config(None, {"synthetic.sprites": [3, 1]})
    with pytest.raises(ConfigError, match="model"):
        load_train_config(None, {"model": "flownet"})
    with pytest.raises(ConfigError, match="max_flow must be > 0"):  # all pixels ignored: loss 0
        load_train_config(None, {"max_flow": -5})
    with pytest.raises(ConfigError, match="seed must be >= 0"):
        load_train_config(None, {"seed": -1})
    with pytest.raises(ConfigError, match=r"validation\.seed must be >= 0"):
        load_train_config(None, {"validation.seed": -1})
    with pytest.raises(ConfigError, match=r"data\.root \(/x\) is for data sets read from disk"):
        load_train_config(None, {"data.0.root": "/x"})  # the default source is the generator
    config = load_train_config(None, {"data.0.kind": "chairs", "data.0.root": "/x"})  # no file
    assert (config.data[0].kind, config.data[0].root) == ("chairs", "/x")


def _tiny_config(path: Path, steps: int) -> Path:
    config = {
        "model": "raft-small-convex",
        "steps": steps,
        "batch_size": 2,
        "crop": [64, 64],
        "iters": 2,
        "threads": 1,
        "workers": 0,
        "precision": "fp32",
        "log_every": 1,
        "checkpoint_every": 2,
        "textures": {"procedural_size": 64},
        "synthetic": {"sprites": [0, 2]},
        "validation": {"every": 2, "pairs": 1, "iters": 2, "sets": ["layered"]},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_command_resumes_exactly_and_writes_official_checkpoints(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path / "tiny.yaml", steps=4)
    runner = CliRunner()
    straight = tmp_path / "straight"
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the config trains with 1
    try:
        result = runner.invoke(main, ["train", "--config", str(config), "-o", str(straight)])
        assert torch.get_num_threads() == 2  # the caller's count is back
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    pieces = tmp_path / "pieces"
    first = runner.invoke(main, ["train", "--config", str(config), "-o", str(pieces),
                                 "--stop-after", "2"])  # fmt: skip
    assert first.exit_code == 0, first.output
    assert "stopped at step 2" in first.output
    assert not (pieces / "model.pth").exists()
    again = runner.invoke(main, ["train", "--config", str(config), "-o", str(pieces)])
    assert again.exit_code != 0 and "--resume" in again.output
    # as the message says: --resume alone continues with the run's own config.yaml
    assert f"continue with --resume -o {pieces}" in first.output
    second = runner.invoke(main, ["train", "-o", str(pieces), "--resume"])
    assert second.exit_code == 0, second.output

    a = torch.load(straight / "model.pth", weights_only=True)
    b = torch.load(pieces / "model.pth", weights_only=True)
    assert list(a) == list(b) and all(k.startswith("module.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
    assert infer_architecture(load_checkpoint(straight / "model.pth")) == "raft-small-convex"
    model = create_model("raft-small-convex", checkpoint=straight / "model.pth")
    assert model.checkpoint_info is not None
    evaluated = runner.invoke(main, ["evaluate", "layered", "--pairs", "1", "--model",
                                     "raft-small-convex", "--checkpoint",
                                     str(straight / "model.pth"), "--iters", "2", "--no-progress",
                                     "-o", str(tmp_path / "eval")])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["model"] == "raft-small-convex" and summary["pairs"] == 1
    assert math.isfinite(summary["metrics"]["epe_pixel_mean"])

    shipped = tmp_path / "ship" / "tiny.pth"
    exported = runner.invoke(main, ["export-model", str(straight / "model.pth"), "-o", str(shipped),
                                    "--half", "--run", str(pieces)])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    sidecar = json.loads(shipped.with_suffix(".json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert (sidecar["architecture"], sidecar["dtype"]) == ("raft-small-convex", "float16")
    assert sidecar["training"][0]["steps_trained"] == 4
    assert sidecar["training"][0]["config"]["seed"] == sidecar["training"][0]["seed"]
    half = create_model("raft-small-convex", checkpoint=shipped).state_dict()
    full = model.state_dict()
    for key in full:
        torch.testing.assert_close(half[key], full[key], atol=2e-3, rtol=1e-3)

    steps = [json.loads(line)["step"] for line in (pieces / "log.jsonl").read_text().splitlines()]
    assert sorted({s for s in steps}) == [1, 2, 3, 4]
    assert (pieces / "curves.png").stat().st_size > 0
    assert sorted(p.name for p in (pieces / "checkpoints").iterdir()) == [
        "step_000002.pth",
        "step_000004.pth",
    ]
    changed = runner.invoke(main, ["train", "--config", str(config), "-o", str(pieces),
                                   "--resume", "--set", "optim.lr=0.1"])  # fmt: skip
    assert changed.exit_code != 0 and "optim.lr 0.0004 -> 0.1" in changed.output


def test_missing_texture_paths_stop_training_before_anything_is_written(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path / "tiny.yaml", steps=2)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--config", str(config), "-o", str(out),
                                       "--set", "textures.paths=[no/such/clip.mkv]"])  # fmt: skip
    assert result.exit_code == 1
    assert "texture paths not found: no/such/clip.mkv" in result.output
    assert "current folder" in result.output and not out.exists()
    for option, message in (
        ("init_checkpoint=no/such/weights.pth", "no/such/weights.pth"),
        ("data=[{kind: kitti, root: no/such/kitti}]", "no/such/kitti"),
    ):  # a checkpoint or a data set that cannot be read: nothing written either
        result = CliRunner().invoke(
            main, ["train", "--config", str(config), "-o", str(out), "--set", option]
        )
        assert result.exit_code == 1 and message in result.output, result.output
        assert not out.exists(), option


def test_resume_accepts_a_run_saved_before_a_config_key_was_added(tmp_path: Path) -> None:
    """A key added later with a behaviour-preserving default must not block ``--resume``, nor
    a new checkpoint or log interval."""
    config = _tiny_config(tmp_path / "tiny.yaml", steps=2)
    runner = CliRunner()
    run = tmp_path / "run"
    first = runner.invoke(main, ["train", "--config", str(config), "-o", str(run),
                                 "--stop-after", "1"])  # fmt: skip
    assert first.exit_code == 0, first.output
    state = torch.load(run / "state.pt", weights_only=False)
    for source in state["config"]["data"]:
        del source["preset"]  # as saved before DataSource.preset existed
    state["config_hash"] = "0123456789ab"
    torch.save(state, run / "state.pt")
    second = runner.invoke(main, ["train", "--config", str(config), "-o", str(run), "--resume",
                                  "--set", "checkpoint_every=1", "--set", "log_every=1",
                                  "--set", "threads=2"])  # fmt: skip
    assert second.exit_code == 0, second.output  # bookkeeping keys may change on resume
    assert (run / "model.pth").exists()
    assert torch.load(run / "state.pt", weights_only=False)["scaler"] == {}  # fp32: no scale


def test_the_log_forgets_steps_logged_after_the_last_saved_state(tmp_path: Path) -> None:
    """A run killed at step 3 whose state was saved at step 2 trains step 3 again."""
    log = RunLog(tmp_path)
    for step in (1, 2, 2, 3):
        log.write({"step": step, "loss": 1.0 / step})
    RunLog(tmp_path, from_step=2)
    assert [record["step"] for record in read_log(tmp_path)] == [1, 2, 2]
    RunLog(tmp_path, from_step=0)  # a run that starts again from scratch
    assert read_log(tmp_path) == []


def test_validation_leaves_frozen_batchnorm_frozen() -> None:
    model = create_model("raft-large")  # its context encoder has BatchNorm
    model.train()
    freeze_batchnorm(model)
    frozen = {name for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    image = torch.rand(1, 3, 64, 64) * 255
    scores = validate(model, {"tiny": [(image, image, torch.zeros(1, 2, 64, 64))]}, iters=1)
    assert set(scores) == {"val/tiny/epe", "val/tiny/1px"}
    for name, module in model.named_modules():
        assert module.training == (name not in frozen), name


def test_export_of_a_fine_tuned_bundled_model_keeps_its_recipe(tmp_path: Path) -> None:
    """A run that started from the shipped model: the exported sidecar lists the shipped
    model's recorded stages first, then the new run."""
    from models.weights import BUNDLED_DIR, WEIGHTS

    bundled = next(spec for spec in WEIGHTS.values() if spec.bundled)
    recipe = json.loads((BUNDLED_DIR / bundled.file_name).with_suffix(".json").read_text())
    run = tmp_path / "finetune"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": 7, "init_checkpoint": bundled.name}))
    (run / "log.jsonl").write_text(json.dumps({"step": 3, "loss": 1.0}) + "\n")
    shipped = tmp_path / "tuned.pth"
    result = CliRunner().invoke(main, ["export-model", str(BUNDLED_DIR / bundled.file_name),
                                       "-o", str(shipped), "--run", str(run)])  # fmt: skip
    assert result.exit_code == 0, result.output
    training = json.loads(shipped.with_suffix(".json").read_text())["training"]
    assert training[:-1] == recipe["training"]
    assert (training[-1]["run"], training[-1]["seed"], training[-1]["steps_trained"]) == (
        "finetune",
        7,
        3,
    )


def test_a_stage_started_from_a_snapshot_records_the_earlier_run_at_that_step() -> None:
    from pipeline.train_cmd import _steps_handed_on

    stages = [
        {"run": "stage1", "steps_trained": 4803, "config": {"init_checkpoint": None}},
        {"run": "stage2", "steps_trained": 1500,
         "config": {"init_checkpoint": "runs/stage1/checkpoints/step_004500.pth"}},
        {"run": "stage3", "steps_trained": 3000,
         "config": {"init_checkpoint": "runs/stage2/model.pth"}},
    ]  # fmt: skip
    _steps_handed_on(stages, Path("runs/stage3/model.pth"))
    assert [stage["steps_trained"] for stage in stages] == [4500, 1500, 3000]
    _steps_handed_on(stages, Path("runs/stage3/checkpoints/step_002000.pth"))  # a snapshot
    assert [stage["steps_trained"] for stage in stages] == [4500, 1500, 2000]


def test_official_raft_small_keys_are_what_training_saves(tmp_path: Path, parity_dir: Path) -> None:
    """A raft-small training checkpoint has exactly the official file's keys and shapes."""
    from models import raft_small
    from pipeline.training_weights import official_state_dict

    ours = official_state_dict(raft_small())
    official = torch.load(parity_dir / "raft_small_random.pth", weights_only=True)
    assert list(ours) == list(official)
    assert all(ours[k].shape == official[k].shape for k in ours)


def test_resume_needs_no_init_checkpoint_and_clears_killed_saves(tmp_path: Path) -> None:
    """The state holds every weight: a resumed run must not load the init checkpoint again
    (rotated out of an earlier run's checkpoints/, moved, or a download); and the temporaries
    of saves a killed run left are removed."""
    config = _tiny_config(tmp_path / "tiny.yaml", steps=2)
    runner = CliRunner()
    start = tmp_path / "start.pth"
    start.write_bytes((BUNDLED_DIR / "motionpipe-small-v3.pth").read_bytes())
    run = tmp_path / "run"
    first = runner.invoke(main, ["train", "--config", str(config), "-o", str(run),
                                 "--init-checkpoint", str(start), "--stop-after", "1"])  # fmt: skip
    assert first.exit_code == 0, first.output
    start.unlink()
    (run / ".state.pt.0123abcd.tmp").write_bytes(b"half a state")
    second = runner.invoke(main, ["train", "-o", str(run), "--resume"])
    assert second.exit_code == 0, second.output
    assert (run / "model.pth").exists() and not list(run.rglob(".*.tmp"))


def test_checkpoints_rotate_by_step_past_a_million(tmp_path: Path) -> None:
    from pipeline.training import Trainer

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (999_250, 999_500, 999_750):
        (folder / f"step_{step:06d}.pth").write_bytes(b"")
    config = load_train_config(None, {"keep_checkpoints": 3})
    Trainer(config, tmp_path)._save_checkpoint(torch.nn.Linear(1, 1), 1_000_000)
    assert sorted(p.name for p in folder.iterdir()) == [
        "step_1000000.pth",
        "step_999500.pth",
        "step_999750.pth",
    ]


def test_a_signal_saves_the_state_and_exits_non_zero(tmp_path: Path) -> None:
    """SIGTERM stops a run with its state saved and exit status 143 (a scheduler, or ``train
    && export-model``, must not take the unfinished run for a finished one)."""
    config = _tiny_config(tmp_path / "tiny.yaml", steps=10_000)
    run = tmp_path / "run"
    command = [sys.executable, str(REPO_ROOT / "run_pipeline.py"), "train", "--config",
               str(config), "-o", str(run), "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not (run / "log.jsonl").is_file():  # written after the first step: handlers are in
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=240)[0].decode()
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "continue with --resume" in output and (run / "state.pt").is_file()


def test_export_refuses_a_json_output_and_another_runs_recipe(tmp_path: Path) -> None:
    """The sidecar of ``x.json`` would be ``x.json`` itself; the recipe of a run that trained
    another architecture than the weights' would be a false record."""
    weights = BUNDLED_DIR / "motionpipe-small-v3.pth"  # raft-small-convex
    run = tmp_path / "kitti-run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "raft-small", "seed": 1}))
    runner = CliRunner()
    result = runner.invoke(main, ["export-model", str(weights), "-o", str(tmp_path / "x.json")])
    assert result.exit_code != 0 and "another suffix than .json" in result.output
    result = runner.invoke(main, ["export-model", str(weights), "-o", str(tmp_path / "x.pth"),
                                  "--run", str(run)])  # fmt: skip
    assert result.exit_code != 0 and "the last --run" in result.output
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "x.json").exists()


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    """The first SIGINT asks for a save after the step (validation is skipped); a second one
    interrupts whatever runs, the state saved last stays."""
    from pipeline.training import Trainer

    trainer = Trainer(load_train_config(None, {}), tmp_path / "run")
    previous = trainer._install_signal_handlers()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert trainer._stop_signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_the_sidecar_counts_learned_parameters_not_batchnorm_statistics(
    parity_dir: Path, tmp_path: Path
) -> None:
    """GMA's context encoder has BatchNorm: its running statistics (and the aliases the official
    layout gives some BatchNorm layers) are tensors of the file but not parameters."""
    shipped = tmp_path / "gma.pth"
    result = CliRunner().invoke(
        main, ["export-model", str(parity_dir / "gma_random.pth"), "-o", str(shipped)]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(shipped.with_suffix(".json").read_text())
    learned = sum(p.numel() for p in create_model("gma").parameters())
    assert record["architecture"] == "gma" and record["parameters"] == learned


def test_resume_loads_the_state_without_running_code_from_it(tmp_path: Path) -> None:
    """state.pt is read with ``weights_only``: a file that would run code when unpickled (a
    state.pt swapped or shared with someone else's run folder) is refused, and runs nothing."""
    config = _tiny_config(tmp_path / "tiny.yaml", steps=2)
    run = tmp_path / "run"
    first = CliRunner().invoke(main, ["train", "--config", str(config), "-o", str(run),
                                      "--stop-after", "1"])  # fmt: skip
    assert first.exit_code == 0, first.output
    marker = tmp_path / "ran"
    state = torch.load(run / "state.pt", weights_only=True)
    state["payload"] = _RunsCode(str(marker))
    torch.save(state, run / "state.pt")
    second = CliRunner().invoke(main, ["train", "-o", str(run), "--resume"])
    assert second.exit_code == 1 and "state.pt cannot be read" in second.output
    assert not marker.exists()


class _RunsCode:
    """Unpickling it creates a file: what a malicious pickle could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))
