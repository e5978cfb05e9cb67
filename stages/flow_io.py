"""Optical-flow file formats: Middlebury ``.flo``, KITTI 16-bit PNG and numpy.

Every function here works on numpy flow laid out as ``(H, W, 2)`` (or ``(T, H, W, 2)`` for
stacks): channel 0 is the x (rightward) displacement, channel 1 the y (downward) displacement,
in pixels of the frame the flow was computed at, from frame ``t`` to frame ``t + k``. Readers
always return C-contiguous native-endian float32. Every writer is atomic
(:mod:`models.atomic_files`): a crash never leaves a truncated file under the real name. They
do not fsync (one file per pair: a video's outputs count once its ``meta.json`` exists).

Action-recognition flow JPEGs are :mod:`stages.flow_jpeg`'s, RGB / gray pictures
:mod:`stages.image_io`'s. :func:`atomic_path`, :func:`write_bytes_atomic` and
:func:`write_image` are importable from here too.

Formats
-------
``.flo`` (Middlebury, Baker et al. 2011)
    little-endian: float32 magic ``202021.25`` (the bytes ``PIEH``), int32 width, int32 height,
    then ``H * W * 2`` float32 in row-major order with u, v interleaved. Loads with
    ``cv2.readOpticalFlow``.
KITTI 16-bit PNG (Geiger et al. 2012)
    3 x uint16 channels, R = ``u * 64 + 2**15``, G = ``v * 64 + 2**15``, B = valid (1 / 0).
    Representable flow is ``[-512, 511.984375]`` pixels in steps of ``1/64``.
``.npy`` / ``.npz``
    a single field or a stack in float16 or float32; the ``.npz`` is zip-deflated and keeps the
    stack under the key ``flow`` next to optional extra arrays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from models.atomic_files import PathLike, atomic_open, atomic_path, write_bytes_atomic

from .image_io import write_image

logger = logging.getLogger(__name__)

__all__ = [
    "FLO_MAGIC",
    "KITTI_MAX_FLOW",
    "KITTI_MIN_FLOW",
    "atomic_path",
    "check_field",
    "read_flo",
    "read_flow_npy",
    "read_flow_npz",
    "read_kitti_png",
    "write_bytes_atomic",
    "write_flo",
    "write_flow_npy",
    "write_flow_npz",
    "write_image",
    "write_kitti_png",
]

FLO_MAGIC = 202021.25
"""Middlebury ``.flo`` tag: this float32, stored little-endian, reads as the bytes ``PIEH``."""

_FLO_HEADER_BYTES = 12
# Middlebury's reference reader refuses images larger than this on either side.
_FLO_MAX_SIDE = 99_999

_KITTI_OFFSET = 2.0**15
_KITTI_SCALE = 64.0
KITTI_MIN_FLOW = (0.0 - _KITTI_OFFSET) / _KITTI_SCALE
"""Smallest flow component a KITTI PNG can hold: ``-512.0`` pixels."""
KITTI_MAX_FLOW = (65535.0 - _KITTI_OFFSET) / _KITTI_SCALE
"""Largest flow component a KITTI PNG can hold: ``511.984375`` pixels."""

_NUMPY_FLOW_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
_NPZ_FLOW_KEY = "flow"


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def check_field(flow: npt.ArrayLike, name: str = "flow") -> np.ndarray:
    """Return ``flow`` as an ndarray after checking it is one real ``(H, W, 2)`` field."""
    array = np.asarray(flow)
    if array.ndim != 3 or array.shape[-1] != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} must be (H, W, 2) with H, W >= 1, got shape {array.shape}")
    _check_real(array, name)
    return array


def _check_stack(flows: npt.ArrayLike, name: str = "flows") -> np.ndarray:
    """Return ``flows`` as an ndarray after checking it is a real ``(T, H, W, 2)`` stack."""
    array = np.asarray(flows)
    if array.ndim != 4 or array.shape[-1] != 2 or min(array.shape[1:3], default=0) < 1:
        raise ValueError(f"{name} must be (T, H, W, 2) with H, W >= 1, got shape {array.shape}")
    _check_real(array, name)
    return array


def _check_field_or_stack(flow: npt.ArrayLike, name: str) -> np.ndarray:
    """Accept either one ``(H, W, 2)`` field or a ``(T, H, W, 2)`` stack."""
    array = np.asarray(flow)
    return _check_stack(array, name) if array.ndim == 4 else check_field(array, name)


def _check_real(array: np.ndarray, name: str) -> None:
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")


def _check_numpy_dtype(dtype: npt.DTypeLike) -> np.dtype:
    resolved = np.dtype(dtype)
    if resolved not in _NUMPY_FLOW_DTYPES:
        raise ValueError(f"flow dtype on disk must be float16 or float32, got {resolved}")
    return resolved


def _cast_for_disk(array: np.ndarray, dtype: np.dtype, path: PathLike) -> np.ndarray:
    """Cast to the on-disk dtype, warning when float16 turns finite values into inf."""
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(array, dtype=dtype)
    if dtype == np.float16:
        overflow = int(np.count_nonzero(np.isinf(out) & np.isfinite(array)))
        if overflow:
            logger.warning(
                "%s: %d flow values overflow float16 and were stored as inf", path, overflow
            )
    return out


# --------------------------------------------------------------------------------------------
# Middlebury .flo
# --------------------------------------------------------------------------------------------


def write_flo(path: PathLike, flow: npt.ArrayLike) -> None:
    """Write one flow field as a Middlebury ``.flo`` file (atomically).

    Args:
        path: destination; the ``.flo`` extension is conventional but not enforced.
        flow: ``(H, W, 2)`` flow in pixels, any real dtype (stored as little-endian float32).
            Non-finite values are stored as they are; Middlebury tools treat ``|v| > 1e9`` as
            unknown.

    Raises:
        ValueError: ``flow`` is not ``(H, W, 2)`` (the message prints the shape).
    """
    field = check_field(flow)
    height, width = field.shape[:2]
    header = (
        np.array([FLO_MAGIC], dtype="<f4").tobytes()
        + np.array([width, height], dtype="<i4").tobytes()
    )
    payload = np.ascontiguousarray(field, dtype="<f4")
    with atomic_open(path, durable=False) as handle:
        handle.write(header)
        handle.write(memoryview(payload).cast("B"))


def read_flo(path: PathLike) -> np.ndarray:
    """Read a Middlebury ``.flo`` file.

    Returns:
        ``(H, W, 2)`` float32 flow in pixels (channel 0 = x, channel 1 = y).

    Raises:
        ValueError: wrong magic number, implausible size, or a file whose length does not match
            its header.
    """
    data = Path(path).read_bytes()
    if len(data) < _FLO_HEADER_BYTES:
        raise ValueError(f"{path}: {len(data)} bytes is too short for a .flo header")
    magic = float(np.frombuffer(data, dtype="<f4", count=1)[0])
    if magic != FLO_MAGIC:
        raise ValueError(f"{path}: magic {magic!r} is not {FLO_MAGIC} (not a .flo file?)")
    width, height = (int(v) for v in np.frombuffer(data, dtype="<i4", count=2, offset=4))
    if not (1 <= width <= _FLO_MAX_SIDE and 1 <= height <= _FLO_MAX_SIDE):
        raise ValueError(f"{path}: implausible .flo size width={width} height={height}")
    expected = _FLO_HEADER_BYTES + 8 * width * height
    if len(data) != expected:
        raise ValueError(
            f"{path}: {len(data)} bytes, but a {width}x{height} .flo file has {expected}"
        )
    values = np.frombuffer(data, dtype="<f4", count=2 * width * height, offset=_FLO_HEADER_BYTES)
    return values.reshape(height, width, 2).astype(np.float32)


# --------------------------------------------------------------------------------------------
# KITTI 16-bit PNG
# --------------------------------------------------------------------------------------------


def write_kitti_png(
    path: PathLike, flow: npt.ArrayLike, valid: npt.ArrayLike | None = None
) -> None:
    """Write flow as a KITTI 16-bit RGB PNG (atomically).

    Encoding per pixel: R = ``u * 64 + 2**15``, G = ``v * 64 + 2**15`` (rounded to the nearest
    integer, then clipped to ``0..65535``), B = 1 where valid else 0. So each component is
    stored in steps of 1/64 px and clipped to ``[KITTI_MIN_FLOW, KITTI_MAX_FLOW]`` =
    ``[-512, 511.984375]`` px; a clipped pixel stays valid (the reader sees the clipped value)
    and a warning counts them. Pixels where either component is NaN or infinite are written
    invalid, with R = G = 2**15.

    (The KITTI devkit truncates instead of rounding; rounding halves the worst-case error to
    1/128 px and decodes with the same formula.)

    Args:
        path: destination ``.png`` file.
        flow: ``(H, W, 2)`` flow in pixels.
        valid: optional ``(H, W)`` mask, non-zero = valid. Default: every finite pixel.

    Raises:
        ValueError: ``flow`` is not ``(H, W, 2)`` or ``valid`` is not ``(H, W)``.
    """
    field = check_field(flow).astype(np.float64)
    height, width = field.shape[:2]
    mask = np.isfinite(field).all(axis=-1)
    if valid is not None:
        valid_array = np.asarray(valid)
        if valid_array.shape != (height, width):
            raise ValueError(
                f"valid must be (H, W) = {(height, width)} like the flow, got {valid_array.shape}"
            )
        mask &= valid_array.astype(bool)
    encoded = np.rint(field * _KITTI_SCALE + _KITTI_OFFSET)
    encoded[~mask] = _KITTI_OFFSET
    clipped = int(((encoded < 0) | (encoded > 65535)).any(axis=-1).sum())
    if clipped:
        logger.warning(
            "%s: %d of %d valid pixels exceed the KITTI PNG range [%g, %g] px and are clipped",
            path, clipped, int(mask.sum()), KITTI_MIN_FLOW, KITTI_MAX_FLOW,
        )  # fmt: skip
    encoded = np.clip(encoded, 0, 65535).astype(np.uint16)
    # OpenCV orders channels B, G, R: B = valid, G = v, R = u.
    bgr = np.dstack([mask.astype(np.uint16), encoded[..., 1], encoded[..., 0]])
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"{path}: OpenCV failed to encode the KITTI PNG")
    write_bytes_atomic(path, buffer, durable=False)


def read_kitti_png(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI 16-bit flow PNG.

    Returns:
        ``(flow, valid)``: ``(H, W, 2)`` float32 flow in pixels, ``u = (R - 2**15) / 64``,
        ``v = (G - 2**15) / 64``, set to 0 where invalid (whatever the file holds there; KITTI
        ground truth stores 0, i.e. -512 px, at invalid pixels); and an ``(H, W)`` bool mask,
        True where B > 0.

    Raises:
        ValueError: the file is not a 3-channel 16-bit PNG.
    """
    raw = np.fromfile(Path(path), dtype=np.uint8)
    bgr = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise ValueError(f"{path}: OpenCV could not decode the file as an image")
    if bgr.dtype != np.uint16 or bgr.ndim != 3 or bgr.shape[-1] != 3:
        raise ValueError(
            f"{path}: a KITTI flow PNG is (H, W, 3) uint16, got {bgr.shape} {bgr.dtype}"
        )
    valid = bgr[..., 0] > 0
    flow = (bgr[..., [2, 1]].astype(np.float32) - np.float32(_KITTI_OFFSET)) / np.float32(
        _KITTI_SCALE
    )
    flow[~valid] = 0.0
    return flow, valid


# --------------------------------------------------------------------------------------------
# numpy .npy / .npz
# --------------------------------------------------------------------------------------------


def write_flow_npy(path: PathLike, flow: npt.ArrayLike, dtype: npt.DTypeLike = np.float32) -> None:
    """Write one flow field ``(H, W, 2)`` or a stack ``(T, H, W, 2)`` as ``.npy`` (atomically).

    Args:
        path: destination, written exactly (numpy's habit of appending ``.npy`` is avoided).
        flow: flow in pixels.
        dtype: on-disk dtype, float32 (default) or float16. float16 keeps about 3 significant
            digits (0.25 px steps at 500 px) and overflows beyond 65504 (logged as a warning).

    Raises:
        ValueError: bad shape or a dtype other than float16/float32.
    """
    array = _check_field_or_stack(flow, "flow")
    out = _cast_for_disk(array, _check_numpy_dtype(dtype), path)
    with atomic_open(path, durable=False) as handle:
        np.save(handle, out, allow_pickle=False)


def read_flow_npy(path: PathLike) -> np.ndarray:
    """Read a flow ``.npy`` written by :func:`write_flow_npy`.

    Returns:
        ``(H, W, 2)`` or ``(T, H, W, 2)`` float32 flow in pixels.

    Raises:
        ValueError: the stored array is not a flow field or stack.
    """
    array = _check_field_or_stack(np.load(Path(path), allow_pickle=False), f"{path}")
    return np.ascontiguousarray(array, dtype=np.float32)


def write_flow_npz(
    path: PathLike,
    flows: npt.ArrayLike,
    dtype: npt.DTypeLike = np.float32,
    **extra: npt.ArrayLike,
) -> None:
    """Write a flow stack as a zip-deflated ``.npz`` (atomically).

    Args:
        path: destination, written exactly (numpy's habit of appending ``.npz`` is avoided).
        flows: ``(T, H, W, 2)`` flow in pixels, stored under the key ``"flow"``.
        dtype: on-disk dtype of the stack, float32 (default) or float16 (see
            :func:`write_flow_npy` for the float16 precision).
        **extra: further arrays stored under their keyword names (for example frame
            ``indices`` or ``pts``); stored as given, without pickling.

    Raises:
        ValueError: bad shape, unsupported dtype, an extra named ``flow``, or an extra that
            would need pickling (object arrays).
    """
    stack = _check_stack(flows)
    if _NPZ_FLOW_KEY in extra:
        raise ValueError(f"extra arrays may not use the reserved key {_NPZ_FLOW_KEY!r}")
    extras = {key: np.asarray(value) for key, value in extra.items()}
    for key, value in extras.items():
        if value.dtype.hasobject:
            raise ValueError(f"extra array {key!r} has dtype {value.dtype}, which needs pickling")
    out = _cast_for_disk(stack, _check_numpy_dtype(dtype), path)
    with atomic_open(path, durable=False) as handle:
        np.savez_compressed(handle, **{_NPZ_FLOW_KEY: out}, **extras)


def read_flow_npz(path: PathLike) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a flow ``.npz`` written by :func:`write_flow_npz`.

    Returns:
        ``(flows, extra)``: the ``(T, H, W, 2)`` float32 stack in pixels and a dict of the other
        arrays in the archive, as stored.

    Raises:
        ValueError: no ``"flow"`` key, or it is not a ``(T, H, W, 2)`` stack.
    """
    with np.load(Path(path), allow_pickle=False) as archive:
        if _NPZ_FLOW_KEY not in archive.files:
            raise ValueError(f"{path}: no {_NPZ_FLOW_KEY!r} array (keys: {archive.files})")
        stack = _check_stack(archive[_NPZ_FLOW_KEY], f"{path}[{_NPZ_FLOW_KEY!r}]")
        extra = {key: archive[key] for key in archive.files if key != _NPZ_FLOW_KEY}
    return np.ascontiguousarray(stack, dtype=np.float32), extra
