"""``inspect``: what RAFT / RAFT-small / GMA compute at each step for one pair, as arrays.

:func:`inspect_pair` runs the network once with a :class:`models.trace.RefineTrace` and gathers,
in input-image coordinates where that makes sense:

- the upsampled flow after every refinement iteration, cropped to the input size (the list the
  official ``RAFT.forward`` returns in training mode);
- for each requested pixel ``(x, y)``: its 1/8-grid cell
  ``((x + pad_left) // 8, (y + pad_top) // 8)``, that cell's row of the correlation pyramid at
  every level, the lookup centre of every iteration, the correlation values read in each
  window, the convex-upsampling weights at the pixel and (GMA) the cell's attention row;
- the feature, context and hidden-state maps.

:func:`save_arrays` writes them as ``.npz``; the pictures and the HTML page are made by
:mod:`pipeline.inspect_report`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import RAFT, RefineTrace
from models.atomic_files import atomic_open
from stages.decode import open_video
from stages.flow_io import read_flo, read_flow_npy, read_kitti_png

#: Most pixels one inspection traces (each adds four pictures and a pyramid row per level).
MAX_PIXELS = 16


@dataclass(frozen=True)
class Inspection:
    """Everything :func:`inspect_pair` measured. ``N`` iterations, ``P`` pixels, ``L`` levels.

    Attributes:
        arch, iters, radius, pad_mode: the network, its iterations, lookup radius, padding mode.
        pads: ``(left, right, top, bottom)`` padding of the input (``models.padding.Padder``).
        image1, image2: ``(H, W, 3)`` uint8 RGB inputs.
        pixels: ``(P, 2)`` int64 requested pixels ``(x, y)`` in input coordinates.
        cells: ``(P, 2)`` int64 their 1/8-grid cells ``(x, y)`` on the padded input.
        flows: ``(N, H, W, 2)`` float32 upsampled flow after each iteration, pixels.
        delta: ``(N,)`` mean over the input's pixels of ``|f_k - f_{k-1}|`` (Euclidean, pixels),
            ``f_{-1} = 0``: how much iteration ``k`` moved the output flow.
        update: ``(N,)`` mean over the 1/8 grid of ``8 |delta f_k|``: the GRU's update in
            input pixels.
        epe: ``(N,)`` end-point error of each iteration against ``gt`` (valid pixels), or None.
        gt: ``(H, W, 2)`` ground truth or None; ``gt_valid``: ``(H, W)`` bool or None.
        correlation: ``L`` arrays ``(P, h_k, w_k)``: each pixel's row of the pyramid.
        centres: ``(P, N, 2)`` lookup centre ``(x, y)`` on the level-0 1/8 grid at the start of
            each iteration; at level ``k`` the window is ``centre / 2^k + d``, ``|d| <= r``.
        lookups: ``(P, N, L, 2r+1, 2r+1)`` the correlation values the network read in each
            window, indexed ``[.., level, dy + r, dx + r]``.
        targets: ``(P, 2)`` the correspondence ``(x + u, y + v)`` in input pixels, from
            ``gt`` when given, else from the final estimate (``target_source`` says which).
        target_centres: ``(P, 2)`` the lookup centre that correspondence asks for on the level-0
            grid: ``cell + f(x, y) / 8``.
        features: name -> ``(C, h, w)`` float32 maps on the 1/8 grid: ``features1``,
            ``features2`` (feature encoder), ``context`` (context features), ``hidden_initial``
            and ``hidden_final`` (GRU state).
        convex: ``(P, 3, 3)`` convex-upsampling weights of the pixel over its cell's 3x3
            neighbourhood (``[dy + 1, dx + 1]``), or None (bilinear upsampling).
        convex_cell: ``(P, 8, 8, 3, 3)`` the weights of all 64 pixels of the cell, or None.
        attention: ``(P, heads, h, w)`` GMA attention of the pixel's cell, or None.
    """

    arch: str
    iters: int
    radius: int
    pad_mode: str
    pads: tuple[int, int, int, int]
    image1: np.ndarray
    image2: np.ndarray
    pixels: np.ndarray
    cells: np.ndarray
    flows: np.ndarray
    delta: np.ndarray
    update: np.ndarray
    epe: np.ndarray | None
    gt: np.ndarray | None
    gt_valid: np.ndarray | None
    correlation: list[np.ndarray]
    centres: np.ndarray
    lookups: np.ndarray
    targets: np.ndarray
    target_source: str
    target_centres: np.ndarray
    features: dict[str, np.ndarray]
    convex: np.ndarray | None
    convex_cell: np.ndarray | None
    attention: np.ndarray | None

    @property
    def levels(self) -> int:
        return len(self.correlation)


def check_pixels(pixels: Sequence[tuple[int, int]], width: int, height: int) -> None:
    """Raises ``ValueError`` naming the offending value when a pixel is outside the image,
    there are more than :data:`MAX_PIXELS`, or none."""
    if not len(pixels):
        raise ValueError("no pixel given: name at least one (x, y), e.g. default_pixel(w, h)")
    if len(pixels) > MAX_PIXELS:
        listed = " ".join(f"{x},{y}" for x, y in pixels)
        raise ValueError(f"{len(pixels)} pixels given ({listed}); at most {MAX_PIXELS}")
    for x, y in pixels:
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(
                f"pixel {x},{y} lies outside the {width}x{height} image "
                f"(x in 0..{width - 1}, y in 0..{height - 1})"
            )


def pixel_cells(pixels: np.ndarray, pads: tuple[int, int, int, int], factor: int = 8) -> np.ndarray:
    """``(P, 2)`` input pixels ``(x, y)`` -> their cells on the 1/8 grid of the padded input."""
    left, _, top, _ = pads
    return np.stack([(pixels[:, 0] + left) // factor, (pixels[:, 1] + top) // factor], axis=1)


def read_ground_truth(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(flow (H, W, 2) float32, valid (H, W) bool)`` from ``.flo``, ``.npy`` or KITTI ``.png``.

    Middlebury's unknown-flow marker (components above 1e9) and non-finite values are invalid.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        flow, valid = read_kitti_png(path)
    elif suffix == ".flo":
        flow = read_flo(path)
        valid = np.ones(flow.shape[:2], bool)
    elif suffix == ".npy":
        flow = read_flow_npy(path)
        valid = np.ones(flow.shape[:2], bool)
    else:
        raise ValueError(f"ground truth {path}: unsupported extension {suffix!r} (.flo .npy .png)")
    if flow.ndim != 3:
        raise ValueError(
            f"ground truth {path}: one (H, W, 2) flow field expected, got {flow.shape}"
        )
    valid = valid & np.isfinite(flow).all(-1) & (np.abs(flow) < 1e9).all(-1)
    return flow.astype(np.float32), valid


def read_video_pair(path: str | Path, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoded frames ``frame`` and ``frame + 1`` of a video (or frame folder), uint8 RGB.

    Raises:
        stages.decode.DecodeError: the file cannot be decoded.
        ValueError: the video has fewer than ``frame + 2`` frames.
    """
    first = None
    count = 0
    with open_video(path) as reader:
        for decoded in reader.frames():
            count = decoded.index + 1
            if decoded.index == frame:
                first = decoded.rgb
            elif decoded.index == frame + 1 and first is not None:
                return first, decoded.rgb
    raise ValueError(
        f"frame {frame} needs frames {frame} and {frame + 1}, but {path} has {count} decoded "
        f"frame(s)" + (f" (valid: 0..{count - 2})" if count >= 2 else " (no pair to inspect)")
    )


def _pca_ready(tensor: torch.Tensor) -> np.ndarray:
    return tensor[0].detach().float().cpu().numpy()


def _convex_weights(mask: torch.Tensor, cells: np.ndarray) -> np.ndarray:
    """``(1, 576, h, w)`` mask logits -> ``(P, 8, 8, 3, 3)`` weights, ``[sy, sx, dy+1, dx+1]``."""
    h, w = mask.shape[-2:]
    weights = torch.softmax(mask[0].cpu().view(9, 8, 8, h, w), dim=0)  # as convex_upsample
    ys, xs = torch.as_tensor(cells[:, 1]), torch.as_tensor(cells[:, 0])
    at_cells = weights[:, :, :, ys, xs]  # (9, 8, 8, P)
    return at_cells.permute(3, 1, 2, 0).reshape(-1, 8, 8, 3, 3).cpu().numpy()


@torch.inference_mode()
def inspect_pair(
    model: RAFT,
    image1: np.ndarray,
    image2: np.ndarray,
    *,
    pixels: Sequence[tuple[int, int]],
    iters: int = 12,
    pad_mode: str = "sintel",
    corr: str = "all-pairs",
    gt: tuple[np.ndarray, np.ndarray] | None = None,
) -> Inspection:
    """Runs ``model`` on one pair and traces every step.

    Args:
        model: a network from :func:`models.create_model` (eval mode).
        image1, image2: ``(H, W, 3)`` uint8 RGB of equal size.
        pixels: up to :data:`MAX_PIXELS` pixels ``(x, y)`` in input coordinates.
        iters: refinement iterations.
        pad_mode: ``sintel`` or ``kitti`` (:class:`models.padding.Padder`).
        corr: ``all-pairs`` or ``on-demand`` correlation (the traced rows are the same).
        gt: optional ground truth ``(flow (H, W, 2), valid (H, W))``.

    Raises:
        ValueError: mismatched sizes, pixels outside the image, too many pixels, an input
            smaller than the network accepts.
    """
    if image1.shape != image2.shape or image1.ndim != 3 or image1.shape[2] != 3:
        raise ValueError(f"images must be equal (H, W, 3), got {image1.shape} and {image2.shape}")
    height, width = image1.shape[:2]
    check_pixels(pixels, width, height)
    if gt is not None and gt[0].shape != (height, width, 2):
        raise ValueError(f"ground truth is {gt[0].shape}, the images are ({height}, {width}, 2)")
    padder = model.padder(height, width, pad_mode)
    device = next(model.parameters()).device
    pads = padder.pads
    pixel_array = np.asarray(pixels, dtype=np.int64).reshape(-1, 2)
    cells = pixel_cells(pixel_array, pads)

    def as_input(rgb: np.ndarray) -> torch.Tensor:
        tensor = torch.as_tensor(np.array(rgb, copy=True)).permute(2, 0, 1)[None]  # read-only ok
        return padder.pad(tensor.to(device=device, dtype=torch.float32))

    first, second = as_input(image1), as_input(image2)
    fmap1, fmap2 = model.encode_features(torch.cat([first, second])).chunk(2)
    context = model.encode_context(first)
    trace = RefineTrace(cells=[tuple(c) for c in cells.tolist()])
    model.refine(fmap1, fmap2, context, iters=iters, corr=corr, trace=trace)

    flows = padder.unpad(torch.cat(trace.flows_up)).permute(0, 2, 3, 1).float().cpu().numpy()
    previous = np.concatenate([np.zeros_like(flows[:1]), flows[:-1]])
    delta = np.linalg.norm(flows - previous, axis=-1).mean(axis=(1, 2))
    update = torch.stack([8 * d[0].norm(dim=0).mean() for d in trace.deltas]).cpu().numpy()
    rows = np.arange(len(cells))
    final = flows[-1]
    if gt is not None:
        gt_flow, gt_valid = gt
        valid = gt_valid.astype(bool)
        errors = np.linalg.norm(flows - gt_flow[None], axis=-1)[:, valid]
        epe = errors.mean(axis=1) if errors.size else np.full(len(flows), np.nan)
        source_flow, source = gt_flow, "ground truth"
    else:
        gt_flow = valid = epe = None
        source_flow, source = final, "final estimate"
    motion = source_flow[pixel_array[:, 1], pixel_array[:, 0]].astype(np.float64)  # (P, 2)
    if valid is not None:  # no true correspondence where the ground truth is invalid
        motion[~valid[pixel_array[:, 1], pixel_array[:, 0]]] = np.nan
    targets = pixel_array + motion
    target_centres = cells + motion / 8.0

    ys, xs = torch.as_tensor(cells[:, 1]), torch.as_tensor(cells[:, 0])
    centres = torch.stack([c[0].cpu()[:, ys, xs].T for c in trace.centres], dim=1)  # (P, N, 2)
    lookups = torch.stack([lk[0] for lk in trace.lookups], dim=1)  # (P, N, L, k_dx, k_dy)
    features = {
        "features1": _pca_ready(fmap1),
        "features2": _pca_ready(fmap2),
        "context": _pca_ready(context.inp),
        "hidden_initial": _pca_ready(context.net),
        "hidden_final": _pca_ready(trace.hidden[-1]),
    }
    convex_cell = convex = None
    if trace.mask is not None:
        convex_cell = _convex_weights(trace.mask, cells)
        sub_y = (pixel_array[:, 1] + pads[2]) % 8
        sub_x = (pixel_array[:, 0] + pads[0]) % 8
        convex = convex_cell[rows, sub_y, sub_x]
    attention = None if trace.attention is None else trace.attention[0].transpose(0, 1)
    return Inspection(
        arch=model.arch,
        iters=iters,
        radius=model.corr_radius,
        pad_mode=pad_mode,
        pads=pads,
        image1=image1,
        image2=image2,
        pixels=pixel_array,
        cells=cells,
        flows=flows.astype(np.float32),
        delta=delta.astype(np.float32),
        update=update.astype(np.float32),
        epe=None if epe is None else epe.astype(np.float32),
        gt=gt_flow,
        gt_valid=valid,
        correlation=[level[0].cpu().numpy() for level in trace.correlation],
        centres=centres.cpu().numpy(),
        lookups=lookups.transpose(-1, -2).cpu().numpy(),  # -> [.., dy + r, dx + r]
        targets=targets.astype(np.float32),
        target_source=source,
        target_centres=target_centres.astype(np.float32),
        features=features,
        convex=convex,
        convex_cell=convex_cell,
        attention=None if attention is None else attention.cpu().numpy(),
    )


#: Files an earlier ``inspect`` into the same folder may have left (removed before writing).
_OUTPUT_NAME = re.compile(
    r"(report\.html|overview\.png|iterations\.png|features\.png|"
    r"pixel\d+_(correlation|upsampling|attention)\.png|"
    r"(iterations|correlation|upsampling|attention)\.npz)"
)


def remove_earlier_outputs(output: str | Path) -> None:
    """Deletes the files a previous inspection wrote into ``output`` (only inspect's names), so
    that a GMA run's ``attention.npz`` or a 3-pixel run's ``pixel2_*.png`` do not sit beside a
    later run's results."""
    out = Path(output)
    if out.is_dir():
        for path in out.iterdir():
            if path.is_file() and _OUTPUT_NAME.fullmatch(path.name):
                path.unlink()


def save_arrays(inspection: Inspection, output: str | Path) -> list[Path]:
    """Writes ``iterations.npz``, ``correlation.npz`` and, where the model has them,
    ``upsampling.npz`` and ``attention.npz`` into ``output``; returns their paths."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    remove_earlier_outputs(out)
    ins = inspection
    written = [out / "iterations.npz", out / "correlation.npz"]
    extra = {} if ins.epe is None else {"epe": ins.epe}
    _savez(written[0], flow=ins.flows, delta=ins.delta, update=ins.update, **extra)
    levels = {f"level{k}": level.astype(np.float32) for k, level in enumerate(ins.correlation)}
    _savez(
        written[1],
        pixels=ins.pixels.astype(np.int32),
        cells=ins.cells.astype(np.int32),
        pads=np.asarray(ins.pads, np.int32),
        radius=np.int32(ins.radius),
        centres=ins.centres.astype(np.float32),
        lookups=ins.lookups.astype(np.float32),
        targets=ins.targets,
        target_centres=ins.target_centres,
        **levels,
    )
    if ins.convex is not None:
        written.append(out / "upsampling.npz")
        _savez(written[-1], weights=ins.convex, cell_weights=ins.convex_cell)
    if ins.attention is not None:
        written.append(out / "attention.npz")
        _savez(written[-1], attention=ins.attention.astype(np.float32))
    return written


def _savez(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` of ``arrays`` to ``path``, atomically (not fsynced: a debugging output)."""
    with atomic_open(path, durable=False) as handle:
        np.savez(handle, **arrays)


def default_pixel(width: int, height: int) -> tuple[int, int]:
    """The pixel traced when none is requested: the image centre."""
    return width // 2, height // 2
