"""A trained model against OpenCV DIS: accuracy on held-out sets, inference speed, learning curve.

    python benchmarks/trained_model.py [--model auto] [--checkpoint PATH] [--iters 12 24] \
        [--refine none auto] [--runs runs/motionpipe-small ...]

Accuracy: the generator's held-out validation sets (``layered``, ``photo``; seed and texture
clips that training did not use), end-point error against the exact ground truth, for the
model at each ``--iters`` and ``--refine`` (``flow.refine``; by default without and with what
the checkpoint's registry entry asks for) and for DIS (medium). Speed: seconds per pair at each ``--sizes``
through ``estimate_flow`` (float32, fast kernels, one pair at a time), median of ``--repeats``
after a warm-up, DIS alike. Quickstart scene: the example clip's frames (as generated) against
their exact flow, over all pixels, on the moving square and on the background. Learning curve: the validation records of each ``--runs`` folder's
``log.jsonl``. Prints the CPU model and flags first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._common import cpu_description  # noqa: E402
from pipeline.estimators import DisEstimator, build_estimator  # noqa: E402
from pipeline.evaluate import evaluate_dataset  # noqa: E402
from pipeline.example import example_ground_truth, iter_example_frames  # noqa: E402
from pipeline.training_log import read_log  # noqa: E402
from stages.training.textures import find_media, load_media_frames  # noqa: E402
from stages.training.validation import (  # noqa: E402
    VALIDATION_FRAMES_PER_VIDEO,
    build_validation_set,
)

DIS_TITLE = "OpenCV DIS (medium)"
HELD_OUT = ("../shared/videos/asl_milk.mkv", "../shared/videos/asl_night.mkv")


def accuracy(args, estimators: dict) -> None:
    files = find_media([REPO / p for p in args.textures])
    media = load_media_frames(files, frames_per_video=VALIDATION_FRAMES_PER_VIDEO)
    print("| set | estimator | EPE (px, mean over pixels) | mean over pairs | median pair "
          "| pairs better than DIS | > 1 px | > 3 px | s/pair |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.sets:
        label, pairs = build_validation_set(name, pairs=args.pairs, seed=args.seed,
                                            media_frames=media)  # fmt: skip
        results = {title: evaluate_dataset(pairs, estimator, dataset=label)
                   for title, estimator in estimators.items()}  # fmt: skip
        dis = results[DIS_TITLE].pairs["epe"].to_numpy()
        for title, result in results.items():
            m = result.summary["metrics"]
            epe = result.pairs["epe"].to_numpy()
            wins = "-" if title == DIS_TITLE else f"{int((epe < dis).sum())}/{len(epe)}"
            print(f"| {label} ({len(pairs)} pairs) | {title} | {m['epe_pixel_mean']:.3f} | "
                  f"{m['epe_pair_mean']:.3f} | {float(np.median(epe)):.3f} | {wins} | "
                  f"{100 * m['outlier_1px']:.1f}% | {100 * m['outlier_3px']:.1f}% | "
                  f"{result.summary['seconds_per_pair']:.3f} |", flush=True)  # fmt: skip


def example_clip(estimators: dict) -> None:
    """The quickstart scene (frames as generated, before H.264) against its exact flow."""
    frames = list(iter_example_frames())
    truths = [example_ground_truth(t) for t in range(len(frames) - 1)]
    print("\n| quickstart scene (47 pairs, 320x240) | EPE all pixels | EPE on the square "
          "| EPE background |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for title, estimator in estimators.items():
        overall, square, background = [], [], []
        for t, truth in enumerate(truths):
            if truth is None:
                continue
            flow, mask = truth
            error = np.linalg.norm(estimator(frames[t], frames[t + 1]) - flow, axis=-1)
            overall.append(error.mean())
            square.append(error[mask].mean())
            background.append(error[~mask].mean())
        print(f"| {title} | {np.mean(overall):.3f} | {np.mean(square):.3f} | "
              f"{np.mean(background):.3f} |", flush=True)  # fmt: skip


def speed(args, estimators: dict) -> None:
    print("\n| size | estimator | s/pair median (min-max) | pairs/s |")
    print("|---|---|---:|---:|")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        image1 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image2 = np.roll(image1, (2, 3), axis=(0, 1))
        for title, estimator in estimators.items():
            estimator(image1, image2)  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                estimator(image1, image2)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            print(f"| {w}x{h} | {title} | {median:.3f} ({min(times):.3f}-{max(times):.3f}) | "
                  f"{1 / median:.2f} |", flush=True)  # fmt: skip


def learning_curve(runs: list[Path]) -> None:
    print("\n| run | step | val layered EPE | val photo EPE | train loss (last 25 steps) |")
    print("|---|---:|---:|---:|---:|")
    for run in runs:
        records = read_log(run)
        losses = {r["step"]: r["loss"] for r in records if "loss" in r}
        for record in records:
            if "val/layered/epe" not in record:
                continue
            step = record["step"]
            loss = losses.get(step, float("nan"))
            print(f"| {run.name} | {step} | {record['val/layered/epe']:.3f} | "
                  f"{record.get('val/photo/epe', float('nan')):.3f} | {loss:.3f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--iters", type=int, nargs="+", default=[12])
    parser.add_argument("--refine", nargs="+", default=["none", "auto"],
                        choices=["none", "auto", "variational"])  # fmt: skip
    parser.add_argument("--sets", nargs="+", default=["layered", "photo"])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--textures", nargs="*", default=list(HELD_OUT), help="none: procedural textures only"
    )
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1024x436"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=Path, nargs="*", default=[])
    parser.add_argument("--skip", nargs="*", default=[], choices=["accuracy", "example", "speed"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {args.threads} threads\n")
    estimators = {}
    for iters in args.iters:
        for refine in args.refine:
            estimator = build_estimator(
                args.model, checkpoint=args.checkpoint, iters=iters, refine=refine
            )
            info = estimator.describe()
            title = f"{info['model']} ({info.get('checkpoint')}), {iters} it"
            if info["refine"] != "none":
                title += f" + {info['refine']}"
            estimators.setdefault(title, estimator)
    estimators[DIS_TITLE] = DisEstimator()
    if "accuracy" not in args.skip:
        accuracy(args, estimators)
    if "example" not in args.skip:
        example_clip(estimators)
    if "speed" not in args.skip:
        speed(args, estimators)
    if args.runs:
        learning_curve(args.runs)


if __name__ == "__main__":
    main()
