"""A folder of images read as one video (``open_video`` dispatches here for a folder).

The images (``.jpg``, ``.jpeg``, ``.png``; hidden files skipped) are taken in natural order
(``frame_2.png`` before ``frame_10.png``); image ``i`` gets ``pts = i / fps`` (``fps``: the
options' ``frames_fps``). Frames are delivered as upright ``(H, W, 3)`` uint8 RGB (gray and
16-bit images converted, EXIF orientation applied), with the same selection (time range,
``target_fps``, ``stride``) and ``max_side`` resize as a video file. An image whose size differs
from the first is resized to the first one's size and counted in a warning; an image that cannot
be read ends the sequence there, as a decoding error ends a video stream: the iteration raises
:class:`DecodeError` after the last good image (with ``keep_incomplete``, it ends with a
warning).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stages.decoding.backend_base import DecodeState
from stages.decoding.selection import expected_count, select_frames
from stages.decoding.transform import FrameTransform, fit_size
from stages.decoding.types import ClosingReader, DecodeConfig, DecodedFrame, DecodeError, VideoInfo
from stages.image_io import read_image

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ``img2.png`` before ``img10.png``."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), p) if p.isdigit() else (1, p.casefold(), p) for p in parts if p)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The images of ``folder`` in natural order (hidden files skipped, not recursive)."""
    names = [
        entry.name
        for entry in os.scandir(folder)
        if not entry.name.startswith(".")
        and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
        and entry.is_file()
    ]
    return [Path(folder) / name for name in sorted(names, key=natural_key)]


def read_image_rgb(path: Path) -> np.ndarray | None:
    """``(H, W, 3)`` uint8 RGB (:func:`stages.image_io.read_image`), or ``None`` when the file
    is not a readable image."""
    try:
        return read_image(path)
    except ValueError:
        return None


class FrameFolderReader(ClosingReader):
    """A frame folder opened for reading; the same interface as :class:`VideoReader`.

    Use as a context manager; :meth:`frames` (or iterating the reader) may be done once.
    """

    def __init__(self, path: str, options: DecodeConfig, fps: float | None = None):
        fps = options.frames_fps if fps is None else fps
        if not fps or fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.options = options
        self._state = DecodeState()
        self.warnings: list[str] = self._state.warnings
        try:
            self._images = list_images(path)
        except OSError as exc:
            raise DecodeError(path, f"cannot read the folder ({exc.strerror or exc})") from None
        if not self._images:
            raise DecodeError(path, "the folder holds no .jpg or .png image")
        first = read_image_rgb(self._images[0])
        if first is None:
            raise DecodeError(path, f"'{self._images[0].name}' is not a readable image")
        self._first = first
        self._fps = float(fps)
        source_height, source_width = first.shape[:2]
        width, height = fit_size(
            source_width,
            source_height,
            max_side=options.max_side,
            short_side=options.short_side,
        )
        self._transform = FrameTransform((source_width, source_height), 0, (width, height))
        self.info = VideoInfo(
            path=path,
            width=width,
            height=height,
            source_width=source_width,
            source_height=source_height,
            rotation=0,
            fps=self._fps,
            header_frame_count=len(self._images),
            codec="images",
            pix_fmt="rgb24",
            duration=len(self._images) / self._fps,
            stream_start=0.0,
            backend="frames",
        )
        self.frames_delivered = 0

    def expected_frames(self) -> int:
        """How many images :meth:`frames` delivers with this reader's options (unless one turns
        out unreadable)."""
        return expected_count(len(self._images), self._fps, None, self.options) or 0

    def _iterate(self) -> Iterator[DecodedFrame]:
        """The selected images (``pts = position / fps``)."""
        timed = ((n / self._fps, n) for n in range(len(self._images)))
        for pts, position in select_frames(timed, self.options):
            image = self._images[position]
            rgb = self._first if position == 0 else read_image_rgb(image)
            if rgb is None:
                fault = f"image '{image.name}' cannot be read"
                self._state.warn(f"{fault}; the sequence ends after {self.frames_delivered} frames")
                if not self.options.keep_incomplete:
                    raise DecodeError.incomplete(
                        self.info.path, fault, self.frames_delivered, len(self._images)
                    )
                break
            yield DecodedFrame(index=self.frames_delivered, pts=pts, rgb=self._transform(rgb))
            self.frames_delivered += 1
        if self._transform.size_changes:
            width, height = self._transform.input_size
            self._state.warn(
                f"{self._transform.size_changes} images differ from the first one's size "
                f"{width}x{height}; they were resized"
            )
        if self.frames_delivered == 0:
            self._state.warn("no frame in the selected range")

    def close(self) -> None:
        """Nothing to release; later calls to :meth:`frames` fail. Safe to call twice."""
        self._closed = True


def open_frames_folder(path: str | os.PathLike[str], options: DecodeConfig) -> FrameFolderReader:
    """Opens a frame folder; the frame rate is ``options.frames_fps``.

    Raises:
        DecodeError: the folder holds no image, or its first image cannot be read.
    """
    return FrameFolderReader(os.fspath(path), options)
