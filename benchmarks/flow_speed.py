"""Seconds per pair of RAFT / RAFT-small / GMA: pair-by-pair API loop vs the chunked video path.

Paths measured, each configuration in a fresh subprocess (clean peak RSS):

- ``reference``: ``model.estimate_flow(frame_t, frame_t1)`` one pair at a time with
  ``model.set_fast_kernels(False)``, i.e. the official sequence of operations. It stands in for
  the official per-pair loop on the machine the benchmark runs on.
- ``api``: the same loop with the fast kernels (the default).
- ``video``: :class:`stages.flow.FlowStage` on chunks of consecutive frames made by
  :func:`stages.decode.iter_chunks`: each frame is encoded once, pairs are refined in batches.

Frames are a smooth random texture translating by a few pixels per frame; random weights
(speed does not depend on them). Every repeat times ``--pairs`` consecutive pairs after a
warm-up; the table reports the median (min-max) over repeats, seconds per pair, pairs per
second, peak RSS, the official per-pair numbers measured on the project's CI-class machine
(2 cores, ``torch.set_num_threads(2)``, float32, 12 iterations) and the ratios.

    python benchmarks/flow_speed.py                                  # everything (long)
    python benchmarks/flow_speed.py --models raft-large gma --sizes 1024x436 --repeats 3
    python benchmarks/flow_speed.py --quick                          # one small smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Official per-pair loop, seconds per pair (12 iterations, float32, 2 threads, CI-class machine).
OFFICIAL_S_PER_PAIR: dict[tuple[str, str], float] = {
    ("raft-large", "640x360"): 1.23,
    ("raft-large", "1024x436"): 2.69,
    ("raft-large", "1280x720"): 7.61,
    ("raft-small", "640x360"): 0.42,
    ("raft-small", "1024x436"): 0.97,
    ("raft-small", "1280x720"): 2.63,
    ("gma", "640x360"): 1.74,
    ("gma", "1024x436"): 3.75,
    ("gma", "1280x720"): 13.45,
}
MODELS = ("raft-large", "raft-small", "gma")
SIZES = ("640x360", "1024x436", "1280x720")
PATHS = ("reference", "api", "video")


def _frames(count: int, width: int, height: int, seed: int = 0):
    """``count`` uint8 RGB frames ``(H, W, 3)`` of a smooth texture moving by (3, 1) px/frame."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    margin = 3 * count + 8
    coarse = torch.rand(1, 3, (height + margin) // 8 + 2, (width + margin) // 8 + 2, generator=generator)
    canvas = F.interpolate(coarse, size=(height + margin, width + margin), mode="bicubic")
    canvas = canvas + 0.15 * torch.rand(canvas.shape, generator=generator)
    canvas = (canvas.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    frames = []
    for t in range(count):
        x0, y0 = margin - 3 * t - 4, margin // 2 - t % 4
        frames.append(np.ascontiguousarray(canvas[y0 : y0 + height, x0 : x0 + width]))
    return frames


def _child(model_name: str, size: str, path: str, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from models import create_model
    from stages.decode import DecodedFrame, iter_chunks
    from stages.flow import FlowStage

    width, height = (int(v) for v in size.lower().split("x"))
    torch.manual_seed(0)
    network = create_model(model_name)  # random weights: speed does not depend on them
    network.set_fast_kernels(path != "reference")
    pairs = args.pairs
    total_frames = 1 + pairs * (args.repeats + 1)  # first ``pairs`` pairs are the warm-up
    frames = _frames(total_frames, width, height)
    times: list[float] = []
    if path == "video":
        decoded = [DecodedFrame(index=i, pts=i / 25, rgb=f) for i, f in enumerate(frames)]
        stage = FlowStage(
            model=model_name,
            network=network,
            iters=args.iters,
            batch_pairs=args.batch_pairs,
            encode_batch=args.batch_pairs,
        )
        stage.setup()
        for n, chunk in enumerate(iter_chunks(decoded, "bench", pairs, overlap=1)):
            start = time.perf_counter()
            stage.process(chunk)
            elapsed = time.perf_counter() - start
            if n > 0:  # chunk 0 is the warm-up (and encodes one frame more)
                times.append(elapsed / len(chunk.artifacts["pairs"]))
    else:

        def tensor(i: int) -> torch.Tensor:
            return torch.from_numpy(frames[i]).permute(2, 0, 1)[None].float()

        for rep in range(args.repeats + 1):
            start = time.perf_counter()
            for t in range(rep * pairs, (rep + 1) * pairs):
                out = network.estimate_flow(tensor(t), tensor(t + 1), iters=args.iters)
            elapsed = time.perf_counter() - start
            assert torch.isfinite(out.flow).all()
            if rep > 0:
                times.append(elapsed / pairs)
    return {
        "model": model_name,
        "size": size,
        "path": path,
        "times": times,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _run_child(model_name: str, size: str, path: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--child", "--models", model_name, "--sizes", size,
        "--paths", path, "--iters", str(args.iters), "--pairs", str(args.pairs),
        "--repeats", str(args.repeats), "--batch-pairs", str(args.batch_pairs),
        "--threads", str(args.threads),
    ]  # fmt: skip
    load_before = os.getloadavg()[0]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if args.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    load_after = os.getloadavg()[0]
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"model": model_name, "size": size, "path": path, "error": tail}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = (load_before, load_after)
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "| model | size | path | s/pair median (min-max) | pairs/s | official s/pair | "
        "x official | x reference | peak RSS MiB | load 1 min (start/end) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    reference = {
        (r["model"], r["size"]): statistics.median(r["times"])
        for r in rows
        if r.get("path") == "reference" and r.get("times")
    }
    for r in rows:
        official = OFFICIAL_S_PER_PAIR.get((r["model"], r["size"]))
        if "error" in r:
            lines.append(f"| {r['model']} | {r['size']} | {r['path']} | failed: {r['error']} |")
            continue
        med, low, high = statistics.median(r["times"]), min(r["times"]), max(r["times"])
        ref = reference.get((r["model"], r["size"]))
        lines.append(
            f"| {r['model']} | {r['size']} | {r['path']} | {med:.2f} ({low:.2f}-{high:.2f}) | "
            f"{1 / med:.2f} | {official if official else '-'} | "
            f"{official / med if official else float('nan'):.2f} | "
            f"{ref / med if ref else float('nan'):.2f} | {r['peak_rss_mib']:.0f} | "
            f"{r['load'][0]:.1f}/{r['load'][1]:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=4, help="pairs timed per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after a warm-up")
    parser.add_argument("--batch-pairs", type=int, default=4, help="video path: pairs per batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--omp-passive",
        action="store_true",
        help="run the children with OMP_WAIT_POLICY=PASSIVE: on a machine shared with other "
        "busy processes, spinning OpenMP workers wait for descheduled siblings and inflate "
        "every path's time several-fold",
    )
    parser.add_argument("--quick", action="store_true", help="raft-small, 640x360, 1 repeat")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.models, args.sizes, args.repeats, args.pairs = ["raft-small"], ["640x360"], 1, 2
    if args.child:
        print(json.dumps(_child(args.models[0], args.sizes[0], args.paths[0], args)))
        return
    import torch

    print(
        f"CPU: {_cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{args.threads} threads, {args.iters} iterations, float32, {args.pairs} pairs x "
        f"{args.repeats} repeats per configuration, video batch {args.batch_pairs}, "
        f"OMP_WAIT_POLICY={'PASSIVE' if args.omp_passive else os.environ.get('OMP_WAIT_POLICY', 'unset')}",
        flush=True,
    )
    rows = []
    for model_name in args.models:
        for size in args.sizes:
            for path in args.paths:
                rows.append(_run_child(model_name, size, path, args))
                r = rows[-1]
                status = r.get("error") or " ".join(f"{t:.2f}" for t in r["times"])
                print(f"  {model_name} {size} {path}: {status}", file=sys.stderr, flush=True)
    print(_table(rows, args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
