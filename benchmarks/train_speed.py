"""Training throughput: pairs per second of one optimizer step, fp32 against bf16 autocast.

    python benchmarks/train_speed.py [--models raft-small-convex raft-small] [--device cpu]

For each model and precision: forward (``flow_predictions``) + sequence loss + backward +
gradient clipping + AdamW on a fixed batch, median over ``--steps`` timed steps after one
warm-up, with the allocator setting ``train`` applies. Also the synthetic generator's pairs per
second on one core (it runs in a loader process beside the step). bf16 rows are skipped where
the CPU would emulate bf16. Prints the CPU model and its relevant flags first.
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
from models.losses import sequence_loss  # noqa: E402
from models.raft import BUILDERS  # noqa: E402
from pipeline.allocator import set_large_block_reuse  # noqa: E402
from pipeline.devices import cpu_has_native_bf16  # noqa: E402
from stages.training.synthetic import LayeredPairConfig, generate_pair  # noqa: E402
from stages.training.textures import TexturePool  # noqa: E402


def step_seconds(model_name, batch, size, iters, autocast, steps, device, convex_every) -> float:
    torch.manual_seed(0)
    model = BUILDERS[model_name]().set_fast_kernels(False).train().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    h, w = size
    image1 = torch.rand(batch, 3, h, w, device=device) * 255
    image2 = torch.rand(batch, 3, h, w, device=device) * 255
    flow = torch.randn(batch, 2, h, w, device=device) * 4
    valid = torch.ones(batch, h, w, device=device)
    times = []
    for index in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        predictions = model.flow_predictions(
            image1, image2, iters=iters, autocast=autocast, convex_every_iteration=convex_every
        )
        loss = sequence_loss(predictions, flow, valid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def generator_pairs_per_second(size: tuple[int, int], count: int) -> float:
    pool = TexturePool(seed=0)
    config = LayeredPairConfig(height=size[0], width=size[1])
    rng = np.random.default_rng(0)
    for i in range(8):  # fill the texture cache of generation 0 (as the loader does)
        generate_pair(rng, pool, config, generation=i // 64)
    start = time.perf_counter()
    for i in range(count):
        generate_pair(rng, pool, config, generation=i // 64)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["raft-small-convex", "raft-small"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", default="256x256", help="HEIGHTxWIDTH")
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--generator-pairs", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_large_block_reuse(True)
    device = torch.device(args.device)
    size = tuple(int(v) for v in args.size.split("x"))
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {args.threads} threads")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"batch {args.batch}, {size[0]}x{size[1]}, {args.iters} iterations, median of "
          f"{args.steps} steps\n")  # fmt: skip
    print("| model | upsampling in loss | precision | s/step | pairs/s | x fp32 |")
    print("|---|---|---|---:|---:|---:|")
    precisions = [("fp32", None)]
    if device.type == "cuda" or cpu_has_native_bf16():
        precisions.append(("bf16", torch.bfloat16))
    for name in args.models:
        variants = [True, False] if name in ("raft-small-convex", "raft-large", "gma") else [True]
        for convex_every in variants:
            fp32 = None
            for label, dtype in precisions:
                seconds = step_seconds(name, args.batch, size, args.iters, dtype, args.steps,
                                       device, convex_every)  # fmt: skip
                fp32 = fp32 or seconds
                mode = "convex every iteration" if convex_every else "convex at last only"
                if name == "raft-small":
                    mode = "bilinear"
                print(f"| {name} | {mode} | {label} | {seconds:.2f} | "
                      f"{args.batch / seconds:.2f} | {fp32 / seconds:.2f}x |", flush=True)  # fmt: skip
    rate = generator_pairs_per_second(size, args.generator_pairs)
    print(f"\nsynthetic generator, one core: {rate:.1f} pairs/s at {size[0]}x{size[1]}")


if __name__ == "__main__":
    main()
