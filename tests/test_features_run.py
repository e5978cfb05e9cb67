"""Motion features end to end on the shared sample clips."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from pipeline.cli import main


def test_features_for_the_shared_clips(videos_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["-q", "run", str(videos_dir), "-o", str(out), "--model", "dis", "--no-progress",
         "--formats", "npy", "--set", "decode.max_side=96", "--set", "decode.end=1.5",
         "--set", "features.enabled=true"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    videos = sorted(p.stem for p in videos_dir.iterdir() if p.suffix in (".mkv", ".mp4"))
    table = pd.read_parquet(out / "features.parquet")  # written by run for the whole batch
    assert sorted(table["video"].unique()) == videos
    assert table["hof_static"].between(0, 1).all() and table["flow_mag_mean"].ge(0).all()
    hof = table[[c for c in table.columns if c.startswith("hof_")]].sum(axis=1)
    assert (hof - 1).abs().max() < 1e-6
    first = table[table["video"] == videos[0]]
    assert first["clip_index"].tolist() == list(range(len(first)))
    assert (
        first["start_frame"].iloc[1:].to_numpy() == first["end_frame"].iloc[:-1].to_numpy() - 1
    ).all()
