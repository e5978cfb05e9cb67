"""The consistency command on a real clip, and the warp stage inside `run`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.consistency_cmd import _ratio
from stages.decode import DecodeConfig, open_video
from tests.conftest import REPO_ROOT
from tests.media import write_frames, write_video

SIDE = 160  # frames are downscaled to this long side to keep the test fast


@pytest.fixture(scope="module")
def source_frames(videos_dir: Path) -> list[np.ndarray]:
    options = DecodeConfig(backend="pyav", max_side=SIDE, end=1.0)
    with open_video(videos_dir / "asl_again.mkv", options) as reader:
        return [frame.rgb for frame in reader.frames()]


@pytest.fixture(scope="module")
def copies(tmp_path_factory, source_frames) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("consistency")
    frames = np.stack(source_frames).astype(np.float32)
    rng = np.random.default_rng(0)
    flicker = frames * rng.uniform(0.8, 1.2, size=(len(frames), 1, 1, 1))
    smoothed = frames.copy()
    smoothed[1:-1] = (frames[:-2] + frames[1:-1] + frames[2:]) / 3
    shuffled = frames[rng.permutation(len(frames))]
    variants = {"source": frames, "flicker": flicker, "smoothed": smoothed, "shuffled": shuffled}
    paths = {}
    for name, stack in variants.items():
        paths[name] = folder / f"{name}.mkv"
        write_frames(
            paths[name],
            list(np.clip(np.rint(stack), 0, 255).astype(np.uint8)),
            codec="ffv1",
            pix_fmt="yuv444p",
        )
    paths["short"] = folder / "short.mkv"
    write_frames(paths["short"], source_frames[:-3], codec="ffv1", pix_fmt="yuv444p")
    paths["small"] = folder / "small.mkv"
    write_frames(paths["small"], [f[:64, :64] for f in source_frames], codec="ffv1")
    return paths


def _consistency(source: Path, processed: Path, out: Path):
    return CliRunner().invoke(
        main,
        ["-q", "consistency", "--source", str(source), "--processed", str(processed),
         "-o", str(out), "--model", "dis"],
    )  # fmt: skip


def test_flicker_raises_and_smoothing_lowers_warping_error(copies, tmp_path: Path) -> None:
    out = tmp_path / "report"
    for name in ("flicker", "smoothed", "shuffled", "source"):
        result = _consistency(copies["source"], copies[name], out)
        assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "consistency_summary.csv").set_index("processed_absolute")
    assert {"e_warp_source", "e_warp_processed"} <= set(summary.columns)
    row = lambda name: summary.loc[str(copies[name])]  # noqa: E731
    baseline = row("source")["e_warp_source"]
    assert row("source")["e_warp_processed"] == pytest.approx(baseline)
    assert row("flicker")["e_warp_processed"] > 2 * baseline
    assert row("smoothed")["e_warp_processed"] < baseline
    assert row("shuffled")["e_warp_processed"] > 5 * baseline
    details = out / row("flicker")["details"]
    frames = pd.read_parquet(details / "consistency_frames.parquet")
    assert len(frames) == int(row("flicker")["pairs"])
    assert Image.open(details / "consistency.png").format == "PNG"


def test_equal_file_names_in_different_folders_keep_their_own_tables(
    copies, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a/proc.mkv and b/proc.mkv evaluated into one report: two rows, two intact tables that
    mirror the processed files' paths; another source for a/proc.mkv gets a folder of its own."""
    monkeypatch.chdir(tmp_path)
    for folder, variant in (("a", "flicker"), ("b", "smoothed")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "proc.mkv").symlink_to(copies[variant])
    for processed in ("a/proc.mkv", "b/proc.mkv"):
        result = _consistency(copies["source"], Path(processed), Path("report"))
        assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "report" / "consistency_summary.csv")
    assert sorted(summary["details"]) == ["a/proc", "b/proc"]
    for _, row in summary.iterrows():
        table = pd.read_csv(tmp_path / "report" / row["details"] / "consistency_frames.csv")
        assert len(table) == row["pairs"]
        assert table["e_warp_processed"].mean() == pytest.approx(row["e_warp_processed"])
        assert row["processed_absolute"] == str(tmp_path / row["details"]) + ".mkv"
        assert row["processed"] == f"../{row['details']}.mkv"  # relative to the report folder
    a, b = (
        summary.set_index("details").loc[name, "e_warp_processed"] for name in ("a/proc", "b/proc")
    )
    assert a > b  # the flickering copy's table was not overwritten by the smoothed one's

    result = _consistency(copies["flicker"], Path("a/proc.mkv"), Path("report"))
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "report" / "consistency_summary.csv")
    assert sorted(summary["details"]) == ["a/proc", "a/proc_mkv", "b/proc"]


def test_mismatched_inputs_fail_clearly(copies, tmp_path: Path) -> None:
    result = _consistency(copies["source"], copies["short"], tmp_path / "a")
    assert result.exit_code != 0 and "frame counts differ" in result.output
    result = _consistency(copies["source"], copies["small"], tmp_path / "b")
    assert result.exit_code != 0 and "frame sizes differ" in result.output


def test_run_writes_warped_frames_masks_and_metrics(copies, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["-q", "run", str(copies["source"]), "-o", str(out), "--model", "dis", "--no-progress",
         "--set", "warp.enabled=true"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    video = out / "source"
    table = pd.read_csv(video / "consistency.csv")
    pairs = len(pd.read_csv(video / "pairs.csv"))
    assert len(table) == pairs and table["e_warp"].notna().all()
    warped = np.asarray(Image.open(video / "warped" / "000000.png"))
    occlusion = np.asarray(Image.open(video / "occlusion" / "000000.png"))
    assert warped.shape[:2] == occlusion.shape and set(np.unique(occlusion)) <= {0, 255}
    assert (video / "warped.mp4").is_file()
    # the occlusion test's backward flow is written only when --backward asks for it
    assert not (video / "flow_bw.npy").exists()
    assert "npy_bw" not in json.loads((video / "meta.json").read_text())["outputs"]


def _strict_json(path: Path) -> dict:
    """JSON as strict parsers (JavaScript, jq --strict) read it: no NaN / Infinity words."""

    def refuse(word: str) -> None:
        raise ValueError(f"{path} holds {word}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _run_warped(video: Path, out: Path, *options: str) -> Path:
    """``run`` with DIS and the warp stage on ``video``; its output folder."""
    result = CliRunner().invoke(
        main,
        ["-q", "run", str(video), "-o", str(out), "--model", "dis", "--no-progress",
         "--workers", "0", "--set", "warp.enabled=true", *options],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out / video.stem


def _previews(folder: Path) -> dict[str, tuple[Fraction, int]]:
    """Each preview video's ``(frame rate, frame count)``."""
    streams = {}
    for preview in ("warped.mp4", "viz.mp4"):
        with av.open(str(folder / preview)) as container:
            stream = container.streams.video[0]
            streams[preview] = (stream.average_rate, stream.frames)
    return streams


def test_occlusion_off_stays_off_with_backward_flow_and_previews_play_at_the_kept_rate(
    copies, tmp_path: Path
) -> None:
    video = _run_warped(copies["source"], tmp_path / "out", "--backward", "--formats",
                        "npy,viz", "--set", "warp.occlusion=false", "--set", "decode.stride=2")  # fmt: skip
    assert (video / "flow_bw.npy").is_file() and not (video / "occlusion").exists()
    table = pd.read_csv(video / "consistency.csv")
    assert table["occluded_fraction"].isna().all()
    meta = _strict_json(video / "meta.json")
    assert meta["summary"]["warp"]["occluded_fraction"] is None  # NaN is written as null
    assert meta["outputs"]["consistency_csv"] == "source/consistency.csv"
    for rate, _ in _previews(video).values():  # every 2nd frame: half the source's rate
        assert rate == meta["fps"] / 2


def test_previews_of_a_target_rate_above_the_source_rate_play_at_the_source_rate(
    tmp_path: Path,
) -> None:
    """``decode.target_fps`` never duplicates frames: 10 fps resampled "to 25" keeps the 10
    frames a second, and the previews play them in real time, not 2.5x too fast."""
    clip = write_video(tmp_path / "ten.mkv", num_frames=10, fps=10, velocity=(0.5, 0.25))
    video = _run_warped(clip, tmp_path / "out", "--formats", "viz", "--set",
                        "decode.target_fps=25")  # fmt: skip
    pairs = pd.read_csv(video / "pairs.csv")
    assert len(pairs) == 9 and pairs["pts_t_k"].iloc[-1] == pytest.approx(0.9)
    assert set(_previews(video).values()) == {(10, len(pairs))}


def test_ratio_of_two_zero_errors_is_one() -> None:
    """A still shot against its exact copy: both errors are 0, and the copy is as stable."""
    assert _ratio(0.0, 0.0) == 1.0
    assert _ratio(1e-3, 0.0) == math.inf
    assert _ratio(3e-3, 1e-3) == pytest.approx(3.0)


def test_a_folder_the_command_did_not_write_is_never_replaced(
    copies, tmp_path: Path, monkeypatch
) -> None:
    """``-o .`` with ``results.mkv`` beside a user's ``results/`` folder: the folder stays."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "notes.txt").write_text("keep me")
    processed = tmp_path / "results.mkv"
    processed.write_bytes(copies["flicker"].read_bytes())
    result = _consistency(copies["source"], Path("results.mkv"), Path("."))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results" / "notes.txt").read_text() == "keep me"
    summary = pd.read_csv(tmp_path / "consistency_summary.csv")
    assert summary["details"].tolist() == ["results_mkv"]
    assert (tmp_path / "results_mkv" / "consistency_frames.csv").is_file()


def test_rows_record_their_settings_and_a_pair_that_now_fails_loses_its_result(
    copies, tmp_path: Path, monkeypatch
) -> None:
    """Each row has its configuration's hash (the details folder its config.yaml), so rows made
    with other settings are told apart; flow.backward=false keeps the occlusion test (the
    command computes backward flow for it, as run does). When a pair's processed file later
    fails, its earlier row and files go: they no longer describe the file."""
    monkeypatch.chdir(tmp_path)
    for name in ("flicker", "smoothed"):
        (tmp_path / f"{name}.mkv").write_bytes(copies[name].read_bytes())
    assert _consistency(copies["source"], Path("flicker.mkv"), Path("rep")).exit_code == 0
    assert _consistency(copies["source"], Path("smoothed.mkv"), Path("rep")).exit_code == 0
    other = CliRunner().invoke(
        main,
        ["-q", "consistency", "--source", str(copies["source"]), "--processed", "flicker.mkv",
         "-o", "other", "--model", "dis", "--set", "flow.backward=false",
         "--set", "warp.count_outside=true"],
    )  # fmt: skip
    assert other.exit_code == 0, other.output
    first = pd.read_csv(tmp_path / "rep" / "consistency_summary.csv").iloc[0]
    changed = pd.read_csv(tmp_path / "other" / "consistency_summary.csv").iloc[0]
    assert first["config_hash"] != changed["config_hash"]
    saved = yaml.safe_load((tmp_path / "other" / "flicker" / "config.yaml").read_text())
    assert saved["warp"]["count_outside"] is True
    assert changed["occluded_fraction"] > 0  # the occlusion test ran without flow.backward

    (tmp_path / "flicker.mkv").write_bytes(copies["short"].read_bytes())
    result = _consistency(copies["source"], Path("flicker.mkv"), Path("rep"))
    assert result.exit_code != 0 and "frame counts differ" in result.output
    assert "earlier result" in result.output
    summary = pd.read_csv(tmp_path / "rep" / "consistency_summary.csv")
    assert summary["details"].tolist() == ["smoothed"]
    assert not (tmp_path / "rep" / "flicker").exists()
    assert (tmp_path / "rep" / "smoothed" / "consistency_frames.csv").is_file()


def test_runs_into_one_report_at_once_keep_every_row(copies, tmp_path: Path) -> None:
    """Three processes evaluating three pairs into one folder at the same time: each files its
    row under the report's lock, none is lost."""
    names = ("flicker", "smoothed", "shuffled")
    commands = [
        [sys.executable, str(REPO_ROOT / "run_pipeline.py"), "-q", "consistency", "--source",
         str(copies["source"]), "--processed", str(copies[name]), "-o", str(tmp_path / "rep"),
         "--model", "dis", "--no-progress"]
        for name in names
    ]  # fmt: skip
    processes = [subprocess.Popen(c, stderr=subprocess.PIPE, text=True) for c in commands]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    summary = pd.read_csv(tmp_path / "rep" / "consistency_summary.csv")
    assert sorted(Path(folder).name for folder in summary["details"]) == sorted(names)


def test_a_lost_rotation_tag_is_named(tmp_path: Path) -> None:
    """A processed copy whose rotation tag was lost holds frames turned against the source's:
    square frames are compared with a warning naming both tags, others refused naming them."""
    frames = [np.full((48, 48, 3), 10 * i, np.uint8) for i in range(4)]
    turned = write_frames(tmp_path / "turned.mp4", frames, codec="ffv1", rotation=90)
    plain = write_frames(tmp_path / "plain.mp4", frames, codec="ffv1")
    square = _consistency(turned, plain, tmp_path / "square")
    assert square.exit_code == 0, square.output
    assert "rotation tags differ: source 90 degrees, processed 0 degrees" in square.output
    wide = [np.zeros((32, 48, 3), np.uint8)] * 4
    turned = write_frames(tmp_path / "turned_wide.mp4", wide, codec="ffv1", rotation=90)
    plain = write_frames(tmp_path / "plain_wide.mp4", wide, codec="ffv1")
    result = _consistency(turned, plain, tmp_path / "wide")
    assert result.exit_code != 0
    assert "frame sizes differ" in result.output and "rotation tags differ" in result.output
