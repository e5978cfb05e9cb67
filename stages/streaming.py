"""Writers whose size is unknown until the video ends: stacked ``.npy`` / ``.npz`` and MP4.

Memory stays bounded by one chunk: rows are appended to a temporary file as they arrive and
the file is renamed into place only by :meth:`close` (:mod:`models.atomic_files`, not fsynced:
the video's ``meta.json`` marks it complete), so a crash never leaves a file that looks
complete. Write errors that name no file (a full disk) are raised naming the destination.
"""

from __future__ import annotations

import contextlib
import math
import os
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from models.atomic_files import atomic_open, commit, create_temporary, naming_errors

# Reserved header length: room for any shape we can produce, padded with spaces.
_NPY_HEADER_BYTES = 128


class StackedNpyWriter:
    """Appends ``(n, *row_shape)`` blocks to one ``.npy`` (or ``.npz``) file.

    The ``.npy`` header is written with a placeholder first dimension and rewritten in place by
    :meth:`close` (same length, space padded, as the format allows). For ``.npz`` the finished
    ``.npy`` is streamed into a deflated zip entry named ``key``.
    """

    def __init__(self, path: str | Path, row_shape: tuple[int, ...], dtype, key: str = "flow"):
        self.path = Path(path)
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.key = key
        self.rows = 0
        with naming_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, self._npy = create_temporary(self.path, ".rows.tmp")
            self._file = os.fdopen(handle, "wb")  # closed in close() / abort()
            self._write_header()

    def _write_header(self) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, *self.row_shape),
        }
        text = repr(header).encode("latin1")
        magic = np.lib.format.magic(1, 0)
        pad = _NPY_HEADER_BYTES - len(magic) - 2 - len(text) - 1
        if pad < 0:
            raise ValueError(f"shape {header['shape']} does not fit the reserved npy header")
        body = text + b" " * pad + b"\n"
        self._file.seek(0)
        self._file.write(magic + len(body).to_bytes(2, "little") + body)

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"expected rows of shape {self.row_shape}, got {block.shape}")
        with naming_errors(self.path):
            self._file.seek(0, os.SEEK_END)
            if block.size:  # (memoryview cannot cast an empty array)
                self._file.write(memoryview(block).cast("B"))  # no copy, unlike tobytes()
        self.rows += block.shape[0]

    def close(self) -> Path:
        with naming_errors(self.path):
            self._write_header()
            self._file.close()
            if self.path.suffix == ".npz":
                self._to_npz()
            else:
                commit(self._npy, self.path, durable=False)  # meta.json marks it complete
        return self.path

    def _to_npz(self) -> None:
        try:
            with (
                atomic_open(self.path, durable=False) as handle,
                zipfile.ZipFile(
                    handle, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True
                ) as z,
                z.open(f"{self.key}.npy", "w", force_zip64=True) as entry,
                open(self._npy, "rb") as source,
            ):
                while block := source.read(1 << 22):
                    entry.write(block)
        finally:
            self._npy.unlink(missing_ok=True)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(OSError):  # a folder made read-only keeps it
            self._npy.unlink(missing_ok=True)


# x264 preset of the preview videos (viz.mp4, warped.mp4). On 100 frames of previews of a
# 768x432 clip (2-core Zen 3), against "veryfast": 2.4x less encoding CPU at 2-2.5x the file
# size (still ~1 % of the flow files beside them) and the same or higher PSNR at CRF 20; the
# encoder was the costliest step after the flow itself once every output was on.
PREVIEW_PRESET = "ultrafast"


def preview_rate(fps: float | None) -> Fraction:
    """``fps`` as the exact rate an MP4 stream takes: NTSC rates such as 29.97 become
    30000/1001 and a stride's 25/3 stays 25/3 (a rounded whole number would play them
    0.1 % or 4 % off, and 0.5 fps twice too fast); 25 when the rate is unknown."""
    if not fps or not math.isfinite(fps) or fps <= 0:
        return Fraction(25)
    return Fraction(fps).limit_denominator(1001)


# FFmpeg's codes (AVColorSpace, AVColorRange, AVColorPrimaries, AVColorTransferCharacteristic)
# for what the previews hold: PyAV converts RGB frames that carry no colour tags to yuv420p with
# libswscale's default, the BT.601 matrix in limited ("tv", 16-235) range; the RGB values are
# sRGB (BT.709 primaries).
_SMPTE170M_MATRIX = 6
_LIMITED_RANGE = 1
_BT709_PRIMARIES = 1
_SRGB_TRANSFER = 13


def _tag_colours(codec_context) -> None:
    """Declare the previews' colour encoding in the stream (H.264 VUI, MP4 ``colr``).

    Untagged, a player guesses, and for HD sizes it guesses BT.709: the BT.601 conversion then
    plays with shifted hues (pure red as (255, 23, 0)), which misreads the flow colour wheel.
    """
    codec_context.colorspace = _SMPTE170M_MATRIX
    codec_context.color_range = _LIMITED_RANGE
    codec_context.color_primaries = _BT709_PRIMARIES
    codec_context.color_trc = _SRGB_TRANSFER


class Mp4Writer:
    """Encodes RGB frames ``(H, W, 3)`` uint8 to H.264 MP4 (odd sizes padded to even), yuv420p
    with the BT.601 matrix in limited range, which the stream declares.

    ``crf``: x264's constant rate factor (lower: better quality, larger file); ``preset``:
    x264's speed / compression trade-off (:data:`PREVIEW_PRESET` by default).
    """

    def __init__(
        self, path: str | Path, fps: float, *, crf: int = 20, preset: str = PREVIEW_PRESET
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.crf = crf
        self.preset = preset
        self._tmp: Path | None = None
        self._container = None
        self._stream = None

    def _open(self, height: int, width: int) -> None:
        handle, self._tmp = create_temporary(self.path)
        os.close(handle)  # PyAV writes it by name
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=preview_rate(self.fps))
        self._stream.width = width + width % 2
        self._stream.height = height + height % 2
        self._stream.pix_fmt = "yuv420p"
        _tag_colours(self._stream.codec_context)
        # x264's own threads: the calling thread's PyTorch share of the cores (the output stages
        # run side by side, see pipeline.overlap); its default (1.5 per core) spent 1.7x the
        # CPU per frame of one thread on a 2-core machine
        threads = str(max(1, torch.get_num_threads()))
        self._stream.options = {"crf": str(self.crf), "preset": self.preset, "threads": threads}

    def write(self, rgb: np.ndarray) -> None:
        with naming_errors(self.path):
            self._write(rgb)

    def _write(self, rgb: np.ndarray) -> None:
        if self._container is None:
            self._open(*rgb.shape[:2])
        missing = (self._stream.height - rgb.shape[0], self._stream.width - rgb.shape[1])
        if any(missing):
            rgb = np.pad(rgb, ((0, missing[0]), (0, missing[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path | None:
        if self._container is None:
            return None
        with naming_errors(self.path):
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            commit(self._tmp, self.path, durable=False)  # meta.json marks it complete
        return self.path

    def abort(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)
