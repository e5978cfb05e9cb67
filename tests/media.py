"""Generate small test videos with PyAV (no ffmpeg CLI needed).

Content (:func:`pattern_frame`): a smooth colour texture translating by a known velocity
(``vx, vy`` pixels per frame, so the true optical flow between frames ``t`` and ``t + 1`` is
``(vx, vy)`` everywhere below the index band), and a top band of black/white cells encoding the
frame number in binary (:func:`read_frame_index` recovers it, also after lossy codecs).

Main entry point: :func:`write_video`. Lower level: :func:`write_frames` encodes any RGB frames.
Broken inputs: :func:`write_audio_only`, :func:`write_no_frames`, :func:`write_garbage_packets`,
:func:`garble_packets`, :func:`corrupt_copy`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

logger = logging.getLogger(__name__)

INDEX_BITS = 10
"""Bits of the frame-index band (frame numbers modulo 1024)."""

DEFAULT_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"qp": "0"},  # lossless in the YUV domain
    "libx264rgb": {"qp": "0"},
    "libvpx-vp9": {"lossless": "1"},
    "libx265": {"x265-params": "log-level=none"},
}
"""Encoder options used unless ``options`` is given: lossless where the encoder supports it."""

DEFAULT_BIT_RATE: dict[str, int] = {"mpeg4": 5_000_000, "mjpeg": 5_000_000}
"""Bit rate for lossy-only encoders unless ``bit_rate`` is given (high: small error)."""

_MJPEG_FULL_RANGE = {"yuv420p": "yuvj420p", "yuv422p": "yuvj422p", "yuv444p": "yuvj444p"}


def index_band_height(height: int) -> int:
    """Rows of the index band at the top of a frame of the given height."""
    return max(4, height // 8)


def pattern_frame(
    index: int, width: int = 64, height: int = 48, velocity: tuple[float, float] = (2.0, 1.0)
) -> np.ndarray:
    """Deterministic upright test frame number ``index``.

    Returns:
        ``(height, width, 3)`` uint8 RGB. Rows ``[0, index_band_height(height))`` hold
        :data:`INDEX_BITS` equal-width cells, most significant bit first, 255 for a set bit and 0
        otherwise; below, a smooth texture (detailed luma, slowly varying chroma) sampled at
        ``(x - vx * index, y - vy * index)``, so content moves by ``(vx, vy)`` per frame.
    """
    if width < 2 * INDEX_BITS or height < 8:
        raise ValueError(f"frame too small for the index band: {width}x{height}")
    vx, vy = velocity
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    x = (xs - vx * index) * 2 * np.pi
    y = (ys - vy * index) * 2 * np.pi
    # Detailed luma, smooth chroma: survives 4:2:0 subsampling with small error.
    luma = 0.5 + 0.2 * np.sin(x / 17.0) + 0.15 * np.cos(y / 11.0) + 0.1 * np.sin((x + y) / 23.0)
    cb = 0.1 * np.cos(y / 37.0 + 0.5)
    cr = 0.1 * np.sin(x / 41.0)
    rgb = np.stack([luma + 1.4 * cr, luma - 0.34 * cb - 0.71 * cr, luma + 1.77 * cb], axis=-1)
    frame = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    band = index_band_height(height)
    edges = np.linspace(0, width, INDEX_BITS + 1).round().astype(int)
    for bit in range(INDEX_BITS):
        on = (index >> (INDEX_BITS - 1 - bit)) & 1
        frame[:band, edges[bit] : edges[bit + 1]] = 255 if on else 0
    return frame


def read_frame_index(rgb: np.ndarray) -> int:
    """Recover the frame number from an upright ``(H, W, 3)`` uint8 frame of :func:`pattern_frame`
    (any size: cells are sampled at their centres in proportional coordinates)."""
    height, width = rgb.shape[:2]
    row = index_band_height(height) // 2
    value = 0
    for bit in range(INDEX_BITS):
        col = int((bit + 0.5) * width / INDEX_BITS)
        value = (value << 1) | int(rgb[row, col].mean() > 127)
    return value


def default_suffix(codec: str) -> str:
    """A container extension that accepts ``codec``."""
    return {"libvpx-vp9": ".webm", "libvpx": ".webm", "mjpeg": ".avi", "mpeg4": ".mp4"}.get(
        codec, ".mkv"
    )


def write_frames(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    fps: float | Fraction = 30,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int = 0,
    rotation_as_tag: bool = False,
    options: Mapping[str, str] | None = None,
    gop_size: int | None = None,
    bit_rate: int | None = None,
    container_options: Mapping[str, str] | None = None,
) -> Path:
    """Encode stored-orientation RGB frames into ``path`` (the container follows the suffix).

    Args:
        frames: ``(H, W, 3)`` uint8 RGB arrays, all the same size, as they are to be stored.
        codec: encoder name, e.g. ``libx264``, ``ffv1``, ``mjpeg``, ``libvpx-vp9``, ``mpeg4``.
        pix_fmt: stored pixel format, e.g. ``yuv420p``, ``yuv444p``, ``gray``, ``yuv420p10le``
            (for ``mjpeg`` the full-range ``yuvj*`` twin is used).
        fps: nominal frame rate (frame ``i`` gets pts ``i / fps`` unless ``pts`` is given).
        pts: explicit per-frame timestamps in ``time_base`` units (variable frame rate).
        time_base: time base of ``pts`` (default ``1/1000`` when ``pts`` is given).
        rotation: clockwise degrees a player must rotate the stored frames to display them
            upright; written as a display matrix (MP4/MOV/MKV) or, with ``rotation_as_tag``, as
            a legacy ``rotate`` metadata tag (kept by MKV only).
        options: encoder options (default :data:`DEFAULT_OPTIONS` for the codec).
        gop_size: keyframe interval.
        bit_rate: target bit rate (default :data:`DEFAULT_BIT_RATE` for the codec).
        container_options: muxer options, e.g. ``{"movflags": "faststart"}`` (MP4 index first).
    """
    path = Path(path)
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    if codec == "mjpeg":
        pix_fmt = _MJPEG_FULL_RANGE.get(pix_fmt, pix_fmt)
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    if pts is not None and time_base is None:
        time_base = Fraction(1, 1000)
    with av.open(str(path), "w", options=dict(container_options or {})) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.pix_fmt = pix_fmt
        stream.options = dict(DEFAULT_OPTIONS.get(codec, {}) if options is None else options)
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        if bit_rate is not None or codec in DEFAULT_BIT_RATE:
            stream.bit_rate = bit_rate or DEFAULT_BIT_RATE[codec]
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation % 360:
            if rotation_as_tag:
                stream.metadata["rotate"] = str(rotation % 360)
            else:
                stream.set_display_rotation(-(rotation % 360))
        count = 0
        for count, rgb in enumerate(frames, start=1):
            if count == 1:
                stream.height, stream.width = rgb.shape[:2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pts is not None:
                frame.pts = int(pts[count - 1])
                frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    logger.debug("wrote %s: %d frames %s %s", path, count, codec, pix_fmt)
    return path


def write_video(
    path: str | Path,
    *,
    width: int = 64,
    height: int = 48,
    num_frames: int = 20,
    velocity: tuple[float, float] = (2.0, 1.0),
    rotation: int = 0,
    **encoding: Any,
) -> Path:
    """Write :func:`pattern_frame` ``0 .. num_frames - 1`` (upright size ``width x height``).

    With ``rotation`` the frames are stored turned counter-clockwise by that angle, so that a
    decoder honouring the rotation delivers exactly :func:`pattern_frame` again. ``encoding``:
    the other keyword arguments of :func:`write_frames` (codec, pix_fmt, fps, pts, ...).
    """
    turns = (rotation % 360) // 90
    frames = (
        np.rot90(pattern_frame(i, width, height, velocity), k=turns) for i in range(num_frames)
    )
    return write_frames(path, frames, rotation=rotation, **encoding)


def write_audio_only(path: str | Path, seconds: float = 0.5, rate: int = 8000) -> Path:
    """Write a silent mono AAC track without any video stream (e.g. ``.m4a`` / ``.mka``)."""
    path = Path(path)
    samples = 1024
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        for i in range(max(1, int(seconds * rate) // samples)):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, samples), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = i * samples
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_no_frames(path: str | Path, width: int = 64, height: int = 48) -> Path:
    """Write an AVI with a declared video stream and no frame at all."""
    path = Path(path)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        container.start_encoding()
    return path


def write_garbage_packets(
    path: str | Path, num_packets: int = 5, size: int = 500, seed: int = 0
) -> Path:
    """Write a Matroska file whose MPEG-4 video packets are random bytes (nothing decodes)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
        for i in range(num_packets):
            packet = av.Packet(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            packet.stream = stream
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 30)
            container.mux(packet)
    return path


def corrupt_copy(
    src: str | Path,
    dst: str | Path,
    *,
    at: float = 0.5,
    length: int = 2000,
    truncate: bool = False,
    seed: int = 0,
) -> Path:
    """Copy ``src`` to ``dst`` damaged at relative position ``at``: overwrite ``length`` bytes
    with random ones, or with ``truncate`` cut the file there."""
    data = bytearray(Path(src).read_bytes())
    cut = int(len(data) * at)
    if truncate:
        data = data[:cut]
    else:
        noise = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8)
        data[cut : cut + length] = noise.tobytes()[: max(0, len(data) - cut)]
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def garble_packets(
    src: str | Path, dst: str | Path, *, first: int, count: int | None = None, seed: int = 0
) -> Path:
    """Remux the video stream of ``src`` into ``dst`` (same container type), replacing the
    payload of packets ``first .. first + count - 1`` (decode order; ``count=None``: to the end)
    with random bytes of the same size. Timestamps and keyframe flags are kept, so the container
    is intact and only the decoder meets the damage."""
    rng = np.random.default_rng(seed)
    last = None if count is None else first + count
    with av.open(str(src)) as source, av.open(str(dst), "w") as target:
        in_stream = source.streams.video[0]
        out_stream = target.add_stream_from_template(in_stream)
        number = 0
        for packet in source.demux(in_stream):
            if packet.size == 0:  # demuxer flush marker
                continue
            if number >= first and (last is None or number < last):
                noise = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                noise.pts, noise.dts, noise.time_base = packet.pts, packet.dts, packet.time_base
                noise.is_keyframe = packet.is_keyframe
                packet = noise
            packet.stream = out_stream
            target.mux(packet)
            number += 1
    return Path(dst)


def matroska_declaring(src: str | Path, dst: str | Path, seconds: float) -> Path:
    """Copy a Matroska file written by FFmpeg with its segment duration set to ``seconds`` and
    its per-track ``DURATION`` tag made unrecognisable: what a recording killed before the
    muxer closed it looks like when the duration was declared up front."""
    data = bytearray(Path(src).read_bytes())
    at = data.find(bytes.fromhex("448988"))  # Duration element, an 8-byte float (ms)
    if at < 0:
        raise ValueError(f"{src}: no 8-byte segment Duration element")
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000.0)
    tag = data.find(b"DURATION")
    if tag >= 0:
        data[tag : tag + 8] = b"DURATIOX"
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def drop_packets(src: str | Path, dst: str | Path, dropped: range) -> Path:
    """Remux the video stream of ``src`` into ``dst`` without the packets numbered ``dropped``
    (decode order), timestamps kept: frames lost from a damaged stream or a capture."""
    with av.open(str(src)) as source, av.open(str(dst), "w") as target:
        stream = source.streams.video[0]
        out_stream = target.add_stream_from_template(stream)
        packets = (packet for packet in source.demux(stream) if packet.size)
        for number, packet in enumerate(packets):
            if number not in dropped:
                packet.stream = out_stream
                target.mux(packet)
    return Path(dst)
