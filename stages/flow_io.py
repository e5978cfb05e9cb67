"""Optical-flow file formats: Middlebury ``.flo``, KITTI 16-bit PNG, numpy and flow JPEGs.

Every function here works on numpy flow laid out as ``(H, W, 2)`` (or ``(T, H, W, 2)`` for
stacks): channel 0 is the x (rightward) displacement, channel 1 the y (downward) displacement,
in pixels of the frame the flow was computed at, from frame ``t`` to frame ``t + k``. Readers
always return C-contiguous native-endian float32.

Every writer is atomic: bytes go to a hidden temporary file in the destination directory
(``.<name>.<random>.tmp``), are flushed and fsynced, and the file is then moved over the
destination with :func:`os.replace`. A crash never leaves a truncated file under the real name.
The temporary file is created like :func:`open` creates files (mode ``0o666`` less the umask),
so the finished file has the permissions the user's umask asks for. A write error that names no
file (``ENOSPC`` on a full disk, ``EIO``) is raised again naming the destination.

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
Flow JPEGs (two-stream action recognition)
    one 8-bit grayscale JPEG per component, ``q = round(255 * (v + B) / (2 B))`` clipped to
    ``0..255``; file names, index base, bound and rounding follow a :class:`FlowJpegLayout`
    (presets for denseflow and mmaction2 in :data:`FLOW_JPEG_PRESETS`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

__all__ = [
    "FLOW_JPEG_PRESETS",
    "FLO_MAGIC",
    "KITTI_MAX_FLOW",
    "KITTI_MIN_FLOW",
    "FlowJpegLayout",
    "Rounding",
    "atomic_path",
    "create_temporary",
    "dequantize_flow",
    "quantize_flow",
    "read_flo",
    "read_flow_jpegs",
    "read_flow_npy",
    "read_flow_npz",
    "read_kitti_png",
    "write_flo",
    "write_flow_jpegs",
    "write_flow_npy",
    "write_flow_npz",
    "write_kitti_png",
]

PathLike = str | os.PathLike[str]

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

Rounding = Literal["round", "half_even", "floor", "truncate"]
"""How a scaled flow value ``x = 255 (v + B) / (2 B)`` becomes an integer grey level.

``"round"``: round half up, ``floor(x + 0.5)`` (127.5 -> 128, 76.5 -> 77).
``"half_even"``: round half to even, ``numpy.rint`` (127.5 -> 128, 76.5 -> 76); this is what
OpenCV's ``cvRound`` does on x86-64 builds, hence what denseflow writes.
``"floor"``: ``floor(x)``.
``"truncate"``: toward zero, what ``ndarray.astype(np.uint8)`` does; after clipping ``x`` is
never negative, so it gives the same grey levels as ``"floor"``. Kept as its own name so a
layout can say which tool it mirrors.
"""
_ROUNDING_MODES: tuple[str, ...] = get_args(Rounding)


# --------------------------------------------------------------------------------------------
# atomic writes and validation
# --------------------------------------------------------------------------------------------


def create_temporary(target: PathLike) -> tuple[int, Path]:
    """Create a hidden ``.<name>.<random>.tmp`` next to ``target``; return its fd and path.

    Unlike :func:`tempfile.mkstemp` (always mode ``0o600``), the file gets ``0o666`` less the
    umask, as :func:`open` would give ``target`` itself: renaming it into place must not narrow
    the permissions of outputs that others (a group, a web server) are meant to read.
    """
    target = Path(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(candidate, flags, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {target}")


@contextlib.contextmanager
def naming_errors(path: PathLike) -> Iterator[None]:
    """Raise an :class:`OSError` that names no file (``ENOSPC`` and ``EIO`` from ``write``,
    errors of libraries writing to an open handle) again with ``path`` as its file name."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        if exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
        raise OSError(f"cannot write {path}: {exc}") from exc


@contextlib.contextmanager
def _atomic_open(path: PathLike) -> Iterator[IO[bytes]]:
    """Open a hidden temporary file next to ``path``; move it over ``path`` on success.

    The temporary file is ``.<name>.<random>.tmp`` in the same directory (same filesystem, so
    :func:`os.replace` is atomic), see :func:`create_temporary`. It is fsynced before the move
    and removed on any error.
    """
    with atomic_path(path) as temporary, temporary.open("wb") as handle:
        yield handle


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path next to ``path``; fsync and move it over ``path`` on success.

    For writers that need a file name (pandas, zip files). The temporary file is
    ``.<name>.<random>.tmp`` in the destination folder (created if missing; same filesystem,
    so :func:`os.replace` is atomic; mode as :func:`open` would give, see
    :func:`create_temporary`); it is removed on any error. Errors that name no file are raised
    naming ``path``.
    """
    target = Path(path)
    with naming_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = create_temporary(target)
        os.close(handle)
        try:
            yield temporary
            with temporary.open("rb+") as written:
                os.fsync(written.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    logger.debug("wrote %s", target)


def write_bytes_atomic(path: PathLike, data: bytes | np.ndarray) -> None:
    """Write an encoded buffer (``bytes`` or a uint8 array from ``cv2.imencode``) atomically."""
    with _atomic_open(path) as handle:
        handle.write(memoryview(data))


def _check_field(flow: npt.ArrayLike, name: str = "flow") -> np.ndarray:
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
    return _check_stack(array, name) if array.ndim == 4 else _check_field(array, name)


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
    field = _check_field(flow)
    height, width = field.shape[:2]
    header = (
        np.array([FLO_MAGIC], dtype="<f4").tobytes()
        + np.array([width, height], dtype="<i4").tobytes()
    )
    payload = np.ascontiguousarray(field, dtype="<f4")
    with _atomic_open(path) as handle:
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
    ``[-512, 511.984375]`` px; a clipped pixel stays valid (the reader sees the clipped value).
    Pixels where either component is NaN or infinite are written invalid, with R = G = 2**15.

    (The KITTI devkit truncates instead of rounding; rounding halves the worst-case error to
    1/128 px and decodes with the same formula.)

    Args:
        path: destination ``.png`` file.
        flow: ``(H, W, 2)`` flow in pixels.
        valid: optional ``(H, W)`` mask, non-zero = valid. Default: every finite pixel.

    Raises:
        ValueError: ``flow`` is not ``(H, W, 2)`` or ``valid`` is not ``(H, W)``.
    """
    field = _check_field(flow).astype(np.float64)
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
    encoded = np.clip(encoded, 0, 65535).astype(np.uint16)
    # OpenCV orders channels B, G, R: B = valid, G = v, R = u.
    bgr = np.dstack([mask.astype(np.uint16), encoded[..., 1], encoded[..., 0]])
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"{path}: OpenCV failed to encode the KITTI PNG")
    write_bytes_atomic(path, buffer)


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
    with _atomic_open(path) as handle:
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
    with _atomic_open(path) as handle:
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


# --------------------------------------------------------------------------------------------
# action-recognition flow JPEGs
# --------------------------------------------------------------------------------------------


def _check_bound(bound: float) -> float:
    value = float(bound)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"bound must be a positive finite number of pixels, got {bound!r}")
    return value


def _check_rounding(rounding: str) -> None:
    if rounding not in _ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {_ROUNDING_MODES}, got {rounding!r}")


def quantize_flow(
    component: npt.ArrayLike, bound: float = 20.0, rounding: Rounding = "round"
) -> np.ndarray:
    """Map one flow component to 8-bit grey levels as in two-stream flow JPEGs.

    ``q = R(255 * (v + B) / (2 B))`` clipped to ``0..255``, where ``R`` is the ``rounding``
    (see :data:`Rounding`; ``"round"`` is round half up, ``floor(x + 0.5)``). Hence ``v = 0``
    gives 128 (127.5 rounds up), ``v >= B`` gives 255 and ``v <= -B`` gives 0. ``v`` is clipped
    to ``[-B, B]`` first and the rest is computed in float64 in denseflow's order, so with
    ``"half_even"`` the levels equal denseflow's, exact ties included (``v = -8`` and ``8`` for
    ``B = 20``). NaN is treated as zero motion (128); ``+-inf`` clip to 255 / 0.

    Args:
        component: flow component in pixels, any shape (typically ``(H, W)``).
        bound: ``B``, the magnitude in pixels mapped to 0 / 255.
        rounding: ``"round"``, ``"half_even"``, ``"floor"`` or ``"truncate"``.

    Returns:
        uint8 array of the input's shape.
    """
    limit = _check_bound(bound)
    _check_rounding(rounding)
    values = np.clip(np.nan_to_num(np.asarray(component, dtype=np.float64), nan=0.0), -limit, limit)
    scaled = 255.0 * (values + limit) / (2.0 * limit)
    if rounding == "round":
        levels = np.floor(scaled + 0.5)
    elif rounding == "half_even":
        levels = np.rint(scaled)
    elif rounding == "floor":
        levels = np.floor(scaled)
    else:
        levels = np.trunc(scaled)
    return np.clip(levels, 0, 255).astype(np.uint8)


def dequantize_flow(quantized: npt.ArrayLike, bound: float = 20.0) -> np.ndarray:
    """Invert :func:`quantize_flow`: ``v = q * 2 B / 255 - B``.

    The result is the centre of the grey level for ``"round"``/``"half_even"`` quantization
    (error at most ``B / 255`` px inside the bound); for ``"floor"``/``"truncate"`` it is biased
    low by up to one step, ``2 B / 255`` px.

    Args:
        quantized: grey levels ``0..255``, any shape and integer or float dtype.
        bound: the ``B`` used when quantizing, in pixels.

    Returns:
        float32 flow component in pixels, same shape.
    """
    limit = _check_bound(bound)
    levels = np.asarray(quantized, dtype=np.float64)
    return (levels * (2.0 * limit / 255.0) - limit).astype(np.float32)


@dataclass(frozen=True)
class FlowJpegLayout:
    """Names and encoding of per-frame flow JPEGs for two-stream action-recognition tools.

    The flow from frame ``t`` to frame ``t + k`` (``t`` the 0-based decoded frame index) is
    stored as ``x_template.format(t + index_base)`` and ``y_template.format(t + index_base)``,
    i.e. under the number of its first frame's ``image_template`` file. Each component is
    quantized with :func:`quantize_flow` using ``bound`` and ``rounding`` and encoded as an
    8-bit grayscale JPEG at ``jpeg_quality`` (0..100).

    The defaults are the project's own layout (the TSN-era ``dense_flow`` naming, 1-based,
    B = 20, round half up). Tool-compatible presets are in :data:`FLOW_JPEG_PRESETS`.
    """

    x_template: str = "flow_x_{:05d}.jpg"
    y_template: str = "flow_y_{:05d}.jpg"
    image_template: str = "img_{:05d}.jpg"
    index_base: int = 1
    bound: float = 20.0
    rounding: Rounding = "round"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        _check_bound(self.bound)
        _check_rounding(self.rounding)
        if not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 0..100, got {self.jpeg_quality}")
        if self.index_base < 0:
            raise ValueError(f"index_base must be >= 0, got {self.index_base}")
        names = [
            template.format(self.index_base)
            for template in (self.x_template, self.y_template, self.image_template)
        ]
        if len(set(names)) != 3:
            raise ValueError(f"x, y and image templates must give distinct names, got {names}")
        if any(Path(name).name != name for name in names):
            raise ValueError(f"templates must give plain file names, not paths: {names}")

    def _number(self, index: int) -> int:
        if index < 0:
            raise ValueError(f"frame index must be >= 0 (0-based), got {index}")
        return int(index) + self.index_base

    def x_name(self, index: int) -> str:
        """File name of the x component of the flow starting at 0-based frame ``index``."""
        return self.x_template.format(self._number(index))

    def y_name(self, index: int) -> str:
        """File name of the y component of the flow starting at 0-based frame ``index``."""
        return self.y_template.format(self._number(index))

    def image_name(self, index: int) -> str:
        """File name of the RGB frame with 0-based frame ``index``."""
        return self.image_template.format(self._number(index))


FLOW_JPEG_PRESETS: Mapping[str, FlowJpegLayout] = MappingProxyType(
    {
        "denseflow": FlowJpegLayout(
            x_template="flow_x_{:05d}.jpg",
            y_template="flow_y_{:05d}.jpg",
            image_template="img_{:05d}.jpg",
            index_base=0,
            bound=20.0,
            rounding="half_even",
            jpeg_quality=95,
        ),
        "mmaction2": FlowJpegLayout(
            x_template="x_{:05d}.jpg",
            y_template="y_{:05d}.jpg",
            image_template="img_{:05d}.jpg",
            index_base=1,
            bound=20.0,
            rounding="truncate",
            jpeg_quality=95,
        ),
        "tsn": FlowJpegLayout(
            x_template="flow_x_{:05d}.jpg",
            y_template="flow_y_{:05d}.jpg",
            image_template="img_{:05d}.jpg",
            index_base=1,
            bound=20.0,
            rounding="half_even",
            jpeg_quality=95,
        ),
    }
)
"""Flow-JPEG layouts of widely used extraction tools, read from their source code.

=========  ==================================  ==================  ====  ==  =========  ===
preset     flow x / y file names               RGB frame names     base  B   rounding   Q
=========  ==================================  ==================  ====  ==  =========  ===
denseflow  ``flow_x_{:05d}.jpg``, ``flow_y_``  ``img_{:05d}.jpg``  0     20  half_even  95
mmaction2  ``x_{:05d}.jpg``, ``y_{:05d}.jpg``  ``img_{:05d}.jpg``  1     20  truncate   95
tsn        ``flow_x_{:05d}.jpg``, ``flow_y_``  ``img_{:05d}.jpg``  1     20  half_even  95
=========  ==================================  ==================  ====  ==  =========  ===

(base = number of the first file; B = bound in pixels; Q = JPEG quality.)

denseflow (open-mmlab/denseflow, the GPU tool mmaction2 drives):
    ``src/common.cpp``: ``convertFlowToImage`` maps ``v`` with the macro
    ``v > H ? 255 : v < L ? 0 : cvRound(255 * (v - L) / (H - L))``, ``L = -bound``,
    ``H = bound``, in double; ``cvRound`` rounds ties to even on x86-64 (SSE2). Files are
    encoded with ``imencode(".jpg", ...)`` (OpenCV's default quality, 95) and named by
    ``writeFlowImages`` as ``<prefix>_%05d.jpg`` with number ``start + i`` (plus ``|step|``
    for negative steps; ``_p%d_``/``_m%d_`` infixes for steps other than 1) and by
    ``writeImages`` as ``img_%05d.jpg`` with ``start + i``. ``src/denseflow_gpu.cpp`` passes
    the prefixes ``flow_x``, ``flow_y``, ``img`` and starts every video at 0, so numbering is
    0-based (confirmed in mmaction2 issues #79 and #2207). The CLI default bound is 32
    (``-b``, README); mmaction2's ``tools/data/build_rawframes.py`` always passes ``-b=20``.
mmaction2 (open-mmlab/mmaction2, its own writer and loaders):
    ``tools/misc/flow_extraction.py``: ``flow_to_img`` clips to ``[-bound, bound]``, adds
    ``bound``, scales by ``255 / (2 bound)`` and casts with ``astype(np.uint8)`` (truncation),
    default ``bound=20``; ``flow_tmpl='{}_{:05d}.jpg'`` formatted with ``'x'``/``'y'``,
    ``rgb_tmpl='img_{:05d}.jpg'``, ``--start-idx`` default 1; written with ``cv2.imwrite``
    (quality 95). mmaction2 does this arithmetic in float32, so a value within float32
    rounding of an integer level can land one level off from our float64 result. The loaders
    agree: ``RawframeDataset`` defaults to ``filename_tmpl='img_{:05}.jpg'`` and
    ``start_index=1``, ``RawFrameDecode`` formats flow
    names as ``filename_tmpl.format('x', idx)`` / ``('y', idx)``, and the Kinetics-400 TSN flow
    configs (``configs/recognition/tsn/tsn_r50_320p_1x1x3_110e_kinetics400_flow.py``) set
    ``filename_tmpl='{}_{:05d}.jpg'`` with the default ``start_index``; the RGB path of
    ``build_rawframes.py --use-opencv`` writes ``img_{i + 1:05d}.jpg``. Frames extracted for
    mmaction2 *with denseflow* follow the ``denseflow`` preset instead and need
    ``filename_tmpl='flow_{}_{:05d}.jpg'``, ``start_index=0`` in the config (mmaction2 FAQ,
    issue #2207).
tsn (yjxiong/dense_flow, the TSN-era tool denseflow grew from):
    the early ``src/common.cpp`` kept in open-mmlab/denseflow's history uses the same
    ``cvRound`` mapping and ``writeImages`` numbers files ``"_%05d.jpg", i + 1`` (1-based); its
    driver ``build_of.py`` passes the prefixes ``flow_x``, ``flow_y``, ``img`` and ``-b 20``.
    The project default layout follows it except for rounding half up.

Tie-breaking only matters where ``255 (v + B) / (2 B)`` is exactly ``k + 0.5``; for ``B = 20``
that is ``v`` = -16, -8, 0, 8, 16 px, and ``"round"`` and ``"half_even"`` differ at ``v = -8``
(77 vs 76) and ``v = 8`` (179 vs 178).
"""


def write_flow_jpegs(
    directory: PathLike,
    flow: npt.ArrayLike,
    index: int,
    layout: FlowJpegLayout | None = None,
) -> tuple[Path, Path]:
    """Write one flow field as an x and a y grayscale JPEG (each atomically).

    Args:
        directory: output folder, created if missing.
        flow: ``(H, W, 2)`` flow in pixels from frame ``index`` to frame ``index + k``.
        index: 0-based index of the flow's first frame; the file number is
            ``index + layout.index_base``.
        layout: naming and encoding; default :class:`FlowJpegLayout` ().

    Returns:
        ``(x_path, y_path)`` of the written files.

    Raises:
        ValueError: ``flow`` is not ``(H, W, 2)`` or ``index`` is negative.
    """
    layout = layout or FlowJpegLayout()
    field = _check_field(flow)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / layout.x_name(index), folder / layout.y_name(index))
    params = [cv2.IMWRITE_JPEG_QUALITY, int(layout.jpeg_quality)]
    for channel, path in enumerate(paths):
        levels = quantize_flow(field[..., channel], layout.bound, layout.rounding)
        ok, buffer = cv2.imencode(".jpg", levels, params)
        if not ok:
            raise OSError(f"{path}: OpenCV failed to encode the flow JPEG")
        write_bytes_atomic(path, buffer)
    return paths


def read_flow_jpegs(
    directory: PathLike, index: int, layout: FlowJpegLayout | None = None
) -> np.ndarray:
    """Read back the x/y JPEG pair written by :func:`write_flow_jpegs` and dequantize it.

    Returns:
        ``(H, W, 2)`` float32 flow in pixels, within the bound and subject to quantization and
        JPEG error.

    Raises:
        ValueError: a file cannot be decoded or the two components differ in size.
    """
    layout = layout or FlowJpegLayout()
    folder = Path(directory)
    components = []
    for name in (layout.x_name(index), layout.y_name(index)):
        path = folder / name
        levels = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        if levels is None:
            raise ValueError(f"{path}: OpenCV could not decode the file as an image")
        components.append(dequantize_flow(levels, layout.bound))
    if components[0].shape != components[1].shape:
        raise ValueError(
            f"x and y flow JPEGs differ in size: {components[0].shape} vs {components[1].shape}"
        )
    return np.stack(components, axis=-1)


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
    write_bytes_atomic(path, buffer)
