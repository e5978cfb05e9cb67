"""The rule of tests/conftest.py: tests of the shared ground truth skip where it is missing,
except under CI, where they fail and name the folder they looked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import running_under_ci

REPO_ROOT = Path(__file__).resolve().parents[1]
# One quick test per shared folder: a parity fixture and a sample video.
NODES = (
    "tests/test_weights.py::test_existing_path_is_returned_as_is",
    "tests/test_decode.py::test_shared_clip_without_frame_count_decodes_identically",
)


def _run_without_shared(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """pytest on :data:`NODES` with ``MOTIONPIPE_SHARED`` at an empty folder."""
    empty = tmp_path / "no_shared"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["MOTIONPIPE_SHARED"] = str(empty)
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *NODES]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("yes", True), ("TRUE", True), ("", False), ("0", False),
     ("false", False), ("False", False), (" false ", False), (None, False)],
)  # fmt: skip
def test_which_ci_values_count(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert running_under_ci() is expected


def test_missing_shared_folder_fails_under_ci(tmp_path: Path) -> None:
    result = _run_without_shared(tmp_path, "true")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "2 error" in output and "skipped" not in output, output
    for folder in ("fixtures/parity", "videos"):
        assert str(tmp_path / "no_shared" / folder) in output


@pytest.mark.parametrize("ci", [None, "false"])
def test_missing_shared_folder_skips_elsewhere(tmp_path: Path, ci: str | None) -> None:
    result = _run_without_shared(tmp_path, ci)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "2 skipped" in output, output
    assert str(tmp_path / "no_shared" / "fixtures" / "parity") in output
