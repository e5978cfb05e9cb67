"""NNPACK against PyTorch's default convolution (oneDNN) on the 3x3 shapes of RAFT-large.

    python benchmarks/conv_kernels.py [--size 1024x436] [--threads 2 1] [--repeats 5]

What :mod:`models.kernel_choice` decides per machine, shown for one frame size: the encoder
stages (1/2, 1/4, 1/8 resolution) and the update block's 3x3 convolutions (1/8), one image,
float32, inference mode; best of ``--repeats`` runs after a warm-up, in milliseconds. The
channels-last column converts the input to channels-last, runs oneDNN and converts back (the
layout oneDNN prefers, paid for at the boundary).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks._common import cpu_description, print_table  # noqa: E402
from models.encoders import nnpack_conv2d, winograd_applies  # noqa: E402

# (name, in channels, out channels, downsampling) of RAFT-large's 3x3 convolutions
SHAPES = (
    ("encoder layer1", 64, 64, 2),
    ("encoder layer2", 96, 96, 4),
    ("encoder layer3", 128, 128, 8),
    ("motion encoder convc2", 256, 192, 8),
    ("motion encoder convf2", 128, 64, 8),
    ("motion encoder conv", 256, 126, 8),
    ("flow / mask head conv1", 128, 256, 8),
    ("8 output channels", 256, 8, 8),
)


def best_ms(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def _channels_last_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    last = torch.channels_last
    out = F.conv2d(
        x.contiguous(memory_format=last), weight.contiguous(memory_format=last), bias, padding=1
    )
    return out.contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1024x436")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"CPU: {cpu_description()}; torch {torch.__version__}\n")
    rows = []
    with torch.inference_mode():
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, channels, outputs, stride in SHAPES:
                x = torch.randn(1, channels, -(-height // stride), -(-width // stride))
                weight = torch.randn(outputs, channels, 3, 3)
                bias = torch.randn(outputs)
                onednn = best_ms(partial(F.conv2d, x, weight, bias, padding=1), args.repeats)
                nnpack = (
                    best_ms(partial(nnpack_conv2d, x, weight, bias, (1, 1)), args.repeats)
                    if winograd_applies(x, weight, (1, 1))
                    else float("nan")
                )
                converted = best_ms(partial(_channels_last_conv, x, weight, bias), args.repeats)
                rows.append(
                    [
                        threads,
                        name,
                        f"{channels}->{outputs} {x.shape[2]}x{x.shape[3]}",
                        f"{onednn:.2f}",
                        f"{nnpack:.2f}",
                        f"{converted:.2f}",
                        f"{onednn / nnpack:.2f}x",
                    ]
                )
    print_table(
        ["threads", "convolution", "shape", "oneDNN ms", "NNPACK ms", "channels-last ms",
         "NNPACK speed-up"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
