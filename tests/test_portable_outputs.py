"""Paths that survive moving the output folder: meta.json, the manifest and the consistency
summary store paths relative to the output root (absolute input paths in their own field)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from pipeline.cli import main
from tests.media import write_video


def _run(args: list[str]):
    result = CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_a_moved_project_folder_keeps_working(tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    (project / "videos" / "a").mkdir(parents=True)
    write_video(project / "videos" / "a" / "clip.mkv", num_frames=5, codec="ffv1")
    monkeypatch.chdir(project)  # relative paths, as typed on a command line
    _run(["run", "videos", "-o", "out", "--model", "dis", "--workers", "0", "--no-progress",
          "--formats", "npy,viz"])  # fmt: skip
    _run(["consistency", "--source", "videos/a/clip.mkv", "--processed", "videos/a/clip.mkv",
          "-o", "out/report", "--model", "dis", "--no-progress"])  # fmt: skip

    moved = tmp_path / "elsewhere" / "project"
    moved.parent.mkdir()
    shutil.move(project, moved)
    monkeypatch.chdir(tmp_path)
    root = moved / "out"
    meta = json.loads((root / "a" / "clip" / "meta.json").read_text())
    assert meta["video"] == "../videos/a/clip.mkv"  # relative to the output root
    assert (root / meta["video"]).is_file()
    assert meta["video_absolute"] == str(project / "videos" / "a" / "clip.mkv")
    assert meta["outputs"]["npy"] == "a/clip/flow.npy"
    assert all((root / path).exists() for path in meta["outputs"].values())
    summary = pd.read_csv(root / "report" / "consistency_summary.csv")
    assert summary.loc[0, "source"] == "../../videos/a/clip.mkv"
    assert (root / "report" / summary.loc[0, "processed"]).is_file()
    assert summary.loc[0, "processed_absolute"] == str(project / "videos" / "a" / "clip.mkv")

    # --resume in the new place keeps the video and lists outputs relative to the new root
    _run(["run", str(moved / "videos"), "-o", str(root), "--model", "dis", "--workers", "0",
          "--no-progress", "--formats", "npy,viz", "--resume"])  # fmt: skip
    manifest = pd.read_csv(root / "manifest.csv")
    assert manifest.loc[0, "reused"]
    outputs = json.loads(manifest.loc[0, "outputs"])
    assert outputs["npy"] == "a/clip/flow.npy" and outputs["meta"] == "a/clip/meta.json"
