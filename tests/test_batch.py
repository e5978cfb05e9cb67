"""Batch runs users can trust: bad inputs, crashes, timeouts, locks, kill and resume, Ray.

Everything here runs for real: PyAV-made media, worker processes that really abort, a CLI
subprocess that really gets SIGKILL. The native crash, the endless video and the lost worker
are jobs of :mod:`tests.failure_injection`, which the executors run in their workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import pipeline.manifest as manifest_module
from pipeline.batch import LOCK_NAME
from pipeline.cli import main
from pipeline.manifest import ManifestRow, RunManifest, read_manifest, write_manifest
from tests.conftest import REPO_ROOT
from tests.failure_injection import Failures, cli_command, inject
from tests.media import (
    corrupt_copy,
    garble_packets,
    pattern_frame,
    write_audio_only,
    write_video,
)

DIS = ["--model", "dis", "--no-progress"]


def _invoke(args: list[str]):
    return CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "run_pipeline.py"), "-q", *args]


def _video(path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, **kwargs)


def _manifest(out: Path) -> dict[str, dict]:
    return {row["path"]: row for row in read_manifest(out).to_dict("records")}


def _check_complete(out: Path, row: dict) -> None:
    """Every output the row names exists and the flow has one (H, W, 2) map per pair."""
    folder = out / row["video_id"]
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["status"] == "ok" and meta["config_hash"] == row["config_hash"]
    outputs = json.loads(row["outputs"])
    assert all((out / rel).exists() for rel in outputs.values()), outputs
    flow = np.load(out / outputs["npy"])
    assert flow.shape == (row["pairs"], meta["height"], meta["width"], 2)
    assert np.isfinite(flow).all()
    assert len((folder / "timestamps.csv").read_text().splitlines()) == row["frames"] + 1
    assert not list(folder.rglob("*.tmp"))


@pytest.fixture()
def small_videos(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    for name in ("a.mkv", "b.mkv", "c.mkv"):
        _video(folder / name, num_frames=4, codec="ffv1", pix_fmt="yuv444p")
    return folder


def _make_corpus(root: Path) -> None:
    bad, good = root / "bad", root / "good"
    bad.mkdir(parents=True)
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "notes.mp4").write_text("shopping list: milk, eggs\n")
    write_audio_only(bad / "audio_only.m4a").rename(bad / "audio_only.mp4")
    _video(bad / "one_frame.mkv", num_frames=1, codec="ffv1")
    source = _video(root / "source.mp4", num_frames=24)
    corrupt_copy(source, bad / "truncated.mp4", at=0.3, truncate=True)
    web = _video(root / "web.mp4", num_frames=24, container_options={"movflags": "faststart"})
    corrupt_copy(web, bad / "downloading.mp4", at=0.7, truncate=True)
    garble_packets(source, bad / "corrupt_middle.mp4", first=10, count=4)
    good.mkdir()
    source.unlink()
    web.unlink()
    os.symlink(root / "nowhere.mp4", bad / "dangling.mp4")
    _video(bad / "crash_me.mkv", num_frames=4, codec="ffv1")
    _video(bad / "hang_me.mkv", num_frames=4, codec="ffv1")
    _video(good / "odd size.mkv", width=65, height=49, num_frames=4, codec="ffv1")
    _video(good / "rotated.mp4", width=64, height=48, num_frames=4, rotation=90)
    _video(good / "vfr.mkv", num_frames=5, pts=[0, 30, 70, 100, 170])
    _video(good / "ten_bit.mkv", num_frames=4, codec="libx265", pix_fmt="yuv420p10le")
    _video(good / "gray.mkv", num_frames=4, codec="ffv1", pix_fmt="gray")
    _video(good / "vp9.webm", num_frames=4, codec="libvpx-vp9")
    _video(good / "mjpeg.avi", num_frames=4, codec="mjpeg")
    _video(good / "UPPER.MP4", num_frames=4)
    _video(good / "çà et là – vidéo.mkv", num_frames=4, codec="ffv1")
    _video(good / "x" / "same.mkv", num_frames=4, codec="ffv1")
    _video(good / "y" / "same.mkv", num_frames=4, codec="ffv1")
    frames = good / "frames"
    frames.mkdir()
    for n in range(4):
        rgb = pattern_frame(n)
        assert cv2.imwrite(str(frames / f"f_{n}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


# rel path -> (status, error_type, words the error must contain)
BAD_ROWS = {
    "bad/empty.mp4": ("DecodeError", "empty file"),
    "bad/notes.mp4": ("DecodeError", "not a readable media file"),
    "bad/audio_only.mp4": ("DecodeError", "no video stream"),
    "bad/one_frame.mkv": ("DecodeError", "only 1 frame(s) decoded"),
    "bad/truncated.mp4": ("DecodeError", "an MP4/MOV file without its index (moov box)"),
    "bad/downloading.mp4": ("DecodeError", "incomplete video: the file ends inside a frame's data"),
    "bad/corrupt_middle.mp4": ("DecodeError", "incomplete video: decoding stopped after the frame"),
    "bad/dangling.mp4": ("FileNotFoundError", "broken symbolic link"),
    "bad/crash_me.mkv": ("WorkerCrash", "worker died with signal SIGABRT while processing"),
    "bad/hang_me.mkv": ("TimeoutError", "no result within the 6 s limit"),
}
GOOD_ROWS = {
    "good/odd size.mkv": "good/odd size",
    "good/rotated.mp4": "good/rotated",
    "good/vfr.mkv": "good/vfr",
    "good/ten_bit.mkv": "good/ten_bit",
    "good/gray.mkv": "good/gray",
    "good/vp9.webm": "good/vp9",
    "good/mjpeg.avi": "good/mjpeg",
    "good/UPPER.MP4": "good/UPPER",
    "good/çà et là – vidéo.mkv": "good/çà et là – vidéo",
    "good/x/same.mkv": "good/x/same",
    "good/y/same.mkv": "good/y/same",
    "good/frames": "good/frames",
}


@pytest.mark.slow
def test_bad_input_corpus(tmp_path: Path, monkeypatch) -> None:
    """Every bad input fails alone with a reason in words; every good one is complete."""
    root = tmp_path / "corpus"
    _make_corpus(root)
    out = tmp_path / "out"
    inject(monkeypatch, Failures(crash_on="crash_me", hang_on="hang_me"))
    result = _invoke(["run", str(root), "-o", str(out), *DIS, "--workers", "2", "--timeout", "6"])
    assert result.exit_code == 1, result.output
    rows = _manifest(out)
    assert set(rows) == set(BAD_ROWS) | set(GOOD_ROWS)
    for path, (error_type, words) in BAD_ROWS.items():
        row = rows[path]
        assert (row["status"], row["error_type"]) == ("failed", error_type), row
        assert words in row["error"], row
        assert "Traceback" not in row["error"] and "\n" not in row["error"]
        assert path in result.output  # the summary lists every failure
        assert not (out / row["video_id"]).exists()  # nothing of a failed video is left
    for path, video_id in GOOD_ROWS.items():
        row = rows[path]
        assert (row["status"], row["video_id"], row["error"]) == ("ok", video_id, ""), row
        _check_complete(out, row)

    def meta(name: str) -> dict:
        return json.loads((out / "good" / name / "meta.json").read_text())

    assert (meta("odd size")["width"], meta("odd size")["height"]) == (65, 49)
    assert (meta("rotated")["width"], meta("rotated")["height"]) == (64, 48)
    assert meta("frames")["decoder"] == "frames"
    assert f"{'ok':8s} {12:6d}" in result.output and f"{'failed':8s} {10:6d}" in result.output
    assert not (out / LOCK_NAME).exists()
    csv = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert list(csv["path"]) == list(read_manifest(out)["path"])


@pytest.mark.slow
def test_frames_smaller_than_the_network_pyramid_are_padded(
    tmp_path: Path, parity_dir: Path
) -> None:
    """RAFT's correlation pyramid needs 64x64 pixels after padding: smaller frames are padded
    further with replicated borders and the flow cropped back (no upscaling: it would invent
    detail and change the flow scale), as DIS pads frames under its own minimum."""
    folder = tmp_path / "in"
    _video(folder / "tiny.mkv", width=20, height=12, num_frames=3, codec="ffv1")
    out = tmp_path / "out"
    result = _invoke(
        ["run", str(folder), "-o", str(out), "--model", "raft-small", "--iters", "1",
         "--checkpoint", str(parity_dir / "raft_small_random.pth"), "--device", "cpu",
         "--workers", "0", "--no-progress"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _manifest(out)["tiny.mkv"]["status"] == "ok"
    flow = np.load(out / "tiny" / "flow.npy")
    assert flow.shape == (2, 12, 20, 2) and np.isfinite(flow).all()


@pytest.mark.parametrize("preset", ["medium", "fast"])
def test_dis_takes_any_frame_size(tmp_path: Path, preset: str) -> None:
    """OpenCV's DIS refuses frames with both sides under 12 px (1x1 ... 11x11), raises on wide
    strips under 32 rows (12 x 640) and crashes (SIGSEGV) on some narrower ones (14 x 64 with
    ``medium``, 24 x 100 with ``fast``): the flow stage pads them and crops the flow back, so
    such videos get flow like any other. A worker process keeps a regression a failed row
    rather than a dead test run."""
    from tests.media import write_frames

    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    sizes = {"one.mkv": (1, 1), "two.mkv": (2, 2), "strip.mkv": (3, 40), "eleven.mkv": (11, 11),
             "a.mkv": (14, 64), "b.mkv": (24, 100), "c.mkv": (12, 640), "d.mkv": (31, 128)}  # fmt: skip
    for name, (height, width) in sizes.items():
        frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(3)]
        write_frames(folder / name, frames, codec="ffv1", pix_fmt="yuv444p")
    out = tmp_path / "out"
    result = _invoke(["run", str(folder), "-o", str(out), *DIS, "--workers", "1",
                      "--set", f"flow.dis_preset={preset}",
                      "--formats", "npy,flo,kitti,jpg,viz"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for name, (height, width) in sizes.items():
        row = _manifest(out)[name]
        assert row["status"] == "ok", row
        _check_complete(out, row)
        assert np.load(out / row["video_id"] / "flow.npy").shape == (2, height, width, 2)


def test_fail_fast_skips_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "a_empty.mp4").parent.mkdir(parents=True)
    (folder / "a_empty.mp4").write_bytes(b"")
    for name in ("b.mkv", "c.mkv"):
        _video(folder / name, num_frames=3, codec="ffv1")
    out = tmp_path / "out"
    result = _invoke(["run", str(folder), "-o", str(out), *DIS, "--workers", "0", "--fail-fast"])
    assert result.exit_code == 1
    rows = _manifest(out)
    assert [rows[p]["status"] for p in ("a_empty.mp4", "b.mkv", "c.mkv")] == [
        "failed",
        "skipped",
        "skipped",
    ]
    assert "--fail-fast" in rows["b.mkv"]["error"]
    assert not (out / "b").exists()


def test_output_folder_rules_and_resume(small_videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["run", str(small_videos), "-o", str(out), *DIS, "--workers", "0"]
    assert _invoke(base).exit_code == 0
    first = _manifest(out)
    assert {r["status"] for r in first.values()} == {"ok"} and not any(
        r["reused"] for r in first.values()
    )

    again = _invoke(base)  # a folder holding a run is not reused silently
    assert again.exit_code == 2
    assert "--resume" in again.output and "--overwrite" in again.output
    both = _invoke([*base, "--resume", "--overwrite"])
    assert both.exit_code == 2 and "exclude each other" in both.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    refused = _invoke(["run", str(small_videos), "-o", str(foreign), *DIS, "--workers", "0"])
    assert refused.exit_code == 2 and "holds no motionpipe run" in refused.output

    # Damage two videos: b loses its meta.json (a partial folder), c's meta.json is from
    # another configuration. Resume keeps a, redoes b and c, and removes b's stray file.
    (out / "b" / "meta.json").unlink()
    (out / "b" / "stray.tmp").write_text("half written")
    meta_c = json.loads((out / "c" / "meta.json").read_text())
    meta_c["config_hash"] = "0" * 12
    (out / "c" / "meta.json").write_text(json.dumps(meta_c))
    kept = (out / "a" / "flow.npy").stat().st_mtime_ns
    resumed = _invoke([*base, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    rows = _manifest(out)
    assert {p: (r["status"], r["reused"]) for p, r in rows.items()} == {
        "a.mkv": ("ok", True),
        "b.mkv": ("ok", False),
        "c.mkv": ("ok", False),
    }
    assert rows["a.mkv"]["seconds_total"] == first["a.mkv"]["seconds_total"]  # from meta.json
    assert (out / "a" / "flow.npy").stat().st_mtime_ns == kept
    assert not (out / "b" / "stray.tmp").exists()
    assert "1 kept from an earlier run" in resumed.output

    # Another configuration: resume redoes everything; overwrite always does.
    changed = _invoke([*base, "--resume", "--set", "flow.dis_preset=fast"])
    assert changed.exit_code == 0
    assert not any(r["reused"] for r in _manifest(out).values())
    assert _invoke([*base, "--overwrite"]).exit_code == 0
    assert not any(r["reused"] for r in _manifest(out).values())


def test_resume_redoes_inputs_replaced_since(tmp_path: Path) -> None:
    """A video file replaced by another (here: the whole download after a truncated one) and a
    frame folder that gained an image are redone; an untouched input is kept."""
    folder = tmp_path / "in"
    for name in ("same.mkv", "replaced.mkv"):
        _video(folder / name, num_frames=3, codec="ffv1")
    (folder / "frames").mkdir()
    for n in range(3):
        assert cv2.imwrite(str(folder / "frames" / f"{n}.png"), pattern_frame(n)[..., ::-1])
    out = tmp_path / "out"
    base = ["run", str(folder), "-o", str(out), *DIS, "--workers", "0"]
    assert _invoke(base).exit_code == 0
    _video(folder / "replaced.mkv", num_frames=5, codec="ffv1")
    assert cv2.imwrite(str(folder / "frames" / "3.png"), pattern_frame(3)[..., ::-1])
    resumed = _invoke([*base, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    rows = _manifest(out)
    assert {path: (row["reused"], row["frames"]) for path, row in rows.items()} == {
        "same.mkv": (True, 3),
        "replaced.mkv": (False, 5),
        "frames": (False, 4),
    }
    meta = json.loads((out / "replaced" / "meta.json").read_text())
    assert meta["input"]["size"] == (folder / "replaced.mkv").stat().st_size


def test_resume_redoes_videos_whose_outputs_were_deleted_or_cut_short(tmp_path: Path) -> None:
    """A finished video whose flow file was deleted, or cut short, after it finished is not
    reported ``ok`` by ``--resume`` with outputs that are not there: it is computed again."""
    folder = tmp_path / "in"
    for name in ("kept.mkv", "deleted.mkv", "cut.mkv"):
        _video(folder / name, num_frames=3, codec="ffv1")
    out = tmp_path / "out"
    base = ["run", str(folder), "-o", str(out), *DIS, "--workers", "0"]
    assert _invoke(base).exit_code == 0
    (out / "deleted" / "flow.npy").unlink()
    with open(out / "cut" / "flow.npy", "r+b") as cut:
        cut.truncate(100)
    resumed = _invoke([*base, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    rows = _manifest(out)
    assert {path: row["reused"] for path, row in rows.items()} == {
        "kept.mkv": True,
        "deleted.mkv": False,
        "cut.mkv": False,
    }
    for row in rows.values():
        _check_complete(out, row)


@pytest.mark.skipif(sys.platform != "linux", reason="file names that are not UTF-8: Linux")
def test_file_names_that_are_not_utf8_are_videos_like_any_other(tmp_path: Path) -> None:
    """Linux file names are bytes: a Latin-1 name (``café.mkv`` copied from an old disk) is a
    video with a row of its own, not a traceback that stops the batch before any video ran."""
    folder = tmp_path / "in"
    latin1 = os.fsdecode(b"caf\xe9.mkv")
    _video(folder / latin1, num_frames=3, codec="ffv1")
    _video(folder / "plain.mkv", num_frames=3, codec="ffv1")
    (folder / os.fsdecode(b"notes\xff.mp4")).write_text("not a video")
    out = tmp_path / "out"
    result = _invoke(["run", str(folder), "-o", str(out), *DIS, "--workers", "0"])
    assert result.exit_code == 1, result.output
    for table in (read_manifest(out), manifest_module.read_manifest_csv(out)):
        rows = {row["path"]: row for row in table.to_dict("records")}
        assert {path: (row["video_id"], row["status"]) for path, row in rows.items()} == {
            "caf\\xe9.mkv": ("caf\\xe9", "ok"),
            "notes\\xff.mp4": ("notes\\xff", "failed"),
            "plain.mkv": ("plain", "ok"),
        }
        assert "notes\\xff.mp4" in rows["notes\\xff.mp4"]["error"]
    _check_complete(out, _manifest(out)["caf\\xe9.mkv"])


def test_manifest_files(tmp_path: Path) -> None:
    rows = [
        ManifestRow(
            path="a/clip one.mp4",
            video_id="a/clip one",
            status="ok",
            frames=5,
            pairs=4,
            seconds={"total": 1.5, "decode": 0.25, "flow": 1.0},
            outputs={"npy": str(tmp_path / "a" / "clip one" / "flow.npy")},
            config_hash="abc",
            warnings=["decoded 5 frames, fewer than the 6 the header declares"],
        ),
        ManifestRow(
            path="b.mp4",
            video_id="b",
            status="failed",
            error_type="DecodeError",
            error="cannot decode 'b.mp4': empty file",
            config_hash="abc",
        ),
        ManifestRow(path="é.mp4", video_id="é", config_hash="abc"),
    ]
    write_manifest(rows, tmp_path)
    table = read_manifest(tmp_path)
    assert list(table.columns) == [
        "path", "video_id", "status", "reused", "error_type", "error", "frames", "pairs",
        "seconds_decode", "seconds_flow", "seconds_total", "outputs", "config_hash", "warnings",
    ]  # fmt: skip
    assert list(table["status"]) == ["ok", "failed", "pending"]
    assert json.loads(table["outputs"][0]) == {"npy": "a/clip one/flow.npy"}
    assert json.loads(table["warnings"][0]) == rows[0].warnings
    assert np.isnan(table["seconds_total"][1])
    csv = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False)
    assert list(csv["path"]) == ["a/clip one.mp4", "b.mp4", "é.mp4"]
    assert csv["error"][1] == "cannot decode 'b.mp4': empty file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv", "manifest.parquet"]


def test_run_manifest_keeps_its_writing_within_its_time_share(tmp_path: Path, monkeypatch) -> None:
    """Rows change one at a time; a save within the budget writes them, one over it is put off
    (the row stays unsaved, not lost) and a forced save writes whatever changed."""
    rows = [ManifestRow(path=f"{n}.mp4", video_id=str(n)) for n in range(3)]
    manifest = RunManifest(rows, tmp_path)
    assert manifest.save() and list(read_manifest(tmp_path)["status"]) == ["pending"] * 3
    assert not manifest.save(force=True)  # nothing changed
    monkeypatch.setattr(manifest_module, "MAX_WRITE_SHARE", 0.0)  # every save is over budget
    flow = tmp_path / "1" / "flow.npy"
    manifest.set(
        1, ManifestRow(path="1.mp4", video_id="1", status="ok", outputs={"npy": str(flow)})
    )
    assert not manifest.save()
    assert list(read_manifest(tmp_path)["status"]) == ["pending"] * 3
    assert manifest.save(force=True)
    table = read_manifest(tmp_path)
    assert list(table["status"]) == ["pending", "ok", "pending"]
    assert json.loads(table["outputs"][1]) == {"npy": "1/flow.npy"}


def test_a_resumed_run_removes_what_a_killed_write_left(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _video(folder / "v.mkv", width=32, height=32, num_frames=3, codec="ffv1")
    out = tmp_path / "out"
    assert _invoke(["run", str(folder), "-o", str(out), *DIS, "--workers", "0"]).exit_code == 0
    leftovers = [out / f".{name}.0a1b2c3d.tmp" for name in (
        "manifest.parquet", "config.yaml", "features.parquet", "rawframes_flow.txt",
        "rawframes_rgb_testlist01.txt", "classes.txt", "annotation_options.json")]  # fmt: skip
    kept = [out / ".manifest.parquet.mine.tmp", out / "v" / ".flow.npy.0a1b2c3d.tmp",
            out / ".notes.txt.0a1b2c3d.tmp"]  # fmt: skip
    for path in leftovers + kept:
        path.write_bytes(b"")
    assert _invoke(["run", str(folder), "-o", str(out), *DIS, "--resume"]).exit_code == 0
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in kept)  # not a name the run's writers give there


def test_a_run_over_its_manifest_budget_still_ends_with_every_row(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(manifest_module, "MAX_WRITE_SHARE", 0.0)  # only forced writes
    folder = tmp_path / "in"
    for n in range(3):
        _video(folder / f"v{n}.mkv", width=32, height=32, num_frames=3, codec="ffv1")
    (folder / "broken.mp4").write_text("not a video")
    out = tmp_path / "out"
    result = _invoke(["run", str(folder), "-o", str(out), *DIS, "--workers", "0"])
    assert result.exit_code != 0
    statuses = {path: row["status"] for path, row in _manifest(out).items()}
    assert statuses == {"v0.mkv": "ok", "v1.mkv": "ok", "v2.mkv": "ok", "broken.mp4": "failed"}


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_for(predicate, seconds: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_second_run_is_refused_and_a_killed_run_leaves_no_worker(
    small_videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = subprocess.Popen(
        cli_command(
            Failures(hang_on="a.mkv"), ["-q", "run", str(small_videos), "-o", str(out), *DIS]
        ),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = out / LOCK_NAME
        assert _wait_for(lambda: lock.exists() and lock.read_text().strip(), 60)
        assert lock.read_text().split("\n")[0] == str(first.pid)
        second = _invoke(["run", str(small_videos), "-o", str(out), *DIS, "--resume"])
        assert second.exit_code == 1
        assert str(lock) in second.output and f"PID {first.pid}" in second.output
        assert _wait_for(lambda: len(_children(first.pid)) > 0, 60)
        workers = _children(first.pid)
    finally:
        first.kill()
        first.wait()
    try:
        assert _wait_for(lambda: not any(_alive(pid) for pid in workers), 10, 0.05), workers
    finally:
        for pid in workers:  # only if the assertion failed: do not leave a hung worker behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _snapshot(out: Path) -> dict[str, object]:
    """Every file below ``out``, comparable between two output folders: bytes, except that
    meta.json drops how it ran (timings, threads, kernels chosen) and names the output root
    generically, and the manifest drops its timings and the ``reused`` flag."""
    files: dict[str, object] = {}
    for path in sorted(out.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(out).as_posix()
        if path.name == "meta.json":
            meta = json.loads(path.read_text(encoding="utf-8"))
            for how_it_ran in ("seconds", "machine", "kernels"):
                meta.pop(how_it_ran)
            text = json.dumps(meta, sort_keys=True).replace(str(out), "<OUT>")
            files[rel] = text
        elif rel in ("manifest.csv", "manifest.parquet"):
            table = pd.read_csv(path, keep_default_na=False) if rel.endswith("csv") else (
                pd.read_parquet(path)
            )  # fmt: skip
            keep = [c for c in table.columns if not c.startswith("seconds_") and c != "reused"]
            files[rel] = table[keep].to_csv(index=False)
        else:
            files[rel] = path.read_bytes()
    return files


def _working_videos(folder: Path, count: int) -> None:
    """``count`` lossless 30-frame videos, each long enough to stop a run in the middle of."""
    for n in range(count):
        _video(
            folder / f"v{n}.mkv", width=128, height=96, num_frames=30, codec="ffv1",
            pix_fmt="yuv444p",
        )  # fmt: skip


def _signal_after_a_video(args: list[str], out: Path, signum: int) -> tuple[int, str]:
    """Runs the CLI with ``args`` in a process, sends it ``signum`` as soon as a video of
    ``out`` has finished; its exit status and stderr. The run must have been stopped mid-way:
    some rows still ``pending``, none failed."""
    process = subprocess.Popen(_cli(args), cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: any(out.glob("*/meta.json")), 120, 0.002)
    finally:
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    statuses = {r["video_id"]: r["status"] for r in _manifest(out).values()}
    assert set(statuses.values()) <= {"ok", "pending"} and "pending" in statuses.values()
    return process.returncode, stderr


@pytest.mark.slow
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    """SIGKILL a real CLI process after its first video, resume, compare with a clean run."""
    _working_videos(tmp_path / "in", 3)
    args = ["run", str(tmp_path / "in"), *DIS, "--formats", "npy,flo"]
    clean = tmp_path / "clean"
    assert _invoke([*args, "-o", str(clean), "--workers", "0"]).exit_code == 0

    out = tmp_path / "out"
    _signal_after_a_video([*args, "-o", str(out)], out, signal.SIGKILL)
    finished = {p.parent.name for p in out.glob("*/meta.json")}
    assert 1 <= len(finished) < 3, "the run was not killed while it was working"

    resumed = _invoke([*args, "-o", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    rows = _manifest(out)
    assert {r["video_id"] for r in rows.values() if r["reused"]} == finished
    assert _snapshot(out) == _snapshot(clean)


def test_a_terminated_run_stops_as_an_interrupted_one_does(tmp_path: Path) -> None:
    """SIGTERM (``kill``, a cluster scheduler's time limit) stops the workers and writes the
    manifest, as Ctrl-C does, instead of ending the process on the spot: exit status 143, a
    line saying so, finished and pending rows, the lock released; ``--resume`` finishes."""
    _working_videos(tmp_path / "in", 4)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "in"), *DIS, "--formats", "npy", "-o", str(out)]
    status, stderr = _signal_after_a_video(args, out, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, stderr
    assert "terminated (SIGTERM)" in stderr and "--resume to continue" in stderr
    assert not (out / ".motionpipe.lock").exists()
    assert _invoke([*args, "--resume"]).exit_code == 0
    assert {r["status"] for r in _manifest(out).values()} == {"ok"}


def test_a_ray_cluster_that_cannot_be_reached_touches_nothing(
    small_videos: Path, tmp_path: Path, monkeypatch
) -> None:
    """One line naming the address, exit 1, and no output folder: the same command works
    once the cluster is up."""
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "out"
    result = _invoke(["run", str(small_videos), *DIS, "-o", str(out), "--executor", "ray",
                      "--address", "auto"])  # fmt: skip
    assert result.exit_code == 1
    assert "cannot reach Ray at 'auto': ConnectionError" in result.output
    assert "Traceback" not in result.output and not out.exists()
    # an address where nothing listens is refused at once (ray.init would retry for minutes)
    result = _invoke(["run", str(small_videos), *DIS, "-o", str(out), "--executor", "ray",
                      "--address", "127.0.0.1:1"])  # fmt: skip
    assert result.exit_code == 1 and "nothing answers at 127.0.0.1:1" in result.output
    assert not out.exists()


@pytest.mark.slow
def test_ray_executor_matches_in_process(videos_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("asl_again.mkv", "asl_book.mkv", "asl_milk.mkv"):
        os.symlink(videos_dir / name, folder / name)
    args = ["run", str(folder), *DIS, "--set", "decode.max_side=160"]
    local = _invoke([*args, "-o", str(tmp_path / "local"), "--workers", "0"])
    assert local.exit_code == 0, local.output
    ray = _invoke([*args, "-o", str(tmp_path / "ray"), "--executor", "ray", "--address",
                   "local", "--workers", "2"])  # fmt: skip
    assert ray.exit_code == 0, ray.output
    for name in ("asl_again", "asl_book", "asl_milk"):
        expected = np.load(tmp_path / "local" / name / "flow.npy")
        assert expected.shape[1:] == (120, 160, 2)
        np.testing.assert_array_equal(np.load(tmp_path / "ray" / name / "flow.npy"), expected)
    assert _snapshot(tmp_path / "ray").keys() == _snapshot(tmp_path / "local").keys()


@pytest.mark.slow
def test_a_ray_node_lost_mid_video_costs_one_attempt(
    small_videos: Path, tmp_path: Path, monkeypatch
) -> None:
    """Two worker nodes simulated on this machine; the node running b.mkv is removed while b
    is in progress: b is tried again on the other node, every row ends ok and complete."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    marker = tmp_path / "hanging.json"
    inject(monkeypatch, Failures(hang_once_on="b.mkv", marker=str(marker)))
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the workers import motionpipe
    fast_failure_detection = {
        "health_check_initial_delay_ms": 0,
        "health_check_period_ms": 500,
        "health_check_failure_threshold": 2,
    }
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "_system_config": fast_failure_detection},
    )  # the head runs no worker: removing a worker node leaves the cluster up
    out = tmp_path / "out"
    outcome = {}
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        args = ["run", str(small_videos), "-o", str(out), *DIS, "--executor", "ray",
                "--address", cluster.address, "--workers", "2"]  # fmt: skip
        runner = threading.Thread(target=lambda: outcome.update(result=_invoke(args)))
        runner.start()
        assert _wait_for(lambda: marker.exists() and marker.read_text(), 300, 0.05)
        node_id = json.loads(marker.read_text())["node"]
        cluster.remove_node(next(n for n in nodes if n.node_id == node_id), allow_graceful=False)
        runner.join(300)
        assert not runner.is_alive(), "the run did not finish after losing a node"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    assert "trying it again on another worker" in result.output
    rows = _manifest(out)
    assert {path: row["status"] for path, row in rows.items()} == {
        "a.mkv": "ok",
        "b.mkv": "ok",
        "c.mkv": "ok",
    }
    for row in rows.values():
        _check_complete(out, row)


def _in_session(sid: int) -> list[int]:
    """The live processes of session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a shell's background job ignores it


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_ray_run_stops_on_ctrl_c_or_sigterm_mid_video(
    small_videos: Path, tmp_path: Path, signum: int
) -> None:
    """Ctrl-C or SIGTERM while a Ray actor is in the middle of a video stops the run as with
    local workers (exit 130 / 143, the line saying --resume continues it, the manifest
    written), at once, and leaves no Ray process behind."""
    pytest.importorskip("ray")
    marker = tmp_path / "hanging.json"
    out = tmp_path / "out"
    args = ["-q", "run", str(small_videos), "-o", str(out), *DIS, "--executor", "ray",
            "--address", "local", "--workers", "2"]  # fmt: skip
    process = subprocess.Popen(
        cli_command(Failures(hang_once_on="b.mkv", marker=str(marker)), args),
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    try:
        assert _wait_for(lambda: marker.exists() and marker.read_text(), 180, 0.05)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stopped = _wait_for(lambda: not _in_session(process.pid), 30, 0.1)
        for pid in _in_session(process.pid):  # only if the assertion below fails
            os.kill(pid, signal.SIGKILL)
    assert process.returncode == 128 + signum, stderr
    how = "interrupted" if signum == signal.SIGINT else "terminated (SIGTERM)"
    assert how in stderr and "--resume to continue" in stderr, stderr
    assert stopped, "Ray processes were left behind"
    assert _manifest(out)["b.mkv"]["status"] == "pending"
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_video_that_kills_its_ray_worker_twice_fails_alone(
    small_videos: Path, tmp_path: Path, monkeypatch
) -> None:
    pytest.importorskip("ray")
    _video(small_videos / "crash_me.mkv", num_frames=4, codec="ffv1")
    inject(monkeypatch, Failures(crash_on="crash_me"))  # os.abort() in whichever worker
    out = tmp_path / "out"
    result = _invoke(["run", str(small_videos), "-o", str(out), *DIS, "--executor", "ray",
                      "--address", "local", "--workers", "2"])  # fmt: skip
    assert result.exit_code == 1, result.output
    rows = _manifest(out)
    crashed = rows.pop("crash_me.mkv")
    assert (crashed["status"], crashed["error_type"]) == ("failed", "WorkerCrash")
    assert "lost its Ray worker 2 times while processing crash_me.mkv" in crashed["error"]
    assert {row["status"] for row in rows.values()} == {"ok"} and len(rows) == 3
    for row in rows.values():
        _check_complete(out, row)


def test_outputs_inside_the_input_folder_are_not_inputs(small_videos: Path) -> None:
    out = small_videos / "out"  # viz writes viz.mp4 and a folder of PNGs: both look like inputs
    args = ["run", str(small_videos), "-o", str(out), *DIS, "--workers", "0", "--formats", "viz"]
    assert _invoke(args).exit_code == 0
    assert (out / "a" / "viz.mp4").is_file()
    assert _invoke([*args, "--overwrite"]).exit_code == 0
    assert sorted(_manifest(out)) == ["a.mkv", "b.mkv", "c.mkv"]


def test_workers_are_pinned_one_per_gpu(monkeypatch) -> None:
    """The pinning rule (no GPU here: the device count is the only thing replaced)."""
    from pipeline import executors
    from pipeline.config import load_config

    monkeypatch.setattr(executors, "cuda_device_count", lambda: 2)
    auto = load_config(None, {"flow.model": "dis"})
    assert executors.worker_devices(auto, None) == ["cuda:0", "cuda:1"]
    assert executors.worker_devices(auto, 3) == ["cuda:0", "cuda:1", "cuda:0"]
    cpu = load_config(None, {"flow.device": "cpu"})
    assert executors.worker_devices(cpu, None) == [None]
    pinned = executors.pinned(auto, "cuda:1")
    assert pinned.flow.device == "cuda:1" and auto.flow.device == "auto"
    monkeypatch.setattr(executors, "cuda_device_count", lambda: 0)
    assert executors.worker_devices(auto, None) == [None]
    assert executors.worker_devices(auto, 2) == [None, None]
