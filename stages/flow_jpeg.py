"""Action-recognition flow JPEGs: quantisation, file layouts and the JPEG pairs themselves.

One 8-bit grayscale JPEG per flow component, ``q = round(255 * (v + B) / (2 B))`` clipped to
``0..255`` (:func:`quantize_flow`, :func:`dequantize_flow`); file names, index base, bound and
rounding follow a :class:`FlowJpegLayout` (presets for denseflow and mmaction2 in
:data:`FLOW_JPEG_PRESETS`). Flow is numpy ``(H, W, 2)`` in pixels, channel 0 = x (right),
channel 1 = y (down). Files are written atomically (:func:`stages.image_io.write_image`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt

from models.atomic_files import PathLike

from .flow_io import check_field
from .image_io import write_image

__all__ = [
    "FLOW_JPEG_PRESETS",
    "FlowJpegLayout",
    "Rounding",
    "dequantize_flow",
    "quantize_flow",
    "read_flow_jpegs",
    "write_flow_jpegs",
]

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
    ``B = 20``). NaN is treated as zero motion (128; 127 with ``"truncate"`` / ``"floor"``),
    where mmaction2 and denseflow write 0; ``+-inf`` clip to 255 / 0.

    Args:
        component: flow component in pixels, any shape (typically ``(H, W)``).
        bound: ``B``, the magnitude in pixels mapped to 0 / 255.
        rounding: ``"round"``, ``"half_even"``, ``"floor"`` or ``"truncate"``.

    Returns:
        uint8 array of the input's shape.
    """
    limit = _check_bound(bound)
    _check_rounding(rounding)
    # One float64 buffer, every step in place (the same operations in the same order as
    # clip(255 (v + B) / (2 B)) written out): 4x faster than a new array per step, which made
    # this the bulk of writing flow JPEGs.
    values = np.array(component, dtype=np.float64)
    np.nan_to_num(values, copy=False, nan=0.0)
    np.clip(values, -limit, limit, out=values)
    values += limit
    values *= 255.0
    values /= 2.0 * limit
    if rounding == "round":
        values += 0.5
        np.floor(values, out=values)
    elif rounding == "half_even":
        np.rint(values, out=values)
    elif rounding == "floor":
        np.floor(values, out=values)
    else:
        np.trunc(values, out=values)
    return np.clip(values, 0, 255, out=values).astype(np.uint8)


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

    RGB frames (``write_rgb``) are every decoded frame ``t`` as ``image_template.format(t +
    index_base)``, or with ``rgb_ends_pairs`` (TSN's ``dense_flow``) the frame that ends each
    pair, stored under its flow's number (frame ``t + k`` as ``image_template.format(t +
    index_base)``; one RGB frame per flow, the first ``k`` frames not written).
    ``gap_infix`` (denseflow: ``"_p{gap}"``) is inserted before the ``_`` that precedes the
    number of the flow names when the pair gap ``k`` is not 1 (:meth:`for_gap`).

    The defaults are mmaction2's layout (the ``mmaction2`` preset, also the CLI's default);
    the other tools' layouts are in :data:`FLOW_JPEG_PRESETS`.
    """

    x_template: str = "x_{:05d}.jpg"
    y_template: str = "y_{:05d}.jpg"
    image_template: str = "img_{:05d}.jpg"
    index_base: int = 1
    bound: float = 20.0
    rounding: Rounding = "truncate"
    jpeg_quality: int = 95
    rgb_ends_pairs: bool = False
    gap_infix: str = ""

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
        if self.gap_infix and not all("_{" in t for t in (self.x_template, self.y_template)):
            raise ValueError("gap_infix needs flow templates with '_{' before the number")

    def for_gap(self, gap: int) -> FlowJpegLayout:
        """The layout for pairs ``(t, t + gap)``: flow names with ``gap_infix`` for gap != 1."""
        if gap == 1 or not self.gap_infix:
            return self
        infix = self.gap_infix.format(gap=gap)

        def insert(template: str) -> str:
            cut = template.rindex("_{")
            return template[:cut] + infix + template[cut:]

        return replace(self, x_template=insert(self.x_template), y_template=insert(self.y_template))

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


# Each preset as its difference from mmaction2's (the defaults); denseflow grew from TSN's.
_TSN_LAYOUT = FlowJpegLayout(
    x_template="flow_x_{:05d}.jpg",
    y_template="flow_y_{:05d}.jpg",
    rounding="half_even",
    rgb_ends_pairs=True,
)
FLOW_JPEG_PRESETS: Mapping[str, FlowJpegLayout] = MappingProxyType(
    {
        "denseflow": replace(_TSN_LAYOUT, index_base=0, rgb_ends_pairs=False, gap_infix="_p{gap}"),
        "mmaction2": FlowJpegLayout(),
        "tsn": _TSN_LAYOUT,
    }
)
"""Flow-JPEG layouts of widely used extraction tools, read from their source code.

=========  ==================================  ==================  ====  ==  =========  ===  =====
preset     flow x / y file names               RGB frame names     base  B   rounding   Q    RGB
=========  ==================================  ==================  ====  ==  =========  ===  =====
denseflow  ``flow_x_{:05d}.jpg``, ``flow_y_``  ``img_{:05d}.jpg``  0     20  half_even  95   all
mmaction2  ``x_{:05d}.jpg``, ``y_{:05d}.jpg``  ``img_{:05d}.jpg``  1     20  truncate   95   all
tsn        ``flow_x_{:05d}.jpg``, ``flow_y_``  ``img_{:05d}.jpg``  1     20  half_even  95   ends
=========  ==================================  ==================  ====  ==  =========  ===  =====

(base = number of the first file; B = bound in pixels; Q = JPEG quality; RGB: every frame, or
the frame ending each pair under its flow's number, :attr:`FlowJpegLayout.rgb_ends_pairs`.
denseflow names flows of gap ``k`` != 1 ``flow_x_p{k}_{:05d}.jpg``.)

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
    Its ``calcDenseFlow`` / ``calcDenseFlowGPU`` push, beside each flow, the frame that ends
    the pair (``capture_image``, read after the first frame), so ``img_00001.jpg`` is decoded
    frame 1 and a video of N frames has N - 1 RGB files, as many as flows.

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
        layout: naming and encoding; default :class:`FlowJpegLayout` () (mmaction2's).

    Returns:
        ``(x_path, y_path)`` of the written files.

    Raises:
        ValueError: ``flow`` is not ``(H, W, 2)`` or ``index`` is negative.
    """
    layout = layout or FlowJpegLayout()
    field = check_field(flow)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / layout.x_name(index), folder / layout.y_name(index))
    for channel, path in enumerate(paths):
        levels = quantize_flow(field[..., channel], layout.bound, layout.rounding)
        write_image(path, levels, jpeg_quality=layout.jpeg_quality)
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
