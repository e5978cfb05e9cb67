"""Cost of the bf16 speed mode: flow difference against float32, and speed, per model.

    python benchmarks/bf16_accuracy.py [--checkpoint-dir ../shared/fixtures/parity]

Runs the parity-fixture pair of each model (1024x436, 12 iterations) with float32 and with
bf16 autocast (CPU; CUDA when --device cuda), and prints end-point error statistics of bf16
against float32 and the time of each.
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

from models import create_model  # noqa: E402

CASES = {
    "raft-large": ("raft_large_random.pth", "raft_large_demo_pair.npz"),
    "raft-small": ("raft_small_random.pth", "raft_small_demo_pair.npz"),
    "gma": ("gma_random.pth", "gma_frame0047_0048.npz"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=REPO.parent / "shared/fixtures/parity"
    )
    parser.add_argument("--models", nargs="+", default=list(CASES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from benchmarks._common import cpu_description

    print(f"CPU: {cpu_description()}")
    torch.set_num_threads(args.threads)
    print(
        "| model | fp32 s/pair | bf16 s/pair | speed-up | EPE bf16 vs fp32 mean / p99 / max (px) |"
    )
    print("|---|---:|---:|---:|---|")
    for name in args.models:
        weights, pair = CASES[name]
        model = create_model(name, checkpoint=args.checkpoint_dir / weights, device=args.device)
        data = np.load(args.checkpoint_dir / pair)
        to = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float().to(args.device)  # noqa: E731
        image1, image2 = to(data["image1"]), to(data["image2"])
        flows, seconds = {}, {}
        for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            model.estimate_flow(image1, image2, iters=12, autocast=dtype)  # warm-up
            runs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                flows[label] = model.estimate_flow(image1, image2, iters=12, autocast=dtype).flow
                runs.append(time.perf_counter() - start)
            seconds[label] = statistics.median(runs)
        epe = torch.linalg.vector_norm(flows["bf16"] - flows["fp32"], dim=1).flatten().cpu().numpy()
        print(
            f"| {name} | {seconds['fp32']:.2f} | {seconds['bf16']:.2f} | "
            f"{seconds['fp32'] / seconds['bf16']:.2f}x | {epe.mean():.3f} / "
            f"{np.percentile(epe, 99):.3f} / {epe.max():.3f} |"
        )


if __name__ == "__main__":
    main()
