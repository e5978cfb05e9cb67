"""Pictures on disk: an RGB or gray uint8 image encoded by its extension, written atomically,
and read back as OpenCV decodes it (:func:`read_image`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from models.atomic_files import PathLike, write_bytes_atomic


def read_image(path: PathLike) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB as OpenCV's ``IMREAD_COLOR`` decodes it: EXIF orientation
    applied, gray replicated, alpha dropped, 16-bit samples cut to their high byte.

    Raises:
        ValueError: naming the file, when it cannot be read or decoded as an image.
    """
    try:
        data = np.fromfile(Path(path), dtype=np.uint8)  # also for non-ASCII names everywhere
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ValueError(f"{path}: OpenCV could not decode the file as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_image(path: PathLike, rgb: npt.ArrayLike, *, jpeg_quality: int = 95) -> None:
    """Write an RGB ``(H, W, 3)`` or gray ``(H, W)`` uint8 image atomically.

    The extension picks the encoder (``.png``, ``.jpg``); colour images are converted to the
    BGR order OpenCV encodes.
    """
    image = np.asarray(rgb)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W[, 3]) uint8, got {image.shape} {image.dtype}")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    suffix = Path(path).suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if suffix in (".jpg", ".jpeg") else []
    ok, buffer = cv2.imencode(suffix, image, params)
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    write_bytes_atomic(path, buffer, durable=False)
