"""Runs users can predict: what --resume keeps, one estimator per folder, clear start failures.

Real runs through the CLI on tiny generated videos; RAFT runs use the random-weight parity
checkpoints (numbers are meaningless, identities are what is tested).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from models.weights import auto_order
from pipeline.cli import main
from pipeline.config import ConfigError, FlowConfig, load_config
from pipeline.devices import resolve_device
from pipeline.manifest import read_manifest
from pipeline.model_choice import choose_model
from pipeline.run_start import Estimator, results_hash, results_key
from tests.media import write_video

FIXTURE_OF_ARCH = {
    "raft-large": "raft_large_random.pth",
    "raft-small": "raft_small_random.pth",
    "gma": "gma_random.pth",
}


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _video(path: Path, frames: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, width=64, height=64, num_frames=frames, codec="ffv1")


def _metas(out: Path) -> dict[str, dict]:
    return {
        p.parent.relative_to(out).as_posix(): json.loads(p.read_text())
        for p in out.rglob("meta.json")
    }


def _identity(meta: dict) -> tuple[str, str | None]:
    return meta["model"], (meta["checkpoint"] or {}).get("sha256")


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("MOTIONPIPE_CACHE", str(cache))
    return cache


# --------------------------------------------------------------------------- the results key


def test_results_key_leaves_out_what_only_changes_speed_or_placement() -> None:
    network = Estimator("raft-large", "raft-sintel", "ab" * 32, device_type="cpu")
    base = load_config(None, {"flow.model": "auto"})
    key = results_key(base, network)
    for setting, value in [
        ("flow.cpu_workers", 1),
        ("flow.memory_budget_mb", 8192),
        ("flow.download", False),
        ("flow.batch_pairs", 4),
        ("flow.encode_batch", 1),
        ("flow.corr", "on-demand"),
        ("flow.on_demand_above_pixels", 0),
        ("flow.device", "cpu"),
        ("decode.chunk_size", 3),
    ]:
        assert results_key(load_config(None, {setting: value}), network) == key, setting
    for setting, value in [
        ("flow.iters", 20),
        ("flow.precision", "bf16"),
        ("flow.pad_mode", "kitti"),
        ("flow.gap", 2),
        ("decode.stride", 2),
        ("decode.backend", "opencv"),
        ("output.formats", "npy,flo"),
        ("warp.enabled", True),
    ]:
        assert results_key(load_config(None, {setting: value}), network) != key, setting
    # the resolved estimator, not the name it was asked for
    assert results_key(base, Estimator("raft-large", "x.pth", "ab" * 32)) == key
    assert results_key(base, Estimator("raft-large", "raft-sintel", "cd" * 32)) != key
    assert results_key(base, Estimator("raft-large", "raft-sintel", "ab" * 32, "", "cuda")) != key
    dis = Estimator("dis")
    assert results_key(base, dis) != key
    assert results_key(load_config(None, {"flow.iters": 3}), dis) == results_key(base, dis)
    assert results_key(load_config(None, {"flow.dis_preset": "fast"}), dis) != results_key(
        base, dis
    )
    assert results_hash(key) == results_hash(json.loads(json.dumps(key)))
    # refinement: "auto" that resolves to none keys as before; on, it changes the results
    assert results_key(load_config(None, {"flow.refine": "none"}), network) == key
    refined = results_key(load_config(None, {"flow.refine": "variational"}), network)
    assert refined != key and refined["flow"]["refine"] == "variational"
    bundled = next(spec for spec in auto_order() if spec.bundled)
    shipped = Estimator(bundled.arch, bundled.name, "ef" * 32)
    assert results_key(base, shipped) == refined_key(shipped, "variational")
    assert results_key(load_config(None, {"flow.refine": "none"}), shipped) != results_key(
        base, shipped
    )
    assert results_key(load_config(None, {"flow.refine": "variational"}), dis) == results_key(
        base, dis
    )


def refined_key(estimator: Estimator, refine: str) -> dict:
    return results_key(load_config(None, {"flow.refine": refine}), estimator)


def test_integer_settings_accept_exponent_notation() -> None:
    assert load_config(None, {"flow.iters": "1e9"}).flow.iters == 10**9
    assert load_config(None, {"flow.memory_budget_mb": "4096.0"}).flow.memory_budget_mb == 4096
    for bad, words in [("1.5", "must be an integer"), ("inf", "must be an integer"),
                       ("many", "must be a number")]:  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            load_config(None, {"flow.iters": bad})


# --------------------------------------------------------------------------- resume


@pytest.fixture
def two_videos(tmp_path: Path) -> Path:
    """``tmp_path / "in"`` holding the small videos ``a.mkv`` and ``b.mkv``."""
    for name in ("a", "b"):
        _video(tmp_path / "in" / f"{name}.mkv")
    return tmp_path / "in"


def test_resume_keeps_videos_when_only_speed_settings_change(
    tmp_path: Path, parity_dir: Path, two_videos: Path
) -> None:
    out = tmp_path / "out"
    weights = str(parity_dir / "raft_small_random.pth")
    args = ["-q", "run", str(tmp_path / "in"), "-o", str(out), "--model", "raft-small",
            "--checkpoint", weights, "--iters", "1", "--workers", "0", "--no-progress"]  # fmt: skip
    first = _invoke([*args, "--device", "cpu"])
    assert first.exit_code == 0, first.output
    # "auto" is an equivalent device where it resolves to the CPU
    device = "auto" if resolve_device("auto").type == "cpu" else "cpu"
    again = _invoke(
        [*args, "--resume", "--device", device, "--set", "flow.cpu_workers=1",
         "--set", "flow.memory_budget_mb=4096", "--set", "flow.download=false",
         "--set", "flow.batch_pairs=2", "--set", "decode.chunk_size=5"]
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    rows = read_manifest(out)
    assert rows["reused"].all() and (rows["status"] == "ok").all()
    assert "computed again" not in again.output

    changed = _invoke([*args, "--resume", "--device", "cpu", "--iters", "2"])
    assert changed.exit_code == 0, changed.output
    assert not read_manifest(out)["reused"].any()
    assert "2 finished video(s) will be computed again" in changed.output
    assert "flow.iters 1 -> 2" in changed.output
    # a setting results keys leave out at its default reads as that default, not None
    later = _invoke([*args, "--resume", "--device", "cpu", "--iters", "2",
                     "--set", "warp.enabled=true", "--set", "warp.count_outside=true"])  # fmt: skip
    assert later.exit_code == 0, later.output
    assert "warp.count_outside False -> True" in later.output


def test_auto_resolving_to_a_new_checkpoint_never_mixes_estimators(
    tmp_path: Path, parity_dir: Path, empty_cache: Path
) -> None:
    offline = FlowConfig(model="auto", download=False)
    before = choose_model(offline)
    spec = next(
        (s for s in auto_order() if not s.bundled and s.sha256 is None and not s.sha256_prefix),
        None,
    )
    if spec is None:
        pytest.skip("no auto checkpoint without a published hash to stand in for")
    shutil.copy(parity_dir / FIXTURE_OF_ARCH[spec.arch], empty_cache / spec.file_name)
    after = choose_model(offline)
    (empty_cache / spec.file_name).unlink()
    if (after.model, after.checkpoint) == (before.model, before.checkpoint):
        pytest.skip(f"{spec.name} in the cache does not change what auto picks here")

    _video(tmp_path / "in" / "a.mkv")
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "in"), "-o", str(out), "--model", "auto", "--iters", "1",
            "--set", "flow.download=false", "--workers", "0", "--no-progress"]  # fmt: skip
    first = _invoke(args)
    assert first.exit_code == 0, first.output
    assert _metas(out)["a"]["model"] == before.model

    shutil.copy(parity_dir / FIXTURE_OF_ARCH[spec.arch], empty_cache / spec.file_name)
    _video(tmp_path / "in" / "b.mkv")
    resumed = _invoke([*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    metas = _metas(out)
    assert set(metas) == {"a", "b"}
    assert {_identity(m) for m in metas.values()} == {_identity(metas["b"])}
    assert metas["b"]["model"] == after.model and metas["b"]["model_notice"] is None
    assert not read_manifest(out)["reused"].any()
    assert "1 finished video(s) will be computed again" in resumed.output
    assert f"flow.model {before.model!r} -> {after.model!r}" in resumed.output
    assert "notice:" not in resumed.output  # no stale fallback notice


def test_a_damaged_checkpoint_auto_chose_says_where_it_came_from(
    tmp_path: Path, empty_cache: Path
) -> None:
    spec = next(
        (s for s in auto_order() if not s.bundled and s.sha256 is None and not s.sha256_prefix),
        None,
    )
    if spec is None:
        pytest.skip("every cached auto checkpoint is hashed: a damaged one is skipped")
    (empty_cache / spec.file_name).write_text("<html>a captive portal's error page</html>")
    _video(tmp_path / "a.mkv")
    result = _invoke(["run", str(tmp_path / "a.mkv"), "-o", str(tmp_path / "out"),
                      "--workers", "0", "--no-progress"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"checkpoint {spec.name!r}" in result.output
    assert "model 'auto' chose it from the cache: delete the file" in result.output
    assert "--model raft-small-convex" in result.output and not (tmp_path / "out").exists()


def test_a_damaged_hashed_checkpoint_auto_skips_is_named(
    empty_cache: Path, parity_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A hashed entry that fails its hash is passed over (auto never fails for lack of
    # weights), but not silently: the user put it there and gets another model instead.
    spec = next((s for s in auto_order() if not s.bundled and s.sha256_prefix), None)
    if spec is None:
        pytest.skip("no auto checkpoint with a published hash")
    before = choose_model(FlowConfig(model="auto", download=False))
    shutil.copy(parity_dir / FIXTURE_OF_ARCH[spec.arch], empty_cache / spec.file_name)
    with caplog.at_level("WARNING"):
        after = choose_model(FlowConfig(model="auto", download=False))
    assert (after.model, after.checkpoint) == (before.model, before.checkpoint)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(spec.name in m and str(empty_cache / spec.file_name) in m for m in warned), warned
    assert any(f"expected it to start with {spec.sha256_prefix}" in m for m in warned), warned


def test_videos_left_behind_with_another_estimator_refuse_the_run(
    tmp_path: Path, parity_dir: Path, two_videos: Path
) -> None:
    out = tmp_path / "out"
    dis = ["run", "--model", "dis", "-o", str(out), "--workers", "0", "--no-progress"]
    assert _invoke([*dis, str(tmp_path / "in")]).exit_code == 0
    manifest = (out / "manifest.csv").read_bytes()
    raft = ["run", str(tmp_path / "in" / "a.mkv"), "-o", str(out), "--model", "raft-small",
            "--checkpoint", str(parity_dir / "raft_small_random.pth"), "--iters", "1",
            "--device", "cpu", "--workers", "0", "--no-progress"]  # fmt: skip
    for flag in ("--resume", "--overwrite"):
        refused = _invoke([*raft, flag])
        assert refused.exit_code == 1
        assert "holds 1 finished video(s) this run does not include (b)" in refused.output
        assert "dis (OpenCV DIS)" in refused.output and "raft-small" in refused.output
        assert (out / "manifest.csv").read_bytes() == manifest
        assert {_identity(m) for m in _metas(out).values()} == {("dis", None)}
    # the same estimator may leave videos behind
    assert _invoke([*dis, str(tmp_path / "in" / "a.mkv"), "--resume"]).exit_code == 0


def test_all_digit_ids_are_read_as_text_from_the_csv_manifest(
    tmp_path: Path, parity_dir: Path
) -> None:
    """With a damaged manifest.parquet the run reads manifest.csv: the ids of 001.mkv and
    002.mkv stay 001 / 002 (read as the integers 1 / 2, they named no folder, and a run with
    another model went ahead beside the videos left behind)."""
    for name in ("001", "002"):
        _video(tmp_path / "in" / f"{name}.mkv")
    out = tmp_path / "out"
    dis = ["run", "--model", "dis", "-o", str(out), "--workers", "0", "--no-progress"]
    assert _invoke([*dis, str(tmp_path / "in")]).exit_code == 0
    (out / "manifest.parquet").write_bytes(b"not parquet")
    raft = ["run", str(tmp_path / "in" / "001.mkv"), "-o", str(out), "--model", "raft-small",
            "--checkpoint", str(parity_dir / "raft_small_random.pth"), "--iters", "1",
            "--device", "cpu", "--workers", "0", "--no-progress", "--overwrite"]  # fmt: skip
    refused = _invoke(raft)
    assert refused.exit_code == 1
    assert "holds 1 finished video(s) this run does not include (002)" in refused.output


# --------------------------------------------------------------------------- start failures


def _refused_cleanly(result, out: Path, *words: str) -> None:
    """Exit status 1, one ``Error:`` line naming ``words``, and no output folder content."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    message = errors[0]
    assert "Traceback" not in result.output
    for word in words:
        assert word in message, (word, message)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_device_is_refused_before_the_output_folder_exists(tmp_path: Path) -> None:
    video = _video(tmp_path / "a.mkv")
    out = tmp_path / "out"
    args = ["-q", "run", str(video), "-o", str(out), "--model", "raft-small", "--checkpoint",
            "random", "--workers", "1", "--no-progress"]  # fmt: skip
    _refused_cleanly(
        _invoke([*args, "--set", "flow.device=cuda"]), out, "flow.device='cuda'", "CUDA"
    )
    # nothing was left behind: the same command with a working device needs no --overwrite
    assert _invoke([*args, "--device", "cpu"]).exit_code == 0
    before = (out / "manifest.csv").read_bytes()
    refused = _invoke([*args, "--resume", "--device", "cuda:0"])
    assert refused.exit_code == 1 and (out / "manifest.csv").read_bytes() == before


def test_bad_checkpoint_is_refused_before_the_output_folder_exists(tmp_path: Path) -> None:
    video = _video(tmp_path / "a.mkv")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"this is not a checkpoint")
    out = tmp_path / "out"
    result = _invoke(
        ["-q", "run", str(video), "-o", str(out), "--model", "raft-small", "--checkpoint",
         str(broken), "--device", "cpu", "--no-progress"]
    )  # fmt: skip
    _refused_cleanly(result, out, str(broken), "raft-small")


def test_output_path_through_a_file_is_refused_clearly(tmp_path: Path) -> None:
    video = _video(tmp_path / "a.mkv")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    result = _invoke(["-q", "run", str(video), "-o", str(blocker / "sub"), "--model", "dis"])
    _refused_cleanly(result, blocker / "sub", str(blocker), "is a file")
    assert blocker.read_text() == "a file, not a folder"


def test_read_only_output_folder_is_refused_clearly(tmp_path: Path, read_only_dir: Path) -> None:
    video = _video(tmp_path / "a.mkv")
    out = read_only_dir / "out"
    result = _invoke(["-q", "run", str(video), "-o", str(out), "--model", "dis"])
    _refused_cleanly(result, out, str(read_only_dir))
    assert "read-only file system" in result.output or "permission denied" in result.output


def test_full_disk_is_refused_at_start(tmp_path: Path, small_disk) -> None:
    disk = small_disk(tmp_path / "disk", "1m")
    (disk / "filler").write_bytes(b"\0" * (900 * 1024))
    video = _video(tmp_path / "a.mkv")
    result = _invoke(["-q", "run", str(video), "-o", str(disk / "out"), "--model", "dis"])
    _refused_cleanly(result, disk / "out", "no space", str(disk))


def test_a_file_listed_twice_is_processed_once(tmp_path: Path) -> None:
    _video(tmp_path / "videos" / "a.mkv")
    _video(tmp_path / "videos" / "b.mkv")
    listing = tmp_path / "list.txt"
    listing.write_text("videos/a.mkv\nvideos\n./videos/../videos/b.mkv\n")
    out = tmp_path / "out"
    result = _invoke(["run", str(listing), "-o", str(out), "--model", "dis", "--workers", "0",
                      "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "manifest.csv")
    assert sorted(table["path"]) == ["videos/a.mkv", "videos/b.mkv"]
    assert sorted(table["video_id"]) == ["videos/a", "videos/b"]
