"""Output files users can trust: permissions from the umask, write errors that name the file."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from models.atomic_files import write_bytes_atomic
from models.weights import BUNDLED_DIR, WEIGHTS
from pipeline.batch import LOCK_NAME, OutputLock, OutputLocked, run_batch
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.discovery import find_inputs
from pipeline.executors import Execution
from tests.conftest import REPO_ROOT
from tests.failure_injection import Failures, fill_disk, inject
from tests.media import write_video


@pytest.fixture
def umask() -> Iterator[callable]:
    """``umask(value)`` sets the process umask for the test; the old one comes back after."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


def _run_dis(video: Path, out: Path, *args: str):
    """``run VIDEO -o OUT`` with DIS, in this process, without bars; ``args`` added."""
    command = ["-q", "run", str(video), "-o", str(out), "--model", "dis", "--workers", "0"]
    return CliRunner().invoke(main, [*command, "--no-progress", *args])


def _files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def test_every_output_file_is_readable_by_others_under_umask_022(tmp_path: Path, umask) -> None:
    umask(0o022)
    (tmp_path / "in").mkdir()
    video = write_video(tmp_path / "in" / "clip.mkv", width=64, height=64, num_frames=10)
    out, report = tmp_path / "out", tmp_path / "report"
    run = _run_dis(video, out, "--formats", "flo,npy,npz,kitti,jpg,viz",
                   "--set", "output.write_rgb=true", "--set", "features.enabled=true",
                   "--set", "features.clip_len=4", "--set", "warp.enabled=true")  # fmt: skip
    assert run.exit_code == 0, run.output
    check = CliRunner().invoke(
        main,
        ["-q", "consistency", "--source", str(video), "--processed", str(video), "-o",
         str(report), "--model", "dis"],
    )  # fmt: skip
    assert check.exit_code == 0, check.output
    files = _files(out, report)
    names = {p.name for p in files}
    for expected in ("meta.json", "flow.npy", "flow.npz", "viz.mp4", "pairs.csv",
                     "clips.parquet", "manifest.csv", "config.yaml", "features.parquet",
                     "consistency.csv", "consistency_summary.csv", "consistency.png"):  # fmt: skip
        assert expected in names, expected
    for suffix in (".flo", ".png", ".jpg", ".npz"):
        assert any(p.suffix == suffix for p in files), suffix
    narrow = [
        f"{p.relative_to(tmp_path)} {stat.filemode(p.stat().st_mode)}"
        for p in files
        if p.stat().st_mode & 0o044 != 0o044
    ]
    assert not narrow


def test_atomic_files_take_the_umask_like_open_does(tmp_path: Path, umask) -> None:
    for mask in (0o022, 0o027, 0o077):
        umask(mask)
        path = tmp_path / f"{mask:o}.bin"
        write_bytes_atomic(path, b"data")
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
        assert list(tmp_path.glob(".*.tmp")) == []


def test_only_files_that_mark_completion_are_fsynced(tmp_path: Path, monkeypatch) -> None:
    """Per-pair and per-video outputs are not fsynced (meta.json, written last, marks a video
    complete); meta.json and the run-level files (manifest, config.yaml, the action-recognition
    lists) are."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the fsynced files")
    monkeypatch.setattr(os, "fsync", recording_fsync)
    video = write_video(tmp_path / "clip.mkv", width=64, height=48, num_frames=12)
    out = tmp_path / "out"
    run = _run_dis(video, out, "--formats", "flo,npy,kitti,jpg")
    assert run.exit_code == 0, run.output
    assert len(list((out / "clip" / "flo").glob("*.flo"))) == 11
    targets = {name.split(".")[1] + "." + name.split(".")[2] for name in synced}
    run_level = {"manifest.parquet", "manifest.csv", "config.yaml", "rawframes_flow.txt",
                 "mmaction2_rawframes.py", "annotation_options.json"}  # fmt: skip
    assert targets <= {"meta.json", *run_level}, synced
    assert "meta.json" in targets and "manifest.parquet" in targets


def _failed_row(out: Path) -> dict:
    table = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(table) == 1
    return table.iloc[0].to_dict()


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path: Path, small_disk) -> None:
    disk = small_disk(tmp_path / "disk", "1500k")
    video = write_video(tmp_path / "a.mkv", width=64, height=48, num_frames=40, codec="ffv1")
    out = disk / "out"
    result = _run_dis(video, out, "--formats", "npy,flo")
    assert result.exit_code == 1, result.output
    row = _failed_row(out)
    assert row["status"] == "failed" and "[Errno 28] No space left on device" in row["error"]
    assert str(out / "a") in row["error"], row["error"]
    assert not list((out / "a").glob("meta.json"))


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_a_write_error_without_a_path_is_reported_with_the_file(tmp_path: Path) -> None:
    """A file-size limit makes write(2) fail with EFBIG, which names no file, as ENOSPC does."""
    import resource

    video = write_video(tmp_path / "a.mkv", width=64, height=48, num_frames=40, codec="ffv1")
    out = tmp_path / "out"

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error instead of the signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_pipeline.py"), "-q", "run", str(video), "-o",
         str(out), "--model", "dis", "--workers", "0", "--no-progress"],
        cwd=REPO_ROOT, preexec_fn=limit_file_size, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 1, completed.stderr
    row = _failed_row(out)
    assert "[Errno 27] File too large" in row["error"]
    assert f"'{out / 'a' / 'flow.npy'}'" in row["error"], row["error"]


def _jpg_features(*args: str) -> list[str]:
    return ["--formats", "npy,jpg", "--set", "features.enabled=true",
            "--set", "features.clip_len=4", *args]  # fmt: skip


def test_a_disk_that_fills_after_the_videos_fails_the_run_level_files(
    tmp_path: Path, small_disk, monkeypatch
) -> None:
    """Both videos finish, then the disk is full: the manifest, the features table and the
    lists cannot be written. One error line each, the summary, exit 1, no table or list of an
    earlier state; after making room, --resume keeps both videos and writes them all."""
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        write_video(tmp_path / "in" / f"{name}.mkv", width=64, height=48, num_frames=10)
    out = small_disk(tmp_path / "disk", "4m") / "out"
    inject(monkeypatch, Failures(fill_disk_on="b.mkv"))
    result = _run_dis(tmp_path / "in", out, *_jpg_features())
    assert result.exit_code == 1, result.output
    for expected in ("the manifest in", "No space left on device", "--resume",
                     "features table not written", "annotation lists not written",
                     "ok            2"):  # fmt: skip
        assert expected in result.output, (expected, result.output)
    assert "Traceback" not in result.output
    assert not (out / "features.parquet").exists() and not (out / "rawframes_flow.txt").exists()
    assert all((out / name / "meta.json").is_file() for name in ("a", "b"))

    (out / "filler").unlink()
    monkeypatch.undo()
    again = _run_dis(tmp_path / "in", out, *_jpg_features("--resume"))
    assert again.exit_code == 0, again.output
    manifest = pd.read_csv(out / "manifest.csv")
    assert list(manifest["status"]) == ["ok", "ok"] and manifest["reused"].all()
    assert len(pd.read_parquet(out / "features.parquet")) > 0
    assert len((out / "rawframes_flow.txt").read_text().splitlines()) == 2


def test_a_run_without_finished_videos_leaves_no_earlier_table_or_list(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    video = write_video(tmp_path / "in" / "a.mkv", width=64, height=48, num_frames=10)
    out = tmp_path / "out"
    assert _run_dis(tmp_path / "in", out, *_jpg_features()).exit_code == 0
    assert (out / "features.parquet").is_file()
    video.write_bytes(b"not a video any more")
    result = _run_dis(tmp_path / "in", out, *_jpg_features("--resume"))
    assert result.exit_code == 1, result.output
    assert not (out / "features.parquet").exists()  # it listed a video that failed now
    assert (out / "rawframes_flow.txt").read_text() == ""
    assert not (out / "a").exists()


def test_a_run_leaves_no_table_or_list_it_did_not_write(tmp_path: Path) -> None:
    video = write_video(tmp_path / "a.mkv", width=64, height=48, num_frames=10)
    out = tmp_path / "out"
    assert _run_dis(video, out, *_jpg_features()).exit_code == 0
    assert (out / "features.parquet").is_file()
    as_csv = _run_dis(
        video, out, *_jpg_features("--overwrite", "--set", "features.table_format=csv")
    )
    assert as_csv.exit_code == 0, as_csv.output
    assert (out / "features.csv").is_file() and not (out / "features.parquet").exists()
    assert (out / "rawframes_flow.txt").is_file()
    without = _run_dis(video, out, "--formats", "npy", "--overwrite")
    assert without.exit_code == 0, without.output
    assert not list(out.glob("features.*"))  # nor the lists of rawframes folders now gone
    assert not list(out.glob("rawframes*")) and not (out / "mmaction2_rawframes.py").exists()
    assert not (out / "annotation_options.json").exists()


def test_an_interrupted_run_leaves_no_earlier_table_or_lists(tmp_path: Path, monkeypatch) -> None:
    """A run stopped (Ctrl-C, a killed job) after it began to redo videos must not leave the
    earlier run's features table or rawframes lists: they would list clips of the old settings
    and folders the new run already removed. ``--resume`` makes them again."""
    from stages.clip_features import ClipFeatureStage

    video = write_video(tmp_path / "a.mkv", width=64, height=48, num_frames=12)
    out = tmp_path / "out"
    first = _run_dis(video, out, *_jpg_features())
    assert first.exit_code == 0, first.output
    assert (out / "features.parquet").is_file() and (out / "rawframes_flow.txt").is_file()

    def interrupted(self, chunk):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ClipFeatureStage, "process", interrupted)
        second = _run_dis(video, out, *_jpg_features("--overwrite", "--set", "features.clip_len=5"))
    assert second.exit_code == 130, second.output
    assert not list(out.glob("features.*")) and not list(out.glob("rawframes*.txt"))
    assert (out / "annotation_options.json").is_file()  # what --resume writes the lists with
    resumed = _run_dis(video, out, *_jpg_features("--resume", "--set", "features.clip_len=5"))
    assert resumed.exit_code == 0, resumed.output
    table = pd.read_parquet(out / "features.parquet")
    assert (table["end_frame"] - table["start_frame"]).max() == 5  # the new settings' clips
    assert (out / "rawframes_flow.txt").is_file()


def test_run_level_files_are_written_under_the_lock(tmp_path: Path) -> None:
    video = write_video(tmp_path / "a.mkv", width=64, height=48, num_frames=6)
    out = tmp_path / "out"
    seen = []

    def finish_run(results) -> None:
        with pytest.raises(OutputLocked):
            OutputLock(out).acquire()
        seen.append([r.status for r in results])

    config = load_config(None, {"flow.model": "dis", "output.formats": ("npy",)})
    run_batch(find_inputs(video).jobs, tmp_path, out, config,
              execution=Execution(workers=0, progress=False), finish_run=finish_run)  # fmt: skip
    assert seen == [["ok"]] and not (out / LOCK_NAME).exists()


def test_consistency_on_a_full_disk_keeps_the_earlier_result(tmp_path: Path, small_disk) -> None:
    video = write_video(tmp_path / "a.mkv", width=64, height=48, num_frames=8)
    out = small_disk(tmp_path / "disk", "2m") / "report"
    command = ["-q", "consistency", "--source", str(video), "--processed", str(video),
               "-o", str(out), "--model", "dis", "--no-progress"]  # fmt: skip
    assert CliRunner().invoke(main, command).exit_code == 0
    before = {p: p.read_bytes() for p in _files(out)}
    assert any(p.name == "consistency.png" for p in before)
    filler = fill_disk(out.parent / "filler")
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert {p: p.read_bytes() for p in _files(out)} == before  # whole, and no partial folder
    filler.unlink()
    assert CliRunner().invoke(main, command).exit_code == 0


def test_train_and_export_on_a_full_disk_say_so(tmp_path: Path, small_disk) -> None:
    """The disk fills while ``train`` saves its state (16 MB with the optimizer's, on a 10 MB
    disk), then ``export-model`` has no room: torch's own writer reports neither as a full
    disk; both commands must."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: raft-small-convex\nsteps: 4\nbatch_size: 1\ncrop: [64, 64]\niters: 1\n"
        "workers: 0\nprecision: fp32\ncheckpoint_every: 2\ntextures: {procedural_size: 64}\n"
        "validation: {sets: []}\n"
    )
    disk = small_disk(tmp_path / "disk", "10m")
    run = disk / "run"
    result = CliRunner().invoke(main, ["train", "--config", str(config), "-o", str(run)])
    assert result.exit_code == 1, result.output
    assert "training stopped: [Errno 28] No space left on device" in result.output
    assert "make room and run the command again (no state was saved yet)" in result.output
    assert not list(run.rglob(".*.tmp")) and not (run / "state.pt").exists()
    fill_disk(disk / "filler")
    bundled = BUNDLED_DIR / WEIGHTS["motionpipe-small-v3"].file_name
    exported = CliRunner().invoke(
        main, ["export-model", str(bundled), "-o", str(disk / "shipped.pth")]
    )
    assert exported.exit_code == 1 and "No space left on device" in exported.output
    assert not (disk / "shipped.pth").exists() and not list(disk.glob(".*.tmp"))
