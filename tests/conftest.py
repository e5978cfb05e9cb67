"""Shared test fixtures: the ground-truth folder and small generated inputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("MOTIONPIPE_SHARED", REPO_ROOT.parent / "shared"))
PARITY_DIR = SHARED_DIR / "fixtures" / "parity"
VIDEOS_DIR = SHARED_DIR / "videos"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY_DIR.is_dir():
        pytest.skip(f"parity fixtures not found at {PARITY_DIR}")
    return PARITY_DIR


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    if not VIDEOS_DIR.is_dir():
        pytest.skip(f"sample videos not found at {VIDEOS_DIR}")
    return VIDEOS_DIR


def _mount_tmpfs(path: Path, *options: str) -> bool:
    """Mounts a tmpfs at ``path``; False where this process may not (not root, no Linux)."""
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)]
    return subprocess.run(command, capture_output=True).returncode == 0


@pytest.fixture
def small_disk() -> Iterator[Callable[[Path, str], Path]]:
    """``small_disk(path, "1m")`` mounts a real file system of that size at ``path`` (a tmpfs:
    a full disk gives real ``ENOSPC`` errors); skips where mounting is not permitted."""
    mounted: list[Path] = []

    def make(path: Path, size: str) -> Path:
        if not _mount_tmpfs(path, f"size={size}", "mode=0777"):
            pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN) on Linux")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write to: mode 0555 for a normal user; for root (who
    ignores modes) a read-only tmpfs, skipped where mounting is not permitted."""
    folder = tmp_path / "read_only"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if not _mount_tmpfs(folder, "ro", "size=64k"):
        pytest.skip("root ignores folder modes and mounting a read-only tmpfs is not permitted")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
