"""Flow accuracy against ground truth: the library behind the ``evaluate`` command.

:func:`evaluate_dataset` runs an estimator (a callable ``(image1, image2) -> (H, W, 2)`` flow,
see :func:`build_estimator`) over the pairs of a data set reader
(:mod:`stages.training.readers`) or any iterable of pairs, and returns an
:class:`EvaluationResult`: one row per pair, one per sequence, and a summary.

Metrics (``e`` = end-point error ``|flow - gt|`` of a valid pixel, in pixels):

- ``epe``: mean ``e``; ``outlier_1px`` / ``3px`` / ``5px``: fraction of valid pixels not
  within 1 / 3 / 5 px (``e >= N``: one minus RAFT's 1px / 3px / 5px accuracy, ``e < N``);
- ``fl``: KITTI's outlier rate, fraction of valid pixels with ``e > 3`` px and
  ``e > 0.05 |gt|`` (``Fl-all`` over a whole set);
- ``epe_occ`` / ``epe_noc``: mean ``e`` over the occluded / non-occluded valid pixels, where
  the data set has occlusion masks;
- ``nonfinite_pixels``: valid pixels where the estimate is NaN or infinite. Such a pixel is an
  outlier for every rate and makes every mean it enters NaN (a pair's, and the set's): a
  broken estimate never scores better than a wrong one.

Over a whole set (or sequence) two means of the EPE are reported, because the benchmarks
differ: ``epe_pixel_mean`` averages every valid pixel of every pair (MPI-Sintel,
FlyingChairs, FlyingThings3D), ``epe_pair_mean`` averages the per-pair means (KITTI). Rates
and ``epe_occ`` / ``epe_noc`` are always over all pixels they concern.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.flow_io import atomic_path

from .estimators import Estimator
from .json_files import write_json
from .progress import ShowProgress, progress_bar

logger = logging.getLogger(__name__)

#: Outlier thresholds in pixels (``outlier_1px`` ...).
OUTLIER_THRESHOLDS: tuple[int, ...] = (1, 3, 5)
#: KITTI's Fl: an outlier is wrong by more than 3 px and by more than 5 % of the true motion.
FL_PIXELS, FL_FRACTION = 3.0, 0.05
#: Data sets whose frames are padded KITTI-style by default (``--pad-mode auto``).
KITTI_PADDED = ("kitti", "hd1k")

PAIR_COLUMNS: tuple[str, ...] = (
    "index",
    "sequence",
    "frame",
    "name",
    "height",
    "width",
    "valid_pixels",
    "nonfinite_pixels",
    "epe",
    *(f"outlier_{t}px" for t in OUTLIER_THRESHOLDS),
    "fl",
    "has_occlusion",
    "occluded_pixels",
    "epe_occ",
    "epe_noc",
    "seconds",
)


#: The files of an evaluation folder, ``summary.json`` (written last) included.
OUTPUT_NAMES: tuple[str, ...] = ("pairs.csv", "pairs.parquet", "sequences.csv", "summary.json")


def resolve_pad_mode(pad_mode: str, dataset: str) -> str:
    """``auto``: ``kitti`` for KITTI and HD1K frames, ``sintel`` otherwise."""
    if pad_mode != "auto":
        return pad_mode
    return "kitti" if dataset in KITTI_PADDED else "sintel"


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def pair_metrics(
    flow: np.ndarray,
    flow_gt: np.ndarray,
    valid: np.ndarray | None = None,
    occluded: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of one pair (see the module docstring), computed in float64.

    Args:
        flow, flow_gt: ``(H, W, 2)`` estimate and ground truth in pixels.
        valid: ``(H, W)``, ground truth exists where ``>= 0.5`` (default: everywhere).
        occluded: ``(H, W)`` bool occlusion mask, or ``None`` where the data set has none.

    Returns:
        ``valid_pixels``, ``epe``, ``outlier_{1,3,5}px``, ``fl``, ``has_occlusion``,
        ``occluded_pixels`` (valid ones), ``epe_occ``, ``epe_noc``; means over no pixels are NaN.
    """
    flow = np.asarray(flow, dtype=np.float64)
    flow_gt = np.asarray(flow_gt, dtype=np.float64)
    if flow.shape != flow_gt.shape or flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(
            f"flow and ground truth must both be (H, W, 2), got {flow.shape} and {flow_gt.shape}"
        )
    size = flow.shape[:2]
    mask = np.ones(size, bool) if valid is None else np.asarray(valid) >= 0.5
    if mask.shape != size:
        raise ValueError(f"valid must be (H, W) = {size}, got {mask.shape}")
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.sqrt(((flow - flow_gt) ** 2).sum(axis=-1))
    error[~np.isfinite(error)] = math.nan  # NaN or infinite estimates: no error size
    magnitude = np.sqrt((flow_gt**2).sum(axis=-1))
    e = error[mask]

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if values.size else math.nan

    out: dict[str, Any] = {
        "valid_pixels": int(e.size),
        "nonfinite_pixels": int(np.isnan(e).sum()),
        "epe": mean(e),
    }
    # written as "not within" (RAFT's accuracy is e < N): a NaN error is an outlier
    for threshold in OUTLIER_THRESHOLDS:
        out[f"outlier_{threshold}px"] = mean(~(e < threshold))
    fl = ~((e <= FL_PIXELS) | (e <= FL_FRACTION * magnitude[mask]))
    out["fl"] = mean(fl)
    out["has_occlusion"] = occluded is not None
    if occluded is None:
        out.update(occluded_pixels=0, epe_occ=math.nan, epe_noc=math.nan)
    else:
        occ = np.asarray(occluded, dtype=bool)
        if occ.shape != size:
            raise ValueError(f"occluded must be (H, W) = {size}, got {occ.shape}")
        out["occluded_pixels"] = int((occ & mask).sum())
        out["epe_occ"] = mean(error[occ & mask])
        out["epe_noc"] = mean(error[~occ & mask])
    return out


def _weighted(values: pd.Series, weights: pd.Series) -> float:
    """Mean of per-pair means weighted by their pixel counts (the mean over all pixels); NaN
    when a pair with pixels has a NaN mean (pairs without pixels are left out)."""
    counted = weights > 0
    if not counted.any():
        return math.nan
    return float((values[counted] * weights[counted]).sum(skipna=False) / weights.sum())


def aggregate(pairs: pd.DataFrame) -> dict[str, Any]:
    """Metrics over a group of pairs (rows of :attr:`EvaluationResult.pairs`)."""
    weights = pairs["valid_pixels"].astype(np.float64)
    with_pixels = pairs.loc[weights > 0, "epe"]
    out: dict[str, Any] = {
        "pairs": len(pairs),
        "valid_pixels": int(weights.sum()),
        "nonfinite_pixels": int(pairs["nonfinite_pixels"].sum()),
        "epe_pixel_mean": _weighted(pairs["epe"], weights),
        "epe_pair_mean": float(with_pixels.mean(skipna=False)) if len(with_pixels) else math.nan,
    }
    for threshold in OUTLIER_THRESHOLDS:
        key = f"outlier_{threshold}px"
        out[key] = _weighted(pairs[key], weights)
    out["fl_all"] = _weighted(pairs["fl"], weights)
    masked = pairs[pairs["has_occlusion"].astype(bool)]
    occluded = masked["occluded_pixels"].astype(np.float64)
    out["occluded_pixels"] = int(occluded.sum())
    out["epe_occ"] = _weighted(masked["epe_occ"], occluded)
    out["epe_noc"] = _weighted(masked["epe_noc"], masked["valid_pixels"] - occluded)
    return out


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    """Per-pair and per-sequence tables and the summary of one evaluation.

    ``pairs``: one row per pair (:data:`PAIR_COLUMNS`). ``sequences``: one row per sequence
    (Sintel scene, Things scene and camera; a pair for data sets without sequences) with the
    columns of :func:`aggregate`. ``summary``: data set, estimator, counts, ``metrics``
    (:func:`aggregate` over all pairs) and timing.
    """

    pairs: pd.DataFrame
    sequences: pd.DataFrame
    summary: dict[str, Any]

    def write(self, folder: str | os.PathLike[str]) -> dict[str, Path]:
        """``pairs.csv``, ``pairs.parquet``, ``sequences.csv`` and ``summary.json`` in
        ``folder`` (each written atomically; ``summary.json`` last, an earlier one removed
        first, so a folder with a ``summary.json`` holds one complete evaluation)."""
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        paths = output_paths(root)
        paths["summary.json"].unlink(missing_ok=True)
        with atomic_path(paths["pairs.csv"]) as tmp:
            self.pairs.to_csv(tmp, index=False, lineterminator="\n")
        with atomic_path(paths["pairs.parquet"]) as tmp:
            self.pairs.to_parquet(tmp, index=False)
        with atomic_path(paths["sequences.csv"]) as tmp:
            self.sequences.to_csv(tmp, index=False, lineterminator="\n")
        write_json(paths["summary.json"], self.summary)
        return paths

    def table(self) -> str:
        """A short plain-text summary for the terminal."""
        m = self.summary["metrics"]

        def px(value: float) -> str:
            return "n/a" if value is None or math.isnan(value) else f"{value:.3f} px"

        def pct(value: float) -> str:
            return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f} %"

        rows = [
            ("data set", str(self.summary.get("dataset", ""))),
            ("model", str(self.summary.get("model", ""))),
            ("pairs", f"{m['pairs']} ({m['valid_pixels']} valid pixels)"),
            ("EPE, mean over pixels", px(m["epe_pixel_mean"])),
            ("EPE, mean over pairs", px(m["epe_pair_mean"])),
            *((f"> {t} px", pct(m[f"outlier_{t}px"])) for t in OUTLIER_THRESHOLDS),
            ("Fl-all", pct(m["fl_all"])),
            ("EPE occluded", px(m["epe_occ"])),
            ("EPE non-occluded", px(m["epe_noc"])),
            ("seconds per pair", f"{self.summary['seconds_per_pair']:.3f}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def output_paths(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """The files :meth:`EvaluationResult.write` writes into ``folder``."""
    root = Path(folder)
    return {name: root / name for name in OUTPUT_NAMES}


def remove_earlier_outputs(folder: str | os.PathLike[str]) -> None:
    """Deletes an earlier evaluation's files in ``folder`` (only evaluate's names), so that a
    failed or interrupted run never leaves the previous run's complete-looking tables."""
    for path in output_paths(folder).values():
        path.unlink(missing_ok=True)


def _iter_pairs(data: Any, max_pairs: int | None, every_pixel: bool) -> Iterator[tuple[int, Any]]:
    """``(index, pair)`` of a reader (raw ``pair(i)``, never the augmented sample) or of any
    iterable of pair-like objects."""
    if hasattr(data, "pair") and hasattr(data, "__len__"):
        count = len(data) if max_pairs is None else min(len(data), max_pairs)
        for index in range(count):
            yield index, data.pair(index, every_pixel=True) if every_pixel else data.pair(index)
        return
    for index, pair in enumerate(data):
        if max_pairs is not None and index >= max_pairs:
            return
        yield index, pair


def _total(data: Any, max_pairs: int | None) -> int | None:
    try:
        count = len(data)
    except TypeError:
        return max_pairs
    return count if max_pairs is None else min(count, max_pairs)


def evaluate_dataset(
    data: Iterable[Any],
    estimator: Estimator,
    *,
    dataset: str = "",
    max_pairs: int | None = None,
    info: dict[str, Any] | None = None,
    progress: ShowProgress = False,
    every_pixel: bool = False,
) -> EvaluationResult:
    """Runs ``estimator`` on every pair of ``data`` and measures it against the ground truth.

    Args:
        data: a reader of :mod:`stages.training.readers` (its raw pairs) or an iterable of
            pair-like objects with ``image1``, ``image2`` (``(H, W, 3)`` uint8 RGB) and
            ``flow`` (``(H, W, 2)``), and optionally ``valid`` (``(H, W)``, default all),
            ``occluded`` (``(H, W)`` bool), ``sequence``, ``frame``, ``name``.
        estimator: ``(image1, image2) -> (H, W, 2)`` flow; its ``describe()`` (if any) goes
            into the summary.
        dataset: the data set's name for the summary.
        max_pairs: evaluate only the first pairs.
        info: more summary entries (root, split, ...).
        progress: show a progress bar on stderr.
        every_pixel: score every pixel against the flow file as stored, the data set's
            invalid pixels included (RAFT's ``validate_sintel``; a reader's
            ``pair(i, every_pixel=True)``, a pair-like object's ``valid`` ignored); dense
            ground truth only. Recorded in the summary as ``pixels: all``.
    """
    rows = []
    bar = progress_bar(show=progress, total=_total(data, max_pairs), desc="evaluate", unit="pair")
    for index, pair in _iter_pairs(data, max_pairs, every_pixel):
        start = time.perf_counter()
        flow = np.asarray(estimator(pair.image1, pair.image2))
        seconds = time.perf_counter() - start
        valid = None if every_pixel else getattr(pair, "valid", None)
        if every_pixel and not np.isfinite(pair.flow).all():
            bad = int((~np.isfinite(pair.flow).all(axis=-1)).sum())
            name = getattr(pair, "name", "") or f"pair {index}"
            raise ValueError(
                f"{name}: the ground truth is NaN or infinite at {bad} pixels; every-pixel "
                "scoring (--pixels all) needs finite flow everywhere (use --pixels valid)"
            )
        metrics = pair_metrics(flow, pair.flow, valid, getattr(pair, "occluded", None))
        sequence = getattr(pair, "sequence", "") or f"{index:06d}"
        rows.append(
            {
                "index": index,
                "sequence": sequence,
                "frame": int(getattr(pair, "frame", index)),
                "name": getattr(pair, "name", "") or f"{sequence}/{index:06d}",
                "height": int(pair.flow.shape[0]),
                "width": int(pair.flow.shape[1]),
                **metrics,
                "seconds": seconds,
            }
        )
        bar.update(1)
    bar.close()
    if not rows:
        raise ValueError(f"no pairs to evaluate in {dataset or 'the data'}")
    pairs = pd.DataFrame(rows, columns=list(PAIR_COLUMNS))
    broken = pairs[pairs["nonfinite_pixels"] > 0]
    if len(broken):
        logger.warning(
            "%d of %d pairs have NaN or infinite estimates at %d valid pixels (e.g. %s): they "
            "count as outliers and make the EPE means NaN",
            len(broken),
            len(pairs),
            int(broken["nonfinite_pixels"].sum()),
            broken["name"].iloc[0],
        )
    sequences = pd.DataFrame(
        [
            {"sequence": name, **aggregate(group)}
            for name, group in pairs.groupby("sequence", sort=False)
        ]
    )
    describe = getattr(estimator, "describe", None)
    summary: dict[str, Any] = {
        "dataset": dataset,
        "pixels": "all" if every_pixel else "valid",
        **(info or {}),
        **(describe() if callable(describe) else {}),
        "pairs": len(pairs),
        "sequences": len(sequences),
        "metrics": aggregate(pairs),
        "seconds_per_pair": float(pairs["seconds"].mean()),
        "seconds_total": float(pairs["seconds"].sum()),
    }
    return EvaluationResult(pairs=pairs, sequences=sequences, summary=summary)
