"""Seconds per pair of RAFT / RAFT-small / GMA: pair-by-pair API loop vs the chunked video path.

Paths measured, each run in a fresh subprocess (so its peak RSS is its own):

- ``official``: the official code itself, when a checkout is given (``--official-raft`` for
  princeton-vl/RAFT, ``--official-gma`` for zacjiang/GMA; nothing of it is part of this
  project): the demo's loop, ``InputPadder`` (replicate, Sintel mode) then
  ``model(image1, image2, iters, test_mode=True)`` under ``torch.no_grad()``, one pair at a time.
- ``reference``: ``model.estimate_flow(frame_t, frame_t1)`` one pair at a time with
  ``model.set_fast_kernels(False)``: the official operations inside every module, but this
  project's per-pair schedule (upsampling mask at the last iteration only, the query scaled
  before the correlation product). A stand-in where no official checkout is at hand; it is
  ~7% (RAFT) to ~14% (GMA) faster than the official code.
- ``api``: the same loop with the fast kernels (the default).
- ``video``: :class:`stages.flow.FlowStage` on chunks of consecutive frames made by
  :func:`stages.decode.iter_chunks` from a list of :class:`stages.decode.DecodedFrame`: each
  frame is encoded once, pairs are refined in batches of ``--batch-pairs``, frames and pairs
  side by side on ``--cpu-workers`` workers (default: the stage's choice, 2 on >= 2 threads)
  that split the threads between them.
- ``video-serial``: the same with ``cpu_workers=1``: one frame or pair at a time, all threads
  on it.

This project's paths run with the malloc settings that ``run`` applies on the CPU
(:mod:`pipeline.allocator`: large blocks reused instead of mapped anew for every pair); the
official path runs with the C library's defaults, as its demo does, unless
``--tune-official-malloc`` gives it the same settings.

Frames are a smooth random texture translating by a few pixels per frame; weights are random
(speed does not depend on them). A run warms up (one pair; the video path a 3-frame clip),
then times ``--pairs`` consecutive pairs (the video path: a clip of ``pairs + 1`` frames, so
its time includes encoding the clip's first frame). ``--repeats`` rounds run every
configuration once each, so load drifts of a shared machine hit all paths alike. The table
gives the median (min-max) over rounds of wall-clock seconds per pair, pairs per second, the
median process CPU seconds per pair divided by the thread count (less sensitive to other
processes than wall time), peak RSS, the official per-pair numbers measured on the project's
CI-class machine (2 cores, ``torch.set_num_threads(2)``, float32, 12 iterations), the ratios
to them and to the ``reference`` path, and the 1-minute load average when each run started.

    python benchmarks/flow_speed.py                                  # everything (long)
    python benchmarks/flow_speed.py --models raft-large gma --sizes 1024x436 --omp-passive
    python benchmarks/flow_speed.py --quick                          # one small smoke run
"""

from __future__ import annotations

import argparse
import json
import os
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
PATHS = ("official", "reference", "api", "video-serial", "video")


def _official_network(model_name: str, args: argparse.Namespace):
    """The official model class from a checkout (``core/`` on ``sys.path``), random weights."""
    root = args.official_gma if model_name == "gma" else args.official_raft
    if root is None:
        flag = "--official-gma" if model_name == "gma" else "--official-raft"
        raise SystemExit(f"the official path of {model_name} needs {flag} CHECKOUT")
    core = Path(root).resolve() / "core"
    module = "network.py" if model_name == "gma" else "raft.py"
    if not (core / module).is_file():
        repository = "zacjiang/GMA" if model_name == "gma" else "princeton-vl/RAFT"
        raise SystemExit(f"{root}: not a checkout of {repository} (no core/{module})")
    sys.path.insert(0, str(core))
    if model_name == "gma":
        from network import RAFTGMA  # zacjiang/GMA

        options = argparse.Namespace(
            num_heads=1, position_only=False, position_and_content=False,
            mixed_precision=False, dropout=0,
        )  # fmt: skip
        return RAFTGMA(options).eval()
    from raft import RAFT  # princeton-vl/RAFT

    options = argparse.Namespace(
        small=model_name == "raft-small", mixed_precision=False, alternate_corr=False, dropout=0
    )
    return RAFT(options).eval()


def _official_sides(height: int, width: int) -> list[int]:
    """``[left, right, top, bottom]`` padding to multiples of 8, as the official ``InputPadder``
    computes it in Sintel mode (the image is then padded with ``replicate``)."""
    pad_h, pad_w = (-height) % 8, (-width) % 8
    return [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]


def _frames(count: int, width: int, height: int, seed: int = 0):
    """``count`` uint8 RGB frames ``(H, W, 3)`` of a smooth texture moving by (3, 1) px/frame."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    margin = 3 * count + 8
    coarse = torch.rand(
        1, 3, (height + margin) // 8 + 2, (width + margin) // 8 + 2, generator=generator
    )
    canvas = F.interpolate(coarse, size=(height + margin, width + margin), mode="bicubic")
    canvas = canvas + 0.15 * torch.rand(canvas.shape, generator=generator)
    canvas = (canvas.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    frames = []
    for t in range(count):
        x0, y0 = margin - 3 * t - 4, margin // 2 - t % 4
        frames.append(np.ascontiguousarray(canvas[y0 : y0 + height, x0 : x0 + width]))
    return frames


def _child(model_name: str, size: str, path: str, args: argparse.Namespace) -> dict:
    """One timed repeat of one configuration (after a warm-up), in this process."""
    import torch

    torch.set_num_threads(args.threads)
    from models import create_model
    from stages.decode import DecodedFrame, iter_chunks
    from stages.flow import FlowStage

    width, height = (int(v) for v in size.lower().split("x"))
    if path != "official" or args.tune_official_malloc:
        from pipeline.allocator import set_large_block_reuse

        set_large_block_reuse(width * height <= 1_000_000)  # as `run` does on the CPU
    torch.manual_seed(0)
    frames = _frames(args.pairs + 1, width, height, seed=args.seed)
    if path == "official":
        official = _official_network(model_name, args)

        sides = _official_sides(height, width)

        def padded(i: int) -> torch.Tensor:
            image = torch.from_numpy(frames[i]).permute(2, 0, 1)[None].float()
            return torch.nn.functional.pad(image, sides, mode="replicate")

        def official_pair(t: int) -> torch.Tensor:
            with torch.no_grad():
                _, flow_up = official(padded(t), padded(t + 1), iters=args.iters, test_mode=True)
            return flow_up[..., sides[2] : sides[2] + height, sides[0] : sides[0] + width]

        official_pair(0)  # warm-up
        cpu_start = time.process_time()
        start = time.perf_counter()
        for t in range(args.pairs):
            flow = official_pair(t)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        assert torch.isfinite(flow).all()
        return _record(model_name, size, path, elapsed, cpu, args)
    network = create_model(model_name)  # random weights: speed does not depend on them
    network.set_fast_kernels(path != "reference")
    if path.startswith("video"):
        stage = FlowStage(
            model=model_name,
            network=network,
            iters=args.iters,
            batch_pairs=args.batch_pairs,
            encode_batch=args.batch_pairs,
            cpu_workers=1 if path == "video-serial" else args.cpu_workers,
        )
        stage.setup()
        # two pairs: every worker thread runs the encoders and the refinement once
        warmup = [DecodedFrame(index=i, pts=i / 25, rgb=f) for i, f in enumerate(frames[:3])]
        for chunk in iter_chunks(warmup, "warm-up", 2, overlap=1):
            stage.process(chunk)
        decoded = [DecodedFrame(index=i, pts=i / 25, rgb=f) for i, f in enumerate(frames)]
        cpu_start = time.process_time()
        start = time.perf_counter()
        done = 0
        for chunk in iter_chunks(decoded, "bench", args.chunk_pairs, overlap=1):
            stage.process(chunk)
            done += len(chunk.artifacts["pairs"])
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        assert done == args.pairs
    else:

        def tensor(i: int) -> torch.Tensor:
            return torch.from_numpy(frames[i]).permute(2, 0, 1)[None].float()

        network.estimate_flow(tensor(0), tensor(1), iters=args.iters)  # warm-up
        cpu_start = time.process_time()
        start = time.perf_counter()
        for t in range(args.pairs):
            out = network.estimate_flow(tensor(t), tensor(t + 1), iters=args.iters)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        assert torch.isfinite(out.flow).all()
    return _record(model_name, size, path, elapsed, cpu, args)


def _record(
    model_name: str, size: str, path: str, elapsed: float, cpu: float, args: argparse.Namespace
) -> dict:
    import torch

    return {
        "model": model_name,
        "size": size,
        "path": path,
        "seconds_per_pair": elapsed / args.pairs,
        "cpu_seconds_per_pair": cpu / args.pairs / torch.get_num_threads(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _run_child(model_name: str, size: str, path: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--child", "--models", model_name, "--sizes", size,
        "--paths", path, "--iters", str(args.iters), "--pairs", str(args.pairs),
        "--chunk-pairs", str(args.chunk_pairs), "--batch-pairs", str(args.batch_pairs),
        "--threads", str(args.threads), "--seed", str(args.seed),
    ]  # fmt: skip
    if args.tune_official_malloc:
        command.append("--tune-official-malloc")
    if args.cpu_workers is not None:
        command += ["--cpu-workers", str(args.cpu_workers)]
    for flag, value in (
        ("--official-raft", args.official_raft),
        ("--official-gma", args.official_gma),
    ):
        if value is not None:
            command += [flag, str(value)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if args.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    load = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"model": model_name, "size": size, "path": path, "error": tail, "load": load}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = load
    return result


def _table(results: dict[tuple[str, str, str], list[dict]]) -> str:
    lines = [
        "| model | size | path | s/pair median (min-max) | pairs/s | CPU s/pair/thread | "
        "x official code | x reference | x reference (CPU) | issue's official s/pair | "
        "x issue's official | peak RSS MiB | load 1 min |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def median_of(runs: list[dict], key: str) -> float | None:
        values = [r[key] for r in runs if "error" not in r]
        return statistics.median(values) if values else None

    for (model_name, size, path), runs in results.items():
        official = OFFICIAL_S_PER_PAIR.get((model_name, size))
        good = [r for r in runs if "error" not in r]
        loads = [r["load"] for r in runs]
        load = f"{min(loads):.1f}-{max(loads):.1f}"
        if not good:
            lines.append(f"| {model_name} | {size} | {path} | failed: {runs[-1]['error']} |")
            continue
        times = [r["seconds_per_pair"] for r in good]
        med = statistics.median(times)
        cpu = statistics.median(r["cpu_seconds_per_pair"] for r in good)
        measured = median_of(results.get((model_name, size, "official"), []), "seconds_per_pair")
        x_code = f"{measured / med:.2f}" if measured else "-"
        reference = results.get((model_name, size, "reference"), [])
        ref, ref_cpu = (
            median_of(reference, "seconds_per_pair"),
            median_of(reference, "cpu_seconds_per_pair"),
        )
        x_official = f"{official / med:.2f}" if official else "-"
        x_reference = f"{ref / med:.2f}" if ref else "-"
        x_reference_cpu = f"{ref_cpu / cpu:.2f}" if ref_cpu else "-"
        rss = max(r["peak_rss_mib"] for r in good)
        lines.append(
            f"| {model_name} | {size} | {path} | {med:.2f} ({min(times):.2f}-{max(times):.2f}) "
            f"| {1 / med:.3f} | {cpu:.2f} | {x_code} | {x_reference} | {x_reference_cpu} "
            f"| {official if official else '-'} | {x_official} | {rss:.0f} | {load} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument(
        "--paths",
        nargs="+",
        default=None,
        choices=PATHS,
        help="default: all, official only where a checkout is given",
    )
    parser.add_argument("--official-raft", type=Path, help="checkout of princeton-vl/RAFT")
    parser.add_argument("--official-gma", type=Path, help="checkout of zacjiang/GMA")
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=6, help="consecutive pairs timed per run")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="rounds; each round runs every path once, so slow drifts of the machine's load "
        "hit all paths alike",
    )
    parser.add_argument("--chunk-pairs", type=int, default=6, help="video path: pairs per chunk")
    parser.add_argument("--batch-pairs", type=int, default=1, help="video path: pairs per batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cpu-workers",
        type=int,
        default=None,
        help="video path: frames and pairs side by side (default: the flow stage's choice)",
    )
    parser.add_argument(
        "--omp-passive",
        action="store_true",
        help="run the children with OMP_WAIT_POLICY=PASSIVE: on a machine shared with other "
        "busy processes, spinning OpenMP workers wait for descheduled siblings and inflate "
        "every path's time several-fold",
    )
    parser.add_argument(
        "--tune-official-malloc",
        action="store_true",
        help="also give the official path the malloc settings of pipeline.allocator (our "
        "paths always have them, as `run` does)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="raft-small, 640x360, 1 repeat")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks._common import cpu_description

    if args.quick:
        args.models, args.sizes, args.repeats, args.pairs = ["raft-small"], ["640x360"], 1, 2
        args.chunk_pairs = 2
    if args.paths is None:
        args.paths = [
            p for p in PATHS if p != "official" or args.official_raft or args.official_gma
        ]
    if args.child:
        print(json.dumps(_child(args.models[0], args.sizes[0], args.paths[0], args)))
        return
    import torch

    policy = "PASSIVE" if args.omp_passive else os.environ.get("OMP_WAIT_POLICY", "unset")
    print(
        f"CPU: {cpu_description()}, torch {torch.__version__}, "
        f"{args.threads} threads, {args.iters} iterations, float32, {args.pairs} consecutive "
        f"pairs per run, {args.repeats} rounds, video: {args.chunk_pairs} pairs per chunk, "
        f"batches of {args.batch_pairs}, CPU workers {args.cpu_workers or 'auto'}, "
        f"OMP_WAIT_POLICY={policy}",
        flush=True,
    )

    def has_code(model_name: str, path: str) -> bool:
        checkout = args.official_gma if model_name == "gma" else args.official_raft
        return path != "official" or checkout is not None

    configs = [
        (m, s, p) for m in args.models for s in args.sizes for p in args.paths if has_code(m, p)
    ]
    results: dict[tuple[str, str, str], list[dict]] = {c: [] for c in configs}
    for round_index in range(args.repeats):
        for config in configs:
            r = _run_child(*config, args)
            results[config].append(r)
            status = r.get("error") or f"{r['seconds_per_pair']:.2f} s/pair"
            print(
                f"  round {round_index + 1}: {' '.join(config)}: {status} (load {r['load']:.1f})",
                file=sys.stderr,
                flush=True,
            )
    print(_table(results))
    if args.json:
        rows = [dict(r) for runs in results.values() for r in runs]
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
