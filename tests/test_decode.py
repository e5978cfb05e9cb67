"""Tests of the decoding stage with real decoders on tiny generated videos and the shared clips."""

from __future__ import annotations

import itertools
import logging
import pickle
import struct
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stages.base import FrameChunk
from stages.decode import (
    BACKENDS,
    DecodeConfig,
    DecodedFrame,
    DecodeError,
    VideoInfo,
    iter_chunks,
    open_video,
)
from stages.decoding import reader as reader_module
from stages.decoding.frame_clock import FrameClock
from tests.media import (
    corrupt_copy,
    default_suffix,
    drop_packets,
    garble_packets,
    matroska_declaring,
    pattern_frame,
    read_frame_index,
    write_audio_only,
    write_garbage_packets,
    write_no_frames,
    write_video,
)

W, H = 64, 48


def decode_all(path: Path, **kwargs: object) -> tuple[VideoInfo, list[DecodedFrame], list[str]]:
    with open_video(path, DecodeConfig(**kwargs)) as reader:  # type: ignore[arg-type]
        frames = list(reader.frames())
        return reader.info, frames, list(reader.warnings)


def stack(frames: list[DecodedFrame]) -> np.ndarray:
    return np.stack([f.rgb for f in frames]).astype(np.int16)


def assert_same_conversion(mine: np.ndarray, reference: np.ndarray) -> None:
    """Two backends' RGB of one 8-bit stream: the same FFmpeg conversion, bit-identical on the
    machines measured, but each backend bundles its own FFmpeg, whose YUV->RGB code is chosen
    per CPU (SSE2 / plain C paths round 4:2:0 chroma up to 2 levels apart), so another CPU
    may see a level or two."""
    difference = np.abs(np.asarray(mine, np.int16) - np.asarray(reference, np.int16))
    assert difference.max() <= 2 and difference.mean() < 0.5, (difference.max(), difference.mean())


def pattern_ids(frames: list[DecodedFrame]) -> list[int]:
    return [read_frame_index(f.rgb) for f in frames]


def expected_resample(pts: list[float], fps: float) -> list[int]:
    """Brute force of the documented rule: target times t0 + i/fps before the end of the last
    frame (its pts plus the previous interval); for each, the last frame with pts <= target;
    each frame once."""
    stop = pts[-1] + (pts[-1] - pts[-2])
    kept: list[int] = []
    i = 0
    while pts[0] + i / fps < stop - 1e-9:
        target = pts[0] + i / fps
        k = max(j for j, p in enumerate(pts) if p <= target + 1e-9)
        if k not in kept:
            kept.append(k)
        i += 1
    return kept


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory writing (once per module) a pattern video with the given write_video kwargs."""
    folder = tmp_path_factory.mktemp("media")
    cache: dict[str, Path] = {}

    def make(suffix: str | None = None, **kwargs: object) -> Path:
        key = repr(sorted(kwargs.items())) + str(suffix)
        if key not in cache:
            codec = str(kwargs.get("codec", "libx264"))
            path = folder / f"v{len(cache)}{suffix or default_suffix(codec)}"
            cache[key] = write_video(path, **kwargs)  # type: ignore[arg-type]
        return cache[key]

    return make


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backend": "ffmpeg"},
        {"stride": 0},
        {"stride": 1.5},
        {"stride": True},
        {"target_fps": 0},
        {"target_fps": float("nan")},
        {"start": -1.0},
        {"end": 0.0},
        {"start": 2.0, "end": 1.0},
        {"max_side": 0},
        {"max_side": 10.5},
        {"short_side": 15},
    ],
)
def test_options_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DecodeConfig(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- backend agreement


@pytest.mark.parametrize(
    ("codec", "pix_fmt"), [("libx264", "yuv444p"), ("ffv1", "yuv444p"), ("libx264", "yuv420p")]
)
def test_backends_agree_exactly_on_lossless_video(
    media: Callable[..., Path], codec: str, pix_fmt: str
) -> None:
    path = media(codec=codec, pix_fmt=pix_fmt, num_frames=24)
    results = {backend: decode_all(path, backend=backend) for backend in BACKENDS}
    reference = stack(results["pyav"][1])
    for backend, (info, frames, warnings) in results.items():
        assert info.backend == backend
        assert warnings == []
        assert [f.index for f in frames] == list(range(24))
        assert pattern_ids(frames) == list(range(24))
        np.testing.assert_allclose([f.pts for f in frames], np.arange(24) / 30, atol=1e-3)
        assert [f.pts for f in frames] == [f.pts for f in results["pyav"][1]]
        assert_same_conversion(stack(frames), reference)
        for f in frames:
            assert f.rgb.dtype == np.uint8 and f.rgb.shape == (H, W, 3)
            assert f.rgb.flags.c_contiguous
    source = np.stack([pattern_frame(i) for i in range(24)]).astype(np.int16)
    limit = 1.0 if pix_fmt == "yuv444p" else 4.0  # RGB->YUV rounding (and 4:2:0 chroma)
    assert np.abs(reference - source).mean() < limit


@pytest.mark.parametrize(
    ("codec", "pix_fmt"),
    [("mjpeg", "yuv420p"), ("libvpx-vp9", "yuv420p"), ("mpeg4", "yuv420p")],
)
def test_backends_agree_on_common_codecs(
    media: Callable[..., Path], codec: str, pix_fmt: str
) -> None:
    path = media(codec=codec, pix_fmt=pix_fmt, num_frames=15)
    results = {backend: decode_all(path, backend=backend) for backend in BACKENDS}
    reference = results["pyav"][1]
    for backend, (info, frames, _) in results.items():
        assert info.backend == backend, "decord 0.6 decodes MJPEG, VP9 and MPEG-4 itself"
        assert pattern_ids(frames) == list(range(15))
        np.testing.assert_allclose(
            [f.pts for f in frames], [f.pts for f in reference], rtol=0, atol=1e-6
        )
        assert np.abs(stack(frames) - stack(reference)).max() <= 2


def test_video_info(media: Callable[..., Path]) -> None:
    path = media(suffix=".mp4", num_frames=12, fps=25)
    for backend in BACKENDS:
        info, frames, _ = decode_all(path, backend=backend)
        assert info.path == str(path)
        assert (info.width, info.height) == (W, H)
        assert (info.source_width, info.source_height) == (W, H)
        assert info.rotation == 0
        assert info.fps == pytest.approx(25.0)
        assert info.header_frame_count == 12
        assert info.codec == "h264"
        assert info.pix_fmt == "yuv420p"
        assert info.duration == pytest.approx(12 / 25, abs=0.05)
        assert info.stream_start == 0.0
        assert len(frames) == 12


# --------------------------------------------------------------------------- frame count, pts


def test_real_frame_count_not_header(media: Callable[..., Path], tmp_path: Path) -> None:
    mkv = media(num_frames=17)
    for backend in BACKENDS:
        info, frames, warnings = decode_all(mkv, backend=backend)
        assert info.header_frame_count is None  # Matroska stores no frame count
        assert len(frames) == 17 and warnings == []
    mp4 = media(suffix=".mp4", num_frames=30, gop_size=10)
    broken = garble_packets(mp4, tmp_path / "broken.mp4", first=12)
    for backend in BACKENDS:
        info, frames, warnings = decode_all(broken, backend=backend, keep_incomplete=True)
        assert info.backend == backend
        assert info.header_frame_count == 30
        assert pattern_ids(frames) == list(range(12))
        shortfall = "decoded 12 frames, fewer than the 30 the header declares"
        if backend == "opencv":  # the only sign it gets: it says it cannot tell the cause
            assert f"{shortfall} (hidden frames, or a file cut short: opencv does not" in str(
                warnings
            )
        else:  # the decoding error's own warning says why
            assert shortfall in warnings


@pytest.mark.parametrize(
    ("codec", "suffix"),
    [("libx264", ".mkv"), ("libx264", ".mp4"), ("mpeg4", ".avi"), ("mjpeg", ".avi"),
     ("ffv1", ".mkv")],
)  # fmt: skip
def test_decoder_error_mid_stream_keeps_the_frames_before_it(
    media: Callable[..., Path], tmp_path: Path, codec: str, suffix: str
) -> None:
    good = media(suffix=suffix, codec=codec, num_frames=30, gop_size=10)
    bad = garble_packets(good, tmp_path / f"bad{suffix}", first=12)
    for backend in BACKENDS:
        info, frames, warnings = decode_all(bad, backend=backend, keep_incomplete=True)
        # Every backend stops at the same frame. decord's decoder thread runs ahead and reports
        # the error early, even while opening: PyAV then decodes the rest, or all.
        assert pattern_ids(frames) == list(range(12))
        np.testing.assert_allclose([f.pts for f in frames], np.arange(12) / 30, atol=1e-3)
        if backend != "opencv":  # OpenCV reports no decoder errors
            assert any("decoding stopped after the frame at pts 0.367 s" in w for w in warnings)
        if backend == "decord":
            assert any(w.startswith(("decord failed", "decord unavailable")) for w in warnings)
        else:
            assert info.backend == backend


@pytest.mark.parametrize("suffix", [".mkv", ".mp4", ".avi"])
def test_a_decoding_error_fails_the_video_after_its_good_frames(
    media: Callable[..., Path], tmp_path: Path, suffix: str
) -> None:
    """By default a stream the decoder cannot finish is not passed off as the whole video: the
    good frames come first (the pipeline has already used them), then DecodeError says where."""
    codec = "mpeg4" if suffix == ".avi" else "libx264"
    good = media(suffix=suffix, codec=codec, num_frames=30, gop_size=10)
    bad = garble_packets(good, tmp_path / f"bad{suffix}", first=12)
    for backend in ("pyav", "decord"):  # OpenCV reports no decoder errors
        delivered = []
        fault = r"incomplete video: decoding stopped after.*; 12 frame"
        with (
            open_video(bad, DecodeConfig(backend=backend)) as reader,
            pytest.raises(DecodeError, match=fault),
        ):
            for frame in reader.frames():
                delivered.append(frame)
        assert pattern_ids(delivered) == list(range(12))


@pytest.mark.parametrize(("codec", "suffix"), [("libx264", ".avi"), ("mpeg2video", ".mpg")])
def test_b_frames_in_containers_without_pts_are_whole_in_order_and_timed(
    tmp_path: Path, codec: str, suffix: str
) -> None:
    """AVI stores no pts and MPEG-PS not on every packet: with B-frames the decoder's pts come
    in decode order though the frames come in display order. Every frame is kept, in order,
    and the timestamps follow the dts once the pts step back (FFmpeg's best-effort rule), so
    they increase, the flushed last frames included, and a frame rate selection works."""
    path = write_video(tmp_path / f"b{suffix}", num_frames=40, fps=25, codec=codec,
                       options={"bf": "3"})  # fmt: skip
    _, frames, warnings = decode_all(path)
    assert pattern_ids(frames) == list(range(40))
    assert warnings == []
    steps = np.diff([f.pts for f in frames])
    assert steps.min() > 0 and np.median(steps) == pytest.approx(0.04)
    _, halved, warnings = decode_all(path, target_fps=12.5)
    assert pattern_ids(halved) == list(range(0, 40, 2)) and warnings == []
    for backend in ("opencv", "decord"):  # OpenCV gives the flushed frames 0 ms; decord falls back
        _, theirs, warnings = decode_all(path, backend=backend)
        assert [f.pts for f in theirs] == [f.pts for f in frames]
        assert not [w for w in warnings if "unavailable" not in w]


def timestamps(observed: list[tuple[int | None, int | None]], lookahead: int) -> list:
    """What a :class:`FrameClock` gives frames with these ``(pts, dts)``, timing the first
    ones after ``lookahead`` frames, as the PyAV backend does."""
    clock, given = FrameClock(), []
    for count, frame in enumerate(observed, 1):
        clock.observe(*frame)
        if count == lookahead:
            given += [clock.ticks(*earlier) for earlier in observed[:count]]
        elif count > lookahead:
            given.append(clock.ticks(*frame))
    if len(observed) < lookahead:  # the stream ended first
        given = [clock.ticks(*frame) for frame in observed]
    return given


def test_the_frame_clock_follows_the_dts_when_the_pts_are_in_decode_order() -> None:
    # x264 with B-frames in AVI as PyAV decodes it: pts in decode order, no dts when flushing.
    avi = list(zip([1, 4, 2, 3, 7, 5, 6, 8, None], [2, 3, 4, 5, 6, 7, 8, 9, None], strict=True))
    assert timestamps(avi, lookahead=4) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    # FFmpeg's rule times each frame at once: the switch to the dts repeats a timestamp.
    assert timestamps(avi, lookahead=1) == [1, 4, 4, 5, 6, 7, 8, 9, 10]
    # Matroska with B-frames: dts stepping back or missing, pts right: the pts stay the clock.
    mkv = [(0, 0), (1, 3), (2, 1), (3, 2), (4, None), (5, 6)]
    assert timestamps(mkv, lookahead=8) == [0, 1, 2, 3, 4, 5]
    assert FrameClock().ticks(None, None) is None


def test_frames_missing_from_a_stream_are_reported(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    """Four frames lost from an intra-only stream leave a 0.2 s gap at 25 fps: a warning says
    so; resampling to a higher rate than the source's is no gap."""
    good = media(codec="ffv1", num_frames=30, fps=25)
    lost = drop_packets(good, tmp_path / "lost.mkv", range(13, 17))
    _, frames, warnings = decode_all(lost)
    assert len(frames) == 26 and [round(f.pts, 2) for f in frames[12:14]] == [0.48, 0.68]
    assert warnings == [
        "1 gap(s) longer than 3 frame intervals between frames (largest 0.200 s, before the "
        "frame at pts 0.680 s): frames missing from the stream, or a variable frame rate"
    ]
    assert decode_all(good, target_fps=100)[2] == []
    assert decode_all(good, stride=4)[2] == []


def test_a_matroska_recording_killed_before_it_was_closed_is_cut_short(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    """No per-track DURATION tag (FFmpeg writes it when it closes the file), but the segment
    declares 30 s for 2 s of frames: the file was cut short."""
    good = media(codec="ffv1", num_frames=50, fps=25)
    killed = matroska_declaring(good, tmp_path / "killed.mkv", 30.0)
    with pytest.raises(DecodeError, match=r"frames end at 2\.000 s, the track declares 30\.000 s"):
        decode_all(killed)
    assert len(decode_all(matroska_declaring(good, tmp_path / "whole.mkv", 2.0))[1]) == 50


def test_an_avi_header_counting_more_frames_says_why_it_may(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    """AVI has no edit lists: fewer frames than its header counts were lost to damage or were
    placeholders (DivX's packed B-frames decode to nothing); it warns, naming both."""
    good = media(suffix=".avi", codec="mpeg4", num_frames=30)
    data = bytearray(good.read_bytes())
    for chunk, offset in ((b"avih", 24), (b"strh", 40)):  # dwTotalFrames, dwLength
        at = data.find(chunk) + offset
        data[at : at + 4] = struct.pack("<I", 40)
    more = tmp_path / "more.avi"
    more.write_bytes(bytes(data))
    info, frames, warnings = decode_all(more)
    assert info.header_frame_count == 40 and len(frames) == 30
    assert warnings == [
        "decoded 30 frames, fewer than the 40 the header declares (avi has no edit lists: "
        "frames lost to damage, or placeholders that decode to nothing)"
    ]


def test_concealed_corruption_is_delivered_and_reported(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    good = media(suffix=".mp4", num_frames=60, width=128, height=96, gop_size=10)
    bad = corrupt_copy(good, tmp_path / "concealed.mp4", at=0.5, length=2000)
    results = {backend: decode_all(bad, backend=backend) for backend in BACKENDS}
    for _, frames, _ in results.values():
        assert [f.pts for f in frames] == [f.pts for f in results["pyav"][1]]
        assert len(frames) == 60
    # Only PyAV sees the decoder's corruption flag.
    assert any("decoded with errors (concealed" in w for w in results["pyav"][2])


def test_truncated_file_decodes_its_complete_frames(
    media: Callable[..., Path], tmp_path: Path
) -> None:
    full = media(num_frames=40, width=128, height=96, options={"crf": "10"})
    cut = corrupt_copy(full, tmp_path / "cut.mkv", at=0.6, truncate=True)
    counts = set()
    for backend in BACKENDS:
        _, frames, warnings = decode_all(cut, backend=backend, keep_incomplete=True)
        assert 0 < len(frames) < 40
        assert pattern_ids(frames) == list(range(len(frames)))
        assert any("the track declares 1.333 s (truncated file" in w for w in warnings)
        counts.add(len(frames))
    assert len(counts) == 1
    with pytest.raises(DecodeError, match="incomplete video: the frames end at"):
        decode_all(cut)  # PyAV tells each frame's duration: the shortfall is certain


@pytest.mark.parametrize(
    ("suffix", "codec", "fault"),
    [(".mp4", "libx264", "ends inside a frame's data|decoding stopped"),
     (".avi", "mpeg4", "ends inside a frame's data"),
     (".webm", "libvpx-vp9", "the track declares")],
)  # fmt: skip
def test_truncated_files_fail_whatever_the_container(
    media: Callable[..., Path], tmp_path: Path, suffix: str, codec: str, fault: str
) -> None:
    """A cut file (a download that stopped) fails by default, in every container whose header
    tells: MP4 (with the index in front, as web videos have it: with the index at the end a cut
    file does not open at all), AVI, WebM/Matroska; a whole file of each passes."""
    options = {"movflags": "faststart"} if suffix == ".mp4" else {}
    full = media(suffix=suffix, codec=codec, num_frames=30, container_options=options)
    assert len(decode_all(full)[1]) == 30
    for at in (0.6, 0.9):
        cut = corrupt_copy(full, tmp_path / f"cut{at}{suffix}", at=at, truncate=True)
        with pytest.raises(DecodeError, match=f"incomplete video: .*({fault})"):
            decode_all(cut)


def test_a_long_last_frame_is_not_taken_for_a_cut(media: Callable[..., Path]) -> None:
    """Matroska's track duration counts the last frame's own length: a variable-rate clip
    ending on a 2-second still is whole."""
    ms = [0, 40, 80, 120, 2000]
    path = media(suffix=".mkv", num_frames=len(ms), pts=ms, time_base=Fraction(1, 1000))
    for backend in BACKENDS:
        _, frames, warnings = decode_all(path, backend=backend)
        assert len(frames) == len(ms) and not any("truncated" in w for w in warnings)


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_variable_frame_rate_pts_come_from_the_stream(
    media: Callable[..., Path], suffix: str
) -> None:
    ms = [0, 40, 45, 100, 130, 200, 400, 410, 420, 500, 533, 600]
    path = media(suffix=suffix, num_frames=len(ms), pts=ms, time_base=Fraction(1, 1000))
    for backend in BACKENDS:
        _, frames, _ = decode_all(path, backend=backend)
        assert pattern_ids(frames) == list(range(len(ms)))
        np.testing.assert_allclose([f.pts for f in frames], np.array(ms) / 1000, atol=1e-6)


def test_pts_are_relative_to_the_stream_start(media: Callable[..., Path]) -> None:
    ms = [500, 533, 567, 600, 633]
    path = media(num_frames=5, pts=ms, time_base=Fraction(1, 1000))
    for backend in BACKENDS:
        info, frames, _ = decode_all(path, backend=backend)
        assert info.stream_start == pytest.approx(0.5)
        np.testing.assert_allclose([f.pts for f in frames], (np.array(ms) - 500) / 1000, atol=1e-6)


# --------------------------------------------------------------------------- selection


def test_stride(media: Callable[..., Path]) -> None:
    path = media(num_frames=20)
    for backend in BACKENDS:
        _, frames, _ = decode_all(path, backend=backend, stride=3)
        assert [f.index for f in frames] == list(range(7))
        assert pattern_ids(frames) == list(range(0, 20, 3))
        np.testing.assert_allclose([f.pts for f in frames], np.arange(0, 20, 3) / 30, atol=1e-3)


def test_target_fps_picks_frames_by_timestamp(media: Callable[..., Path]) -> None:
    path = media(suffix=".mp4", num_frames=30)
    for backend in BACKENDS:
        _, frames, _ = decode_all(path, backend=backend, target_fps=10)
        assert pattern_ids(frames) == list(range(0, 30, 3))
        assert [f.index for f in frames] == list(range(10))
        _, frames, _ = decode_all(path, backend=backend, target_fps=7)
        assert pattern_ids(frames) == expected_resample([i / 30 for i in range(30)], 7)
        # Above the source rate: every frame once, nothing invented.
        _, frames, _ = decode_all(path, backend=backend, target_fps=100)
        assert pattern_ids(frames) == list(range(30))


def test_target_fps_on_variable_frame_rate(media: Callable[..., Path]) -> None:
    ms = [0, 40, 45, 100, 130, 200, 400, 410, 420, 500, 533, 600]
    path = media(num_frames=len(ms), pts=ms, time_base=Fraction(1, 1000))
    expected = expected_resample([m / 1000 for m in ms], 10)
    assert expected == [0, 3, 5, 6, 9, 11]  # 0.3 s falls on frame 5 again
    for backend in BACKENDS:
        _, frames, _ = decode_all(path, backend=backend, target_fps=10)
        assert pattern_ids(frames) == expected


def test_stride_applies_after_target_fps(media: Callable[..., Path]) -> None:
    path = media(suffix=".mp4", num_frames=30)
    for backend in BACKENDS:
        _, frames, _ = decode_all(path, backend=backend, target_fps=10, stride=2)
        assert pattern_ids(frames) == [0, 6, 12, 18, 24]


def test_time_range_is_half_open(media: Callable[..., Path]) -> None:
    path = media(suffix=".mp4", num_frames=30)
    for backend in BACKENDS:
        _, frames, _ = decode_all(path, backend=backend, start=0.2, end=0.5)
        assert pattern_ids(frames) == list(range(6, 15))  # pts 0.2 kept, pts 0.5 excluded
        assert [f.index for f in frames] == list(range(9))
        assert frames[0].pts == pytest.approx(0.2)
        _, frames, _ = decode_all(path, backend=backend, start=0.2, end=0.5, target_fps=10)
        assert pattern_ids(frames) == [6, 9, 12]
        _, frames, warnings = decode_all(path, backend=backend, start=5.0)
        assert frames == [] and "no frame in the selected range" in warnings


def test_start_seeks_to_the_same_frames(media: Callable[..., Path]) -> None:
    path = media(num_frames=90, gop_size=10)
    _, everything, _ = decode_all(path, backend="pyav")
    for start in (1.0, 1.51, 2.95):
        expected = [f.rgb for f in everything if f.pts >= start - 1e-6]
        for backend in BACKENDS:
            with open_video(path, DecodeConfig(backend=backend, start=start)) as reader:
                frames = list(reader.frames())
                if backend == "pyav":  # seeks to the keyframe before start (one every 10 frames)
                    assert reader.frames_decoded <= len(expected) + 10
            assert len(frames) == len(expected)
            for got, want in zip(frames, expected, strict=True):
                assert_same_conversion(got.rgb, want)


def test_start_in_an_mpeg_program_stream_gives_the_frames_of_a_whole_decode(
    tmp_path: Path,
) -> None:
    """After a seek, FFmpeg guesses the timestamps of an MPEG-PS stream until the next
    keyframe (frames off by several intervals, and earlier than ``start``): the stream is
    decoded from its beginning instead, so a ``start`` keeps the frames and times a whole
    decode gives."""
    path = write_video(tmp_path / "b.mpg", num_frames=40, fps=25, codec="mpeg2video",
                       options={"bf": "2"}, gop_size=10)  # fmt: skip
    _, everything, _ = decode_all(path)
    whole = list(zip([f.pts for f in everything], pattern_ids(everything), strict=True))
    assert [i for _, i in whole] == list(range(40))
    for start in (0.5, 1.1):
        _, frames, warnings = decode_all(path, start=start)
        got = list(zip([f.pts for f in frames], pattern_ids(frames), strict=True))
        assert got == [(t, i) for t, i in whole if t >= start - 1e-6]
        assert warnings == []


@pytest.mark.usefixtures("fresh_fallback_log")
@pytest.mark.parametrize(
    ("codec", "suffix", "options"),
    [("libx264", ".ts", {"bf": "3"}), ("mpeg2video", ".ts", {"bf": "0"}),
     ("mpeg2video", ".mpg", {"bf": "2"})],
)  # fmt: skip
def test_decord_leaves_mpeg_transport_and_program_streams_to_pyav(
    tmp_path: Path, codec: str, suffix: str, options: dict[str, str]
) -> None:
    """decord seeks these unindexed files to a later keyframe before its first frame and then
    hands out frame 10 as frame 0: PyAV decodes them, every frame in order."""
    path = write_video(tmp_path / f"v{suffix}", num_frames=40, fps=25, codec=codec,
                       options=options, gop_size=10)  # fmt: skip
    _, reference, _ = decode_all(path)
    for start in (None, 0.5):
        info, frames, warnings = decode_all(path, backend="decord", start=start)
        assert info.backend == "pyav"
        assert any("decord unavailable" in w and "no index" in w for w in warnings)
        wanted = [f for f in reference if start is None or f.pts >= start - 1e-6]
        assert pattern_ids(frames) == pattern_ids(wanted)
        assert [f.pts for f in frames] == [f.pts for f in wanted]


# --------------------------------------------------------------------------- pixels


@pytest.mark.parametrize(
    ("limits", "size"),
    [
        ({"max_side": 32}, (32, 24)),
        ({"max_side": 50}, (50, 38)),
        ({"max_side": 64}, (64, 48)),
        ({"short_side": 32}, (43, 32)),  # 64 * 32 / 48 = 42.7
        ({"short_side": 48}, (64, 48)),  # never enlarged
        ({"short_side": 32, "max_side": 40}, (40, 30)),  # the stronger limit
    ],
)
def test_max_and_short_side_resize_with_inter_area(
    media: Callable[..., Path], limits: dict[str, int], size: tuple[int, int]
) -> None:
    path = media(codec="ffv1", pix_fmt="yuv444p", num_frames=5)
    _, full, _ = decode_all(path, backend="pyav")
    for backend in BACKENDS:
        info, frames, _ = decode_all(path, backend=backend, **limits)
        assert (info.width, info.height) == size
        assert (info.source_width, info.source_height) == (W, H)
        for small, big in zip(frames, full, strict=True):
            assert small.rgb.shape == (size[1], size[0], 3) and small.rgb.flags.c_contiguous
            resized = cv2.resize(big.rgb, size, interpolation=cv2.INTER_AREA)
            assert_same_conversion(small.rgb, resized)  # PyAV's frames, this backend's resize


def test_odd_frame_size(media: Callable[..., Path]) -> None:
    path = media(codec="ffv1", pix_fmt="yuv444p", num_frames=4, width=65, height=49)
    reference = decode_all(path, backend="pyav")[1]
    for backend in BACKENDS:
        info, frames, _ = decode_all(path, backend=backend)
        assert (info.width, info.height) == (65, 49)
        assert_same_conversion(stack(frames), stack(reference))
        info, frames, _ = decode_all(path, backend=backend, max_side=33)
        assert (info.width, info.height) == (33, 25)  # 49 * 33 / 65 = 24.9
        assert frames[0].rgb.shape == (25, 33, 3)


def test_gray_becomes_uint8_rgb(media: Callable[..., Path]) -> None:
    path = media(codec="ffv1", pix_fmt="gray", num_frames=6)
    for backend in BACKENDS:
        info, frames, _ = decode_all(path, backend=backend)
        assert info.pix_fmt == "gray"
        rgb = stack(frames)
        assert rgb.shape == (6, H, W, 3)
        assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        source = np.stack([pattern_frame(i) for i in range(6)]).astype(np.float64)
        luma = source @ np.array([0.299, 0.587, 0.114])
        assert np.abs(rgb[..., 0] - luma).mean() < 3
        assert pattern_ids(frames) == list(range(6))


def test_ten_bit_becomes_uint8_rgb(media: Callable[..., Path]) -> None:
    path = media(pix_fmt="yuv420p10le", num_frames=8)
    results = {}
    for backend in BACKENDS:
        info, frames, _ = decode_all(path, backend=backend)
        assert info.pix_fmt == "yuv420p10le" and info.backend == backend
        assert all(f.rgb.dtype == np.uint8 for f in frames)
        assert pattern_ids(frames) == list(range(8))
        results[backend] = stack(frames)
    source = np.stack([pattern_frame(i) for i in range(8)]).astype(np.int16)
    for rgb in results.values():
        assert np.abs(rgb - source).mean() < 4
    # 10-bit 4:2:0 -> RGB differs between the backends' FFmpeg versions (chroma upsampling and
    # dithering): about 1.5 levels on average, up to ~10 at sharp edges.
    for backend in ("decord", "opencv"):
        diff = np.abs(results[backend] - results["pyav"])
        assert diff.mean() < 2.5 and diff.max() <= 16


# --------------------------------------------------------------------------- rotation


@pytest.mark.parametrize(
    ("suffix", "rotation", "as_tag"),
    [(".mp4", 90, False), (".mp4", 180, False), (".mp4", 270, False), (".mkv", 90, False),
     (".mkv", 270, True)],
)  # fmt: skip
def test_rotation_is_honoured_by_all_backends(
    media: Callable[..., Path], suffix: str, rotation: int, as_tag: bool
) -> None:
    path = media(
        suffix=suffix, pix_fmt="yuv444p", num_frames=6, rotation=rotation, rotation_as_tag=as_tag
    )
    source = np.stack([pattern_frame(i) for i in range(6)]).astype(np.int16)
    stored = (H, W) if rotation == 180 else (W, H)
    for backend in BACKENDS:
        info, frames, warnings = decode_all(path, backend=backend)
        assert info.rotation == rotation
        assert (info.source_width, info.source_height) == stored[::-1]
        assert (info.width, info.height) == (W, H)
        assert pattern_ids(frames) == list(range(6))
        assert np.abs(stack(frames) - source).mean() < 1.0
        if backend == "decord":
            assert info.backend == "pyav"  # decord 0.6 mis-decodes rotated streams
            assert any("decord unavailable" in w for w in warnings)
        else:
            assert info.backend == backend


def test_rotation_then_max_side(media: Callable[..., Path]) -> None:
    path = media(suffix=".mp4", pix_fmt="yuv444p", num_frames=3, rotation=90)
    for backend in BACKENDS:
        info, frames, _ = decode_all(path, backend=backend, max_side=32)
        assert (info.width, info.height) == (32, 24)
        assert frames[0].rgb.shape == (24, 32, 3)
        assert pattern_ids(frames) == [0, 1, 2]


# --------------------------------------------------------------------------- errors, fallback


def test_errors_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    recording = write_video(tmp_path / "recording.mp4", num_frames=10)  # index at the end
    cut = corrupt_copy(recording, tmp_path / "cut.mp4", at=0.8, truncate=True)
    cases = {
        cut: "an MP4/MOV file without its index (moov box): a recording or download cut short",
        tmp_path / "missing.mp4": "file not found",
        empty: "empty file",
        text: "not a readable media file",
        write_audio_only(tmp_path / "audio.m4a"): "no video stream (streams: audio)",
        write_no_frames(tmp_path / "noframes.avi"): "no decodable frames",
        write_garbage_packets(tmp_path / "garbage.mkv"): "no decodable frames",
        tmp_path: "the folder holds no .jpg or .png image",
    }
    for path, reason in cases.items():
        for backend in BACKENDS:
            with pytest.raises(DecodeError) as caught:
                open_video(path, DecodeConfig(backend=backend))
            error = caught.value
            assert error.path == str(path)
            assert error.reason.startswith(reason)
            assert str(error).startswith(f"cannot decode '{path}': {reason}")


def test_decode_error_pickles() -> None:
    error = pickle.loads(pickle.dumps(DecodeError("a.mp4", "empty file")))
    assert (error.path, error.reason, str(error)) == (
        "a.mp4",
        "empty file",
        "cannot decode 'a.mp4': empty file",
    )


@pytest.fixture
def fresh_fallback_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_module, "_fallback_warned", set())


#: Codecs tried, in order, when looking for one a backend cannot decode on this machine (the
#: answer depends on the backend's bundled FFmpeg: OpenCV 4.x wheels refuse AV1, 5.x decode it).
PROBE_CODECS: list[tuple[str, dict[str, str]]] = [
    ("libsvtav1", {"preset": "12"}),
    ("libaom-av1", {"cpu-used": "8"}),
    ("snow", {}),
    ("jpeg2000", {}),
    ("libx265", {}),
    ("msmpeg4", {}),
    ("vp8", {}),
]


def _undecodable_by(backend: str, media: Callable[..., Path]) -> tuple[str, Path] | None:
    """A pattern video (8 frames) that ``backend`` itself refuses here, found by trying it:
    ``(codec, path)``, or ``None`` when the backend decodes every candidate PyAV can write."""
    from stages.decoding.backend_base import DecodeState
    from stages.decoding.probe import probe_video

    if backend == "decord":
        from stages.decoding.backend_decord import DecordBackend as Backend
    else:
        from stages.decoding.backend_opencv import OpenCVBackend as Backend
    for codec, options in PROBE_CODECS:
        if codec not in av.codecs_available:
            continue
        try:
            path = media(codec=codec, num_frames=8, options=options or None)
        except (av.FFmpegError, ValueError):  # this build cannot encode it after all
            continue
        try:
            Backend(probe_video(str(path)), DecodeConfig(backend=backend), DecodeState()).close()
        except Exception:  # what the reader treats as "cannot decode": fall back to PyAV
            return codec, path
    return None


@pytest.mark.usefixtures("fresh_fallback_log")
@pytest.mark.parametrize("backend", ["decord", "opencv"])
def test_undecodable_codec_falls_back_to_pyav_warning_once(
    backend: str, media: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    found = _undecodable_by(backend, media)
    if found is None:
        pytest.skip(
            f"{backend} decodes every probe codec PyAV can write here "
            f"({', '.join(c for c, _ in PROBE_CODECS if c in av.codecs_available)}); "
            "no undecodable file to test the fallback with"
        )
    codec, path = found
    caplog.set_level(logging.DEBUG, logger="stages.decoding.reader")
    for _ in range(2):
        info, frames, warnings = decode_all(path, backend=backend)
        assert info.backend == "pyav", codec
        assert pattern_ids(frames) == list(range(8))
        assert any(w.startswith(f"{backend} unavailable") for w in warnings)
    logged = [r for r in caplog.records if r.getMessage().startswith(f"{backend} unavailable")]
    assert [r.levelno for r in logged] == [logging.WARNING, logging.DEBUG]
    assert "falling back to PyAV" in logged[0].getMessage()


@pytest.mark.usefixtures("fresh_fallback_log")
def test_missing_decord_falls_back_to_pyav(
    media: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "decord", None)  # makes `import decord` raise ImportError
    path = media(num_frames=5)
    info, frames, warnings = decode_all(path, backend="decord")
    assert info.backend == "pyav" and len(frames) == 5
    assert any("decord is not installed" in w for w in warnings)
    assert "decord unavailable: decord is not installed" in caplog.text


def test_default_backend_is_pyav(media: Callable[..., Path]) -> None:
    info, frames, warnings = decode_all(media(num_frames=3))
    assert info.backend == "pyav" and len(frames) == 3 and warnings == []


@pytest.mark.usefixtures("fresh_fallback_log")
def test_decord_refuses_streams_its_read_ahead_could_not_hold(
    media: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """decord decodes the whole remaining stream ahead of a slow consumer: long streams go to
    PyAV, with the reason, and still deliver every frame."""
    import stages.decoding.backend_decord as backend_decord

    path = media(num_frames=12)  # 64x48 RGB: 9216 bytes a frame
    monkeypatch.setattr(backend_decord, "MAX_READ_AHEAD_BYTES", 11 * 64 * 48 * 3)
    info, frames, warnings = decode_all(path, backend="decord")
    assert info.backend == "pyav" and pattern_ids(frames) == list(range(12))
    assert any("decodes ahead of the consumer without bound" in w for w in warnings)
    monkeypatch.setattr(backend_decord, "MAX_READ_AHEAD_BYTES", 12 * 64 * 48 * 3)
    info, frames, _ = decode_all(path, backend="decord")
    assert info.backend == "decord" and pattern_ids(frames) == list(range(12))


def test_frames_can_be_iterated_once(media: Callable[..., Path]) -> None:
    path = media(num_frames=5)
    with open_video(path) as reader:
        assert len(list(reader.frames())) == 5
        assert reader.frames_delivered == 5 and reader.frames_decoded == 5
        with pytest.raises(RuntimeError):
            reader.frames()
    with pytest.raises(RuntimeError):
        reader.frames()


# --------------------------------------------------------------------------- chunks


def synthetic(count: int) -> list[DecodedFrame]:
    return [
        DecodedFrame(index=i, pts=i / 30, rgb=np.full((4, 6, 3), i % 256, np.uint8))
        for i in range(count)
    ]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("overlap", [0, 1, 2, 3])
@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 10, 11, 12, 23])
def test_chunks_hold_every_pair_exactly_once(chunk_size: int, overlap: int, count: int) -> None:
    chunks = list(iter_chunks(synthetic(count), "vid", chunk_size, overlap))
    if count == 0:
        assert chunks == []
        return
    assert all(isinstance(c, FrameChunk) and c.video_id == "vid" for c in chunks)
    assert [c.is_last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[0].overlap == 0 and all(c.overlap == overlap for c in chunks[1:])
    assert all(c.num_frames <= chunk_size + overlap for c in chunks)
    if count <= overlap:
        assert len(chunks) == 1 and chunks[0].indices.tolist() == list(range(count))
        return
    for previous, chunk in itertools.pairwise(chunks):
        if overlap:
            assert chunk.indices[:overlap].tolist() == previous.indices[-overlap:].tolist()
        assert chunk.indices[overlap] == previous.indices[-1] + 1
    pairs = []
    for chunk in chunks:
        start = chunk.indices[0]
        for t in chunk.indices[: chunk.num_frames - overlap]:
            # Pairs owned by a chunk: those starting before the next chunk's first frame.
            if t < start + chunk_size:
                pairs.append((int(t), int(t) + overlap))
    assert sorted(pairs) == [(t, t + overlap) for t in range(count - overlap)]
    within = [
        (int(t), int(t) + overlap)
        for chunk in chunks
        for t in chunk.indices[: chunk.num_frames - overlap]
    ]
    assert sorted(set(within)) == sorted(pairs)
    assert all(within.count(p) == 1 for p in pairs)
    covered = np.concatenate([c.indices[c.overlap :] for c in chunks])
    assert covered.tolist() == list(range(count))


def test_chunk_arguments_are_validated() -> None:
    with pytest.raises(ValueError):
        list(iter_chunks(synthetic(3), "v", 0))
    with pytest.raises(ValueError):
        list(iter_chunks(synthetic(3), "v", 2, overlap=-1))


def test_chunks_from_a_reader(media: Callable[..., Path]) -> None:
    path = media(num_frames=23)
    with open_video(path) as reader:
        chunks = list(iter_chunks(reader, "clip.mkv", chunk_size=5, overlap=1))
    assert [c.indices.tolist()[0] for c in chunks] == [0, 5, 10, 15, 20]
    assert chunks[-1].indices.tolist() == [20, 21, 22] and chunks[-1].is_last
    for chunk in chunks:
        assert chunk.frames.dtype == np.uint8 and chunk.frames.flags.c_contiguous
        assert chunk.frames.shape[1:] == (H, W, 3)
        assert chunk.indices.dtype == np.int64 and chunk.pts.dtype == np.float64
        assert [read_frame_index(f) for f in chunk.frames] == chunk.indices.tolist()
        np.testing.assert_allclose(chunk.pts, chunk.indices / 30, atol=1e-3)


# --------------------------------------------------------------------------- shared clips


def test_shared_clip_without_frame_count_decodes_identically(videos_dir: Path) -> None:
    path = videos_dir / "asl_bird.mkv"
    results = {backend: decode_all(path, backend=backend) for backend in BACKENDS}
    reference = results["pyav"][1]
    assert len(reference) > 0
    for backend, (info, frames, warnings) in results.items():
        assert info.backend == backend and warnings == []
        assert info.header_frame_count is None  # Matroska: no count in the container
        assert info.pix_fmt == "yuvj420p" and (info.width, info.height) == (640, 480)
        assert len(frames) == len(reference)
        # The stream starts at 33 ms: pts are relative to it in every backend.
        assert info.stream_start == pytest.approx(0.033)
        assert frames[0].pts == 0.0
        np.testing.assert_allclose(
            [f.pts for f in frames], [f.pts for f in reference], rtol=0, atol=1e-6
        )
        for mine, theirs in zip(frames[::10], reference[::10], strict=False):
            assert_same_conversion(mine.rgb, theirs.rgb)  # full-range YUV handled alike


@pytest.mark.slow
def test_shared_long_clip_decodes_identically(
    videos_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stages.decoding.backend_decord as backend_decord

    monkeypatch.setattr(backend_decord, "MAX_READ_AHEAD_BYTES", 2**40)  # a fast consumer here
    path = videos_dir / "bottle-detection.mp4"
    results = {}
    for backend in BACKENDS:
        with open_video(path, DecodeConfig(backend=backend)) as reader:
            pts, sample = [], []
            for frame in reader.frames():
                pts.append(frame.pts)
                if frame.index % 100 == 0:
                    sample.append(frame.rgb)
            assert reader.info.backend == backend and reader.warnings == []
            results[backend] = (reader.info.header_frame_count, pts, np.stack(sample))
    header, pts, sample = results["pyav"]
    assert len(pts) == header  # MP4 stores a (here accurate) frame count
    for other_header, other_pts, other_sample in results.values():
        assert other_header == header
        assert other_pts == pts  # pts snapped to the stream time base: identical floats
        assert_same_conversion(other_sample, sample)
