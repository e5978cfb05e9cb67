"""Shared test fixtures: the ground-truth folder and small generated inputs.

The shared ground truth (parity fixtures, sample videos) lives outside the repository, in
``../shared`` or ``$MOTIONPIPE_SHARED``. Tests reach it only through the fixtures below. Where
it is missing, its tests are skipped on a developer machine but fail under CI (``CI`` set to
anything but empty, ``0`` or ``false``), so that a CI run never passes by skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("MOTIONPIPE_SHARED", REPO_ROOT.parent / "shared"))
PARITY_DIR = SHARED_DIR / "fixtures" / "parity"
INSPECT_DIR = SHARED_DIR / "fixtures" / "inspect"
VIDEOS_DIR = SHARED_DIR / "videos"

torch.set_num_threads(min(2, os.cpu_count() or 1))

# The suite never reads or writes the user's cache: which checkpoint ``model: auto`` finds and
# which convolution kernel a saved timing picks must not depend on what the machine ran before
# (its own runs and worker processes inherit this; a test may point it elsewhere).
_TEST_CACHE = tempfile.mkdtemp(prefix="motionpipe-test-cache-")
os.environ["MOTIONPIPE_CACHE"] = _TEST_CACHE


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_TEST_CACHE, ignore_errors=True)


def running_under_ci() -> bool:
    """Whether ``CI`` is set to anything but empty, ``0`` or ``false`` (any case)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def shared_folder(path: Path, what: str) -> Path:
    """``path`` if it is a folder; otherwise skip the test, or fail it under CI."""
    if path.is_dir():
        return path
    message = f"{what} not found at {path} (set MOTIONPIPE_SHARED to the shared folder)"
    if running_under_ci():
        pytest.fail(f"{message}; CI is set, so a missing shared folder fails", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return shared_folder(PARITY_DIR, "parity fixtures")


@pytest.fixture(scope="session")
def inspect_dir() -> Path:
    return shared_folder(INSPECT_DIR, "inspect fixtures")


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return shared_folder(VIDEOS_DIR, "sample videos")


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
