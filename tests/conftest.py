"""Shared test fixtures: the ground-truth folder and small generated inputs."""

from __future__ import annotations

import os
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
