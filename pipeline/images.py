"""Reading still images for the ``pair`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from stages.image_io import read_image

_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""PIL modes of 16-bit and 32-bit single-channel images, which ``convert("RGB")`` would clip
to white; those are read as OpenCV reads them (high byte), like frame folders and
``evaluate``."""


def read_rgb(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB, decoded by PIL like the official demos (gray / RGBA converted),
    upright by its EXIF orientation like frame folders, ``evaluate`` and image viewers;
    16-bit gray images as :func:`stages.image_io.read_image` reads them."""
    try:
        with Image.open(path) as image:
            if image.mode in _HIGH_DEPTH_MODES:
                try:
                    return read_image(path)
                except ValueError as exc:
                    if image.mode not in ("F", "I"):
                        raise
                    raise ValueError(  # OpenCV reads 8- and 16-bit samples only
                        f"{exc} (its samples are 32-bit, PIL mode {image.mode}: convert it to "
                        "8 or 16 bits)"
                    ) from None
            image = ImageOps.exif_transpose(image)
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.asarray(image, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ValueError(f"cannot read image '{path}': file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image '{path}': {exc}") from None


def read_rgb_pair(path1: str | Path, path2: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Two images of the same size as :func:`read_rgb` reads them; ``ValueError`` naming both
    files when they differ in size."""
    first, second = read_rgb(path1), read_rgb(path2)
    if first.shape != second.shape:
        raise ValueError(
            f"images differ in size: {path1} is {first.shape[1]}x{first.shape[0]}, "
            f"{path2} is {second.shape[1]}x{second.shape[0]}"
        )
    return first, second


def to_model_input(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float32 0..255 on ``device``."""
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32)
