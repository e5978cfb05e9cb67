"""Streamed outputs: stacked .npy / .npz written block by block and H.264 previews."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stages.streaming import PREVIEW_PRESET, Mp4Writer, StackedNpyWriter, preview_rate


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_stacked_writer_equals_the_concatenated_blocks(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(n, 5, 7, 2)).astype(np.float32) for n in (3, 0, 1, 4)]
    writer = StackedNpyWriter(tmp_path / f"flow{suffix}", (5, 7, 2), np.float32)
    for block in blocks:
        writer.append(block)
    path = writer.close()
    loaded = np.load(path)
    stacked = loaded if suffix == ".npy" else loaded["flow"]
    np.testing.assert_array_equal(stacked, np.concatenate(blocks))
    assert not list(tmp_path.glob("*.tmp"))


def _x264_settings(path: Path) -> bytes:
    """The options string x264 writes into the stream (its SEI user data)."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    return data[start : data.index(b"\0", start)]


@pytest.mark.parametrize("preset", [None, "veryfast"])
def test_previews_decode_to_the_frames_written(tmp_path: Path, preset: str | None) -> None:
    """Odd sizes are padded to even (edge pixels repeated); the default preset is the fast
    one (no CABAC)."""
    y, x = np.mgrid[0:31, 0:51]
    scene = np.stack([x * 4, y * 6, 120 + 60 * np.sin(x / 5.0)], axis=-1).astype(np.uint8)
    frames = [np.ascontiguousarray(scene[:, shift : shift + 45]) for shift in range(6)]
    options = {} if preset is None else {"preset": preset}
    writer = Mp4Writer(tmp_path / "preview.mp4", 25.0, crf=10, **options)
    for frame in frames:
        writer.write(frame)
    path = writer.close()
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == len(frames) and decoded[0].shape == (32, 46, 3)
    for got, want in zip(decoded, frames, strict=True):
        error = np.abs(got[:31, :45].astype(np.int16) - want).mean()
        assert error < 3, error
    cabac = b"cabac=0" if (preset or PREVIEW_PRESET) == "ultrafast" else b"cabac=1"
    assert cabac in _x264_settings(path)


@pytest.mark.parametrize(
    ("fps", "rate"),
    [(30000 / 1001, Fraction(30000, 1001)), (25 / 3, Fraction(25, 3)), (0.5, Fraction(1, 2)),
     (25.0, Fraction(25)), (0.0, Fraction(25)), (float("nan"), Fraction(25))],
)  # fmt: skip
def test_previews_play_at_the_exact_rate(tmp_path: Path, fps: float, rate: Fraction) -> None:
    """NTSC and stride-divided rates are not rounded to whole frames per second."""
    assert preview_rate(fps) == rate
    writer = Mp4Writer(tmp_path / "preview.mp4", fps)
    for value in range(0, 240, 24):
        writer.write(np.full((16, 16, 3), value, np.uint8))
    with av.open(str(writer.close())) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == rate
        times = [frame.time for frame in container.decode(stream)]
    assert times[-1] == pytest.approx(9 / rate, abs=1e-3)


def test_previews_declare_the_colour_encoding_they_use(tmp_path: Path) -> None:
    """The stream says BT.601 limited range, the conversion it holds: decoded with the matrix
    it declares, an HD preview's colours come back; untagged, players decode HD as BT.709."""
    picture = np.zeros((720, 1280, 3), np.uint8)
    picture[:, :640] = (255, 0, 0)
    picture[:, 640:] = (0, 128, 255)
    writer = Mp4Writer(tmp_path / "preview.mp4", 25.0, crf=10)
    for _ in range(2):
        writer.write(picture)
    with av.open(str(writer.close())) as container:
        frame = next(container.decode(video=0))
    assert (frame.colorspace, frame.color_range) == (6, 1)  # SMPTE 170M matrix, limited range
    luma = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, -1)
    assert luma[360, 320] == pytest.approx(16 + 219 * 0.299, abs=1.5)  # BT.601 luma of red
    declared = frame.reformat(format="rgb24", src_colorspace="ITU601").to_ndarray()
    assert np.abs(declared[360, [320, 960]].astype(int) - [(255, 0, 0), (0, 128, 255)]).max() <= 4
