"""The whole pipeline (decode + flow + warp + features + writers) against flow alone.

    python benchmarks/pipeline_overhead.py [--video FILE] [--frames 33] [--model raft-large]

Flow alone: the flow stage over chunks of frames decoded beforehand into memory, computing what
the pipeline's flow stage computes here (forward and backward flow, since the warp stage's
occlusion masks need both; encoder maps kept for the motion features). Pipeline: the ``run``
command on the same frames (``decode.end`` cuts the clip) with warp, motion features and the
npy, flo, jpg and viz writers. Both in this process, alternated, median of repeats; the
pipeline's own per-stage seconds (from ``meta.json``) are printed too.
Random weights (``--checkpoint random``): speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from benchmarks._common import (  # noqa: E402
    add_clip_arguments,
    cpu_description,
    print_table,
    spread,
)
from pipeline.allocator import set_large_block_reuse  # noqa: E402
from pipeline.cli import main as cli  # noqa: E402
from stages.decode import DecodeConfig, iter_chunks, open_video  # noqa: E402
from stages.flow import FlowStage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_clip_arguments(parser, frames=33)
    parser.add_argument("--model", default="raft-large")
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    torch.set_num_threads(args.threads)
    with open_video(args.video, DecodeConfig(backend="pyav")) as reader:
        frames = []
        for frame in reader.frames():
            frames.append(frame)
            if len(frames) == args.frames:
                break
    end = (frames[-1].pts + frames[-2].pts) / 2 + 1e-3  # keeps exactly these frames
    # as `run` does for frames of this size (in this process, the first run would turn it on
    # for every later flow-alone repeat)
    set_large_block_reuse(frames[0].rgb.shape[0] * frames[0].rgb.shape[1] <= 1_000_000)
    stage = FlowStage(
        model=args.model, iters=args.iters, backward=True, device="cpu", keep_features=True
    )
    stage.setup()

    def flow_only() -> None:
        for chunk in iter_chunks(frames, "bench", 16, overlap=1):
            stage.process(chunk)

    def pipeline(out: Path) -> None:
        result = CliRunner().invoke(
            cli,
            ["-q", "run", str(args.video), "-o", str(out), "--model", args.model,
             "--checkpoint", "random", "--iters", str(args.iters), "--device", "cpu",
             "--formats", "npy,flo,jpg,viz", "--no-progress", "--set", f"decode.end={end}",
             "--set", "warp.enabled=true", "--set", "features.enabled=true",
             "--set", "output.write_rgb=true", "--workers", "0"],
            catch_exceptions=False,
        )  # fmt: skip
        if result.exit_code:
            raise SystemExit(result.output)

    times: dict[str, list[float]] = {"flow alone": [], "whole pipeline": []}
    stage_seconds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        flow_only()  # warm-up
        for repeat in range(args.repeats):
            start = time.perf_counter()
            flow_only()
            times["flow alone"].append(time.perf_counter() - start)
            start = time.perf_counter()
            pipeline(Path(tmp) / f"run{repeat}")
            times["whole pipeline"].append(time.perf_counter() - start)
            meta = next((Path(tmp) / f"run{repeat}").glob("*/meta.json"))
            stage_seconds.append(json.loads(meta.read_text())["seconds"])
    pairs = args.frames - 1
    base = median(times["flow alone"])
    print(
        f"{args.video.name}: {args.frames} frames ({pairs} pairs) at its native size, "
        f"{args.model} {args.iters} it, {args.threads} threads, median of {args.repeats}"
    )
    print_table(
        ["path", "seconds (min-max)", "pairs/s", "overhead"],
        (
            [name, spread(v), f"{pairs / median(v):.2f}", f"{100 * (median(v) / base - 1):+.1f}%"]
            for name, v in times.items()
        ),
    )

    keys = [k for k in stage_seconds[0] if k != "total"]
    print("\npipeline seconds by stage (median; decode and output stages overlap the flow stage):")
    print(" | ".join(f"{k} {median(s[k] for s in stage_seconds):.1f}" for k in keys))


if __name__ == "__main__":
    main()
