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
from pipeline.cli import main
from tests.conftest import REPO_ROOT
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
