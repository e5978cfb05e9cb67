"""What the ``refine`` trace hook costs: tracing off, tracing on, and the loop without the hook.

    python benchmarks/inspect_overhead.py [--model raft-large] [--size 256x192] [--rounds 9]

Three ways to run the same refinement of one pair (random weights, features and context
computed once beforehand):

- **plain**: the refinement loop as it was before the hook existed (copied below): what
  ``refine`` costs with no trace parameter at all;
- **trace off**: ``model.refine(...)`` (``trace=None``, the default);
- **trace on**: ``model.refine(..., trace=RefineTrace(cells=[...]))``: masks at every
  iteration, every iteration upsampled, rows of the pyramid kept.

Each round runs the three once, in turn (the first one rotating from round to round), so that
drifts of the machine's load and order effects hit them alike; the table gives the median and
the minimum over rounds. Prints the CPU model and its relevant flags first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks._common import cpu_description, print_table, spread  # noqa: E402
from models import RefineTrace, create_model  # noqa: E402
from models.corr import build_correlation  # noqa: E402
from models.flow_grid import bilinear_upsample, convex_upsample, coords_grid  # noqa: E402
from models.raft import RAFT  # noqa: E402


def plain_refine(model: RAFT, fmap1, fmap2, context, iters: int):
    """``RAFT.refine`` (all-pairs, float32, no warm start) as it was before the trace hook."""
    b, _, h, w = fmap1.shape
    corr_fn = build_correlation(
        "all-pairs", fmap1, fmap2, num_levels=model.corr_levels, radius=model.corr_radius
    )
    coords0 = coords_grid(b, h, w, fmap1.device)
    coords1 = coords0.clone()
    net, mask = context.net, None
    prepared = model.update_block.prepare(context.inp)
    for itr in range(iters):
        lookup = corr_fn(coords1)
        flow = coords1 - coords0
        net, mask, delta = model.update_block(
            net, prepared, lookup, flow, context.attention, compute_mask=itr == iters - 1
        )
        coords1 = coords1 + delta.float()
    flow_low = coords1 - coords0
    if mask is None:
        return flow_low, bilinear_upsample(flow_low)
    return flow_low, convex_upsample(flow_low, mask.float())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="raft-large")
    parser.add_argument("--size", default="256x192", help="WIDTHxHEIGHT, multiples of 8")
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {args.threads} threads")
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    model = create_model(args.model)  # random weights: the time does not depend on them
    generator = torch.Generator().manual_seed(0)
    image1 = torch.rand(1, 3, height, width, generator=generator) * 255
    image2 = torch.roll(image1, shifts=(3, 5), dims=(2, 3))
    cells = [(width // 16, height // 16)]
    with torch.inference_mode():
        fmap1, fmap2 = model.encode_features(torch.cat([image1, image2])).chunk(2)
        context = model.encode_context(image1)
        runs = {
            "plain (no hook)": lambda: plain_refine(model, fmap1, fmap2, context, args.iters),
            "refine, trace off": lambda: model.refine(fmap1, fmap2, context, iters=args.iters),
            "refine, trace on": lambda: model.refine(
                fmap1, fmap2, context, iters=args.iters, trace=RefineTrace(cells=cells)
            ),
        }
        reference = runs["plain (no hook)"]()[1]
        for name, run in runs.items():  # warm-up, and the three agree
            assert torch.equal(run()[1], reference), name
        times: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for round_index in range(args.rounds):
            shift = round_index % len(names)  # each path goes first equally often
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                runs[name]()
                times[name].append(time.perf_counter() - start)
    print(f"\n{args.model}, {width}x{height}, {args.iters} iterations, median of {args.rounds} "
          f"rounds (min-max); load average at end: {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    base = median(times["plain (no hook)"])
    base_min = min(times["plain (no hook)"])
    print_table(
        ["path", "ms per refine, median (min-max)", "x plain (medians)", "x plain (minima)"],
        (
            [name, spread(v, 1000), f"{median(v) / base:.3f}", f"{min(v) / base_min:.3f}"]
            for name, v in times.items()
        ),
    )


if __name__ == "__main__":
    main()
