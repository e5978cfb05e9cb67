"""Does the pipeline keep up with a fast estimator? DIS with every output against flow.npy only.

    python benchmarks/dis_pipeline.py [--frames 100] [--size 768x432] [--repeats 3]

The clip: the first ``--frames`` frames of the shared ``bottle-detection.mp4`` scaled to
``--size`` (bicubic) and encoded as H.264 (CRF 18) with PyAV into a temporary folder. Both
paths are whole ``run`` processes (start-up included) with ``--model dis``, alternated;
ratios are medians of the per-repeat ratios:

- ``flow.npy only``: the default outputs (forward flow into flow.npy);
- ``all outputs``: npy, flow JPEGs, viz PNGs + viz.mp4, warp (warped frames and video,
  occlusion and motion-boundary masks, consistency metrics; backward flow for the occlusion
  test) and motion features (MotionSqueeze maps, flow statistics).

The table gives wall time and CPU time (user + system of the whole process tree): on a shared
host the wall time of a 2-core job swings with the neighbours' load, its CPU time much less.
The per-stage seconds of the last ``all outputs`` run (from meta.json; the output stages run
side by side, so they overlap) are printed under the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import add_clip_arguments, cpu_description, print_table, run_timed, spread  # noqa: E402

ALL_OUTPUTS = [
    "--formats", "npy,jpg,viz", "--set", "warp.enabled=true", "--set", "features.enabled=true",
]  # fmt: skip


def make_clip(source: Path, target: Path, frames: int, width: int, height: int) -> None:
    """Writes the first ``frames`` frames of ``source`` scaled to ``width x height`` as H.264."""
    import av
    import cv2

    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18"}
        for written, frame in enumerate(inp.decode(video=0), start=1):
            rgb = cv2.resize(frame.to_ndarray(format="rgb24"), (width, height), cv2.INTER_CUBIC)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            if written == frames:
                break
        out.mux(stream.encode())


def timed_run(clip: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``run`` of ``clip`` with DIS (:func:`run_timed`)."""
    return run_timed(
        ["run", str(clip), "-o", str(out), "--model", "dis", "--no-progress", "--overwrite", *extra]
    )


def _ratio(values: list[float], base: list[float]) -> str:
    """Median of the repeat-by-repeat ratios (each repeat runs both back to back, so a host
    that slows down for a while slows both sides of a ratio)."""
    return f"{median(v / b for v, b in zip(values, base, strict=True)):.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_clip_arguments(parser, frames=100)
    parser.add_argument("--size", default="768x432")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"CPU: {cpu_description()}")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(args.video, clip, args.frames, width, height)
        runs: dict[str, list[tuple[float, float]]] = {"flow.npy only": [], "all outputs": []}
        for _ in range(args.repeats):
            runs["flow.npy only"].append(timed_run(clip, Path(tmp) / "npy", []))
            runs["all outputs"].append(timed_run(clip, Path(tmp) / "all", ALL_OUTPUTS))
        stages = json.loads((Path(tmp) / "all/clip/meta.json").read_text())["seconds"]
    walls = {name: [wall for wall, _ in values] for name, values in runs.items()}
    cpus = {name: [cpu for _, cpu in values] for name, values in runs.items()}
    print(f"\n{args.frames} frames {width}x{height}, DIS (medium), {args.repeats} repeats\n")
    print_table(
        ["outputs", "wall s (min-max)", "wall ratio", "CPU s (min-max)", "CPU ratio"],
        [
            [
                name,
                spread(walls[name], digits=2),
                _ratio(walls[name], walls["flow.npy only"]),
                spread(cpus[name], digits=2),
                _ratio(cpus[name], cpus["flow.npy only"]),
            ]
            for name in runs
        ],
    )
    print("\nstage seconds of the last 'all outputs' run: " + json.dumps(stages))


if __name__ == "__main__":
    main()
