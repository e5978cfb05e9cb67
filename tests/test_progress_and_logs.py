"""Progress bars with the right totals, log levels as the help says, notices printed once.

Bars are read from the CLI's captured stderr (tqdm writes ``n/total`` on every refresh).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from stages.decode import DecodeConfig, open_video
from stages.decoding.frames_folder import open_frames_folder
from tests.media import pattern_frame, write_frames, write_video


def _totals(stderr: str, name: str) -> list[tuple[int, int | None]]:
    """``(n, total)`` of every refresh of the bar called ``name`` (total None: unknown)."""
    found = []
    for match in re.finditer(rf"{re.escape(name)}:[^\r\n]*?(\d+)(?:/(\d+))? *\[", stderr):
        found.append((int(match.group(1)), int(match.group(2)) if match.group(2) else None))
    return found


def _invoke(args: list[str], **env):
    return CliRunner().invoke(main, args, catch_exceptions=False, env=env or None)


@pytest.mark.parametrize(
    ("suffix", "codec", "options"),
    [
        ("mp4", "libx264", {}),
        ("mp4", "libx264", {"end": 1.0}),
        ("mkv", "ffv1", {"start": 0.5, "end": 2.0}),
        ("mkv", "ffv1", {"stride": 3}),
        ("mkv", "ffv1", {"target_fps": 10}),
        ("mkv", "ffv1", {"target_fps": 7, "start": 0.3}),
        ("webm", "libvpx-vp9", {"start": 1.0, "stride": 2, "target_fps": 12, "end": 2.5}),
        ("mkv", "ffv1", {"end": 100.0}),
    ],
)
def test_expected_frames_match_the_frames_delivered(tmp_path, suffix, codec, options) -> None:
    """Matroska and WebM store no frame count: the duration and rate give it."""
    path = write_video(tmp_path / f"clip.{suffix}", num_frames=90, fps=30, codec=codec)
    with open_video(path, DecodeConfig(**options)) as reader:
        expected = reader.expected_frames()
        assert expected == sum(1 for _ in reader.frames())
    if suffix != "mp4":
        assert reader.info.header_frame_count is None


@pytest.mark.parametrize("suffix", ["mkv", "webm", "mp4"])
def test_a_stream_that_starts_late_is_counted_from_its_start(tmp_path, suffix) -> None:
    """Matroska's duration is where the segment ends, counted from 0: a stream whose first
    frame is at 0.5 s (B-frame delay, a cut) holds 0.5 s fewer frames than it reads."""
    frames = [pattern_frame(i, 64, 48) for i in range(45)]
    codec = "libvpx-vp9" if suffix == "webm" else "libx264"
    path = write_frames(tmp_path / f"late.{suffix}", frames, codec=codec, fps=30,
                        pts=[500 + 33 * i for i in range(45)], time_base=Fraction(1, 1000))  # fmt: skip
    with open_video(path, DecodeConfig()) as reader:
        assert reader.info.stream_start == 0.5
        assert reader.expected_frames() == 45 == sum(1 for _ in reader.frames())


def test_a_header_claiming_days_of_video_does_not_stall_the_count() -> None:
    """A damaged or forged duration (a billion frames at 1000 fps) is counted in closed form or
    left unknown, never walked frame by frame (that took 17 minutes before the first frame)."""
    from stages.decoding.selection import MAX_COUNTED_FRAMES, expected_count

    assert expected_count(None, 1000.0, 1e6, DecodeConfig()) == 10**9
    assert expected_count(None, 1000.0, 1e6, DecodeConfig(stride=3)) == -(-(10**9) // 3)
    assert expected_count(None, 1000.0, 1e6, DecodeConfig(target_fps=10)) is None
    assert expected_count(None, 1000.0, 1e6, DecodeConfig(start=5.0)) is None
    assert expected_count(None, 1000.0, 1e6, DecodeConfig(start=5.0, end=6.0)) == 1000
    limit = MAX_COUNTED_FRAMES / 1000.0
    assert expected_count(None, 1000.0, limit, DecodeConfig(target_fps=10)) == limit * 10


def test_expected_frames_of_a_frame_folder(tmp_path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for n in range(10):
        cv2.imwrite(str(folder / f"{n}.png"), pattern_frame(n, 32, 24))
    with open_frames_folder(folder, DecodeConfig(stride=3)) as reader:
        assert reader.expected_frames() == 4 == sum(1 for _ in reader.frames())


def test_run_frame_bar_counts_the_selected_frames_of_an_mkv(tmp_path) -> None:
    """decode.end cuts a 3 s excerpt out of a longer file; the bar's total says so from the
    start, for a container that stores no frame count."""
    clip = write_video(tmp_path / "clip.mkv", num_frames=150, fps=30, codec="ffv1")
    out = tmp_path / "out"
    result = _invoke(
        ["run", str(clip), "-o", str(out), "--model", "dis", "--workers", "0", "--progress",
         "--set", "decode.start=1.0", "--set", "decode.end=4.0", "--chunk-size", "20"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bars = _totals(result.stderr, "clip")
    assert bars and {total for _, total in bars} == {90}
    assert bars[0][0] == 0 and bars[-1][0] == 90
    assert _totals(result.stderr, "videos")[-1] == (1, 1)


def test_consistency_and_features_show_bars_with_totals(tmp_path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    frames = [pattern_frame(i, 64, 48) for i in range(20)]
    source = write_frames(videos / "source.mkv", frames, codec="ffv1", pix_fmt="yuv444p")
    darker = [np.clip(f * 0.9, 0, 255).astype(np.uint8) for f in frames]
    processed = write_frames(videos / "proc.mkv", darker, codec="ffv1", pix_fmt="yuv444p")
    result = _invoke(
        ["consistency", "--source", str(source), "--processed", str(processed),
         "-o", str(tmp_path / "report"), "--model", "dis", "--set", "decode.chunk_size=4",
         "--progress"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bars = _totals(result.stderr, "consistency")
    assert {total for _, total in bars} == {20} and bars[-1][0] == 20 and len(bars) > 2

    result = _invoke(
        ["run", str(videos), "-o", str(tmp_path / "out"), "--model", "dis", "--workers", "0",
         "--set", "features.enabled=true", "--set", "features.clip_len=4", "--progress"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _totals(result.stderr, "features table")[-1] == (2, 2)


def test_a_log_file_gets_the_overall_bars_only_and_sparsely(tmp_path) -> None:
    """stderr that is not a terminal (here the runner's buffer; a log file, a cluster job)
    keeps every refresh: by default a video's frame bar shows only once it has run 30 s (not
    for these short ones) and the overall bars write a line every 30 s (here: their first and
    last state); ``--progress`` brings every bar back, ``--no-progress`` leaves none."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b"):
        write_video(videos / f"{name}.mkv", num_frames=30, fps=30, codec="ffv1")
    base = ["run", str(videos), "--model", "dis", "--workers", "0", "--chunk-size", "8",
            "--set", "features.enabled=true", "--set", "features.clip_len=4"]  # fmt: skip
    default = _invoke([*base, "-o", str(tmp_path / "default")])
    forced = _invoke([*base, "-o", str(tmp_path / "forced"), "--progress"])
    hidden = _invoke([*base, "-o", str(tmp_path / "hidden"), "--no-progress"])
    for result in (default, forced, hidden):
        assert result.exit_code == 0, result.output
    assert _totals(default.stderr, "videos") == [(0, 2), (2, 2)]
    assert "\r" not in default.stderr  # a line per refresh, not one carriage-returned line
    assert _totals(default.stderr, "features table") == [(0, 2), (2, 2)]
    assert _totals(default.stderr, "a") == [] and _totals(default.stderr, "b") == []
    assert _totals(forced.stderr, "a")[-1] == (30, 30) == _totals(forced.stderr, "b")[-1]
    assert _totals(hidden.stderr, "videos") == _totals(hidden.stderr, "features table") == []


def test_in_a_log_a_detail_bar_appears_once_it_has_run_long(monkeypatch) -> None:
    """A video's frame bar in a log: nothing for a short video, then a plain line per refresh
    (no carriage returns or cursor moves) for one that runs past the refresh interval."""
    import io

    from pipeline import progress

    monkeypatch.setattr(progress, "LOG_REFRESH_SECONDS", 0.2)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress.progress_bar(total=3, show=None, detail=True, desc="short", leave=False) as bar:
        bar.update(3)
    assert log.getvalue() == ""
    with progress.progress_bar(total=4, show=None, detail=True, desc="long", position=1) as bar:
        for _ in range(4):
            time.sleep(0.15)
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert lines and all(re.fullmatch(r"long: +\d+%\|[# ]+\| \d/4 \[.*\]", x) for x in lines)


def test_a_terminal_gets_every_bar_live(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a real terminal (a pseudo-terminal here) the default shows detail bars too, at
    tqdm's own refresh rate."""
    from pipeline.progress import LOG_REFRESH_SECONDS, progress_bar

    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        with progress_bar(range(3), show=None, detail=True, desc="frames") as bar:
            assert not bar.disable and bar.mininterval < LOG_REFRESH_SECONDS
            assert sum(1 for _ in bar) == 3
        with progress_bar(range(3), show=False) as bar:
            assert bar.disable
    os.close(leader)


def test_log_levels_follow_the_help(tmp_path) -> None:
    clip = write_video(tmp_path / "clip.mkv", num_frames=6, codec="ffv1")
    base = [
        "run",
        str(clip),
        "--model",
        "dis",
        "--workers",
        "0",
        "--no-progress",
        "--set",
        "warp.enabled=true",
    ]  # fmt: skip  (warp draws a matplotlib plot)
    quiet = _invoke(["-q", *base, "-o", str(tmp_path / "q")])
    default = _invoke([*base, "-o", str(tmp_path / "d")])
    verbose = _invoke(["-v", *base, "-o", str(tmp_path / "v")])
    debug = _invoke(["-vv", *base, "-o", str(tmp_path / "vv")])
    for result in (quiet, default, verbose, debug):
        assert result.exit_code == 0, result.output
    assert "INFO" not in quiet.stderr
    assert "VERBOSE" not in default.stderr and "DEBUG" not in default.stderr
    assert "VERBOSE" in verbose.stderr and "clip: 6 frames, 5 pairs" in verbose.stderr
    assert "DEBUG" not in verbose.stderr
    assert "DEBUG" in debug.stderr
    for result in (verbose, debug):  # third-party debug noise stays out
        assert not re.search(r"^(DEBUG|INFO) (matplotlib|PIL)", result.stderr, re.MULTILINE)


def test_model_notice_is_printed_once_and_nothing_claims_a_download(tmp_path) -> None:
    clip = write_video(tmp_path / "clip.mkv", num_frames=4, codec="ffv1")
    out = tmp_path / "out"
    result = _invoke(
        ["run", str(clip), "-o", str(out), "--workers", "0", "--no-progress"],
        MOTIONPIPE_CACHE=str(tmp_path / "empty-cache"),
    )
    assert result.exit_code == 0, result.output
    notice = json.loads((out / "clip" / "meta.json").read_text())["model_notice"]
    text = result.output  # stdout and stderr
    if notice:  # auto fell back to DIS (no checkpoint and no bundled model here)
        assert (
            text.count("model 'auto': no official checkpoint in the cache; using OpenCV DIS") == 1
        )
    assert "download" not in text.lower()


def test_frame_bar_total_grows_and_ends_at_the_real_count(tmp_path) -> None:
    """A header that undercounts: the bar never shows more than 100 % and ends at the count."""
    from tqdm import tqdm

    from pipeline.runner import advance, complete

    bar = tqdm(total=5, disable=False, file=open(Path(tmp_path / "bar.txt"), "w"))  # noqa: SIM115
    advance(bar, 4)
    advance(bar, 4)
    assert (bar.n, bar.total) == (8, 8)
    bar.total = 10
    complete(bar)
    assert (bar.n, bar.total) == (8, 8)
    bar.close()
