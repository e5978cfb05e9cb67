"""Decode-only speed of each decoder backend against ``ffmpeg -f null`` on the same file.

    python benchmarks/decode_speed.py [--video FILE] [--repeats 3]

Without ``--video`` a 1920x1080 H.264 clip (the generated example scene, 240 frames) is
written to a temporary folder first. Frames are decoded to RGB uint8 through
:func:`stages.decode.open_video` (what the pipeline does); ffmpeg decodes without conversion.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import stages.decoding.backend_decord as backend_decord  # noqa: E402
from benchmarks._common import cpu_description, print_table  # noqa: E402
from pipeline.example import write_example_clip  # noqa: E402
from stages.decode import DecodeConfig, open_video  # noqa: E402

# This loop consumes frames as fast as they are decoded, so decord's unbounded read-ahead (the
# reason the pipeline refuses it for long streams) cannot pile frames up here.
backend_decord.MAX_READ_AHEAD_BYTES = 2**62


def _decode(path: Path, backend: str) -> tuple[int, float]:
    start = time.perf_counter()
    with open_video(path, DecodeConfig(backend=backend)) as reader:
        count = sum(1 for _ in reader.frames())
        used = reader.info.backend
    if used != backend:
        raise RuntimeError(f"{backend} fell back to {used} on {path}")
    return count, time.perf_counter() - start


def _ffmpeg(path: Path) -> tuple[int, float]:
    start = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"], check=True
    )
    return -1, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["decord", "pyav", "opencv"])
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or write_example_clip(
            Path(tmp) / "clip1080.mp4", num_frames=240, width=1920, height=1080
        )
        frames = None
        runners = {name: (lambda b=name: _decode(video, b)) for name in args.backends}
        if shutil.which("ffmpeg"):
            runners["ffmpeg -f null"] = lambda: _ffmpeg(video)
        results: dict[str, list[float]] = {name: [] for name in runners}
        for run in runners.values():
            run()  # warm-up (file cache, library loading)
        for _ in range(args.repeats):
            for name, run in runners.items():  # interleaved, so drift affects all alike
                count, seconds = run()
                if count > 0:
                    frames = count
                results[name].append(seconds)
    print(
        f"decode-only speed, {video.name if args.video else '1920x1080 H.264 (generated)'}, "
        f"{frames} frames, median of {args.repeats} (min-max)"
    )
    print_table(
        ["decoder", "fps", "seconds"],
        (
            [
                name,
                f"{frames / median(t):.0f} ({frames / max(t):.0f}-{frames / min(t):.0f})",
                f"{median(t):.2f}",
            ]
            for name, t in results.items()
        ),
    )


if __name__ == "__main__":
    main()
