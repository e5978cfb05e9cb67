"""Streamed outputs: stacked .npy / .npz written block by block and H.264 previews."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from stages.streaming import PREVIEW_PRESET, Mp4Writer, StackedNpyWriter


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
