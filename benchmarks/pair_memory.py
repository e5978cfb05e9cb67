"""Peak memory and time of one RAFT/GMA pair at a given resolution, per correlation kind.

Each configuration runs in a fresh subprocess so that peak RSS (``ru_maxrss``) is its own.

    python benchmarks/pair_memory.py --size 1920x1080 --model raft-large --corr all-pairs on-demand
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _child(model: str, width: int, height: int, corr: str, iters: int, threads: int) -> dict:
    import torch

    from models import create_model

    torch.set_num_threads(threads)
    network = create_model(model)  # random weights: memory and time do not depend on them
    generator = torch.Generator().manual_seed(0)
    image1 = torch.rand(1, 3, height, width, generator=generator) * 255
    image2 = torch.roll(image1, shifts=(3, 5), dims=(2, 3))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = network.estimate_flow(image1, image2, iters=iters, corr=corr)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": model,
        "size": f"{width}x{height}",
        "corr": corr,
        "iters": iters,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak / 1024),
        "rss_before_mib": round(baseline / 1024),
        "finite": bool(torch.isfinite(out.flow).all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--model", default="raft-large")
    parser.add_argument("--corr", nargs="+", default=["all-pairs", "on-demand"])
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.child:
        print(json.dumps(_child(args.model, width, height, args.corr[0], args.iters, args.threads)))
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import cpu_description

    print(f"CPU: {cpu_description()}")
    rows = []
    for corr in args.corr:
        command = [sys.executable, __file__, "--child", "--size", args.size, "--model", args.model,
                   "--corr", corr, "--iters", str(args.iters), "--threads", str(args.threads)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            rows.append({"corr": corr, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| model | size | corr | iters | seconds | peak RSS (MiB) |")
    print("|---|---|---|---|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {args.model} | {args.size} | {r['corr']} | - | failed: {r['error']} | - |")
        else:
            print(
                f"| {r['model']} | {r['size']} | {r['corr']} | {r['iters']} | {r['seconds']} | {r['peak_rss_mib']} |"
            )


if __name__ == "__main__":
    main()
