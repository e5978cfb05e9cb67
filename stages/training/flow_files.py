"""Reading the files of optical-flow data sets: images, masks and ground truth in every format.

``read_ground_truth`` takes Middlebury ``.flo``, KITTI 16-bit ``.png``, PFM (FlyingThings3D)
and numpy ``.npy`` flow and returns ``(flow (H, W, 2) float32, valid (H, W) float32)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..flow_io import read_flo, read_flow_npy, read_kitti_png

#: Dense ground truth beyond this many pixels in either component is treated as unknown.
MAX_DENSE_FLOW = 1000.0

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
FLOW_SUFFIXES = (".flo", ".png", ".npy")


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def read_pfm(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PFM image (FlyingThings3D's flow and disparity files).

    The header is ``PF`` (3 channels) or ``Pf`` (1 channel), the width and height, and a scale
    whose sign gives the byte order (negative = little-endian); rows are stored bottom to top.

    Returns:
        ``(H, W, 3)`` or ``(H, W)`` float32, top row first, native byte order.

    Raises:
        ValueError: not a PFM file, or shorter than its header says.
    """
    data = Path(path).read_bytes()
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise ValueError(f"{path}: truncated PFM header")
        tokens.append(data[start:pos])
    pos += 1  # the single whitespace byte that ends the header
    magic = tokens[0]
    if magic not in (b"PF", b"Pf"):
        raise ValueError(f"{path}: header starts with {magic[:8]!r}, not PF/Pf (not a PFM file?)")
    channels = 3 if magic == b"PF" else 1
    try:
        width, height, scale = int(tokens[1]), int(tokens[2]), float(tokens[3])
    except ValueError:
        raise ValueError(f"{path}: bad PFM header {b' '.join(tokens)!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"{path}: implausible PFM size width={width} height={height}")
    count = width * height * channels
    if len(data) - pos < 4 * count:
        raise ValueError(
            f"{path}: {len(data) - pos} data bytes, but a {width}x{height}x{channels} PFM "
            f"has {4 * count}"
        )
    dtype = "<f4" if scale < 0 else ">f4"
    values = np.frombuffer(data, dtype=dtype, count=count, offset=pos)
    shape = (height, width, channels) if channels == 3 else (height, width)
    return np.ascontiguousarray(values.reshape(shape)[::-1], dtype=np.float32)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """``(H, W)`` bool: True where the (gray) mask image is non-zero."""
    mask = cv2.imdecode(np.fromfile(Path(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ValueError(f"{path}: OpenCV could not decode the file as a mask image")
    return mask.reshape(*mask.shape[:2], -1).any(axis=-1)


def read_ground_truth(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(flow, valid)`` of a ground-truth file, by its extension.

    ``.flo``, ``.pfm`` (first two channels) and ``.npy`` are dense: valid where finite and
    ``|u|, |v| < 1000``. ``.png`` is a KITTI 16-bit PNG with its own valid channel. Returns
    ``(H, W, 2)`` float32 flow (0 where invalid) and ``(H, W)`` bool validity.
    """
    if Path(path).suffix.lower() == ".png":
        return read_kitti_png(path)
    flow = read_dense_ground_truth(path)
    valid = np.isfinite(flow).all(axis=-1) & (np.abs(flow) < MAX_DENSE_FLOW).all(axis=-1)
    flow = flow.copy()
    flow[~valid] = 0.0
    return flow, valid


def read_dense_ground_truth(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``(H, W, 2)`` float32 flow of a dense ground-truth file (``.flo``, ``.pfm``,
    ``.npy``) as stored, every pixel, nothing marked invalid.

    Raises:
        ValueError: a sparse file (KITTI ``.png``: no flow where its valid channel is 0), an
            unknown type, or not one flow field.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        raise ValueError(
            f"{path}: sparse ground truth (KITTI PNG) has no flow at its invalid pixels"
        )
    if suffix == ".flo":
        return read_flo(path)
    if suffix == ".pfm":
        flow = read_pfm(path)
        if flow.ndim != 3:
            raise ValueError(f"{path}: a PFM flow file has 3 channels, got a 1-channel image")
        return np.ascontiguousarray(flow[..., :2])
    if suffix == ".npy":
        flow = read_flow_npy(path)
        if flow.ndim != 3:
            raise ValueError(f"{path}: expected one (H, W, 2) flow field, got {flow.shape}")
        return flow
    raise ValueError(f"{path}: unknown flow file type {suffix!r} (.flo, .pfm, .npy, .png)")
