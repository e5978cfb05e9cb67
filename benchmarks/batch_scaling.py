"""Does a batch's cost per video stay flat as the folder grows? Folders of many short videos.

    python benchmarks/batch_scaling.py [--videos 1,100,1000] [--frames 4] [--size 64x48]

Each folder holds N generated clips (random noise, H.264, ``--frames`` frames of ``--size``,
written with PyAV into a temporary folder); ``run FOLDER --model dis`` runs as a whole process
(start-up included), ``--repeats`` times per folder. The table gives the median wall and CPU
seconds (user + system of the process tree) and the wall and CPU milliseconds per video beyond
the smallest folder's run (start-up and model loading cancel out). Flow of such tiny clips
costs almost nothing, so the per-video figures are the batch machinery's: worker hand-off,
output folder, ``meta.json``, manifest, progress. If they grow with N, something in it is
quadratic.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks._common import cpu_description, print_table, run_timed  # noqa: E402


def write_clips(folder: Path, count: int, frames: int, width: int, height: int) -> None:
    """``count`` clips of random noise, ``frames`` frames each, as H.264 ``.mp4`` files."""
    import av

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in range(count):
        with av.open(str(folder / f"clip{n:05d}.mp4"), "w") as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for _ in range(frames):
                rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            out.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default="1,100,1000", help="comma-separated folder sizes")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", default="64x48")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    counts = sorted(int(v) for v in args.videos.split(","))
    width, height = (int(v) for v in args.size.split("x"))
    print(f"CPU: {cpu_description()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        first: tuple[int, float, float] | None = None
        for count in counts:
            folder = Path(tmp) / f"in{count}"
            write_clips(folder, count, args.frames, width, height)
            out = Path(tmp) / f"out{count}"
            command = ["-q", "run", str(folder), "-o", str(out), "--model", "dis", "--no-progress"]
            runs = [run_timed([*command, "--overwrite"]) for _ in range(args.repeats)]
            wall, cpu = median(w for w, _ in runs), median(c for _, c in runs)
            if first is None:
                first = (count, wall, cpu)
                per_video = ("", "")
            else:
                extra = count - first[0]
                per_video = (
                    f"{1000 * (wall - first[1]) / extra:.1f}",
                    f"{1000 * (cpu - first[2]) / extra:.1f}",
                )
            rows.append([count, f"{wall:.1f}", f"{cpu:.1f}", *per_video])
    print(f"\nclips of {args.frames} frames {width}x{height}, DIS (medium), median of "
          f"{args.repeats} run(s); per video: beyond the {counts[0]}-video run\n")  # fmt: skip
    print_table(["videos", "wall s", "CPU s", "wall ms / video", "CPU ms / video"], rows)


if __name__ == "__main__":
    main()
