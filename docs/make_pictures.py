"""Regenerate the README's pictures with the current code.

    python docs/make_pictures.py [--out docs]

Every picture comes from the command line exactly as the README runs it, on media the project
generates (the example clip), with no checkpoint in the cache (so ``model: auto`` uses what a
fresh offline install has):

* ``quickstart_flow.png``: frame 20 of the quickstart's ``viz.mp4``;
* ``viz_scale.png``: a still clip (the example's first frame, re-encoded with slight noise)
  drawn with ``output.viz_scale: frame`` and with the default ``video``;
* ``warped_panels.png``: frame 20 of ``warped.mp4`` (``--set warp.enabled=true``);
* ``consistency_plot.png``: ``consistency`` of the example clip against a copy with 8 frames
  brightened or darkened by up to 25 %.

``inspect_correlation.png`` is made by ``inspect`` on the shared Sintel frames (see its
caption in the README) and is not touched here. Prints the numbers the captions quote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

from pipeline.example import iter_example_frames
from stages.flow_viz import with_caption
from stages.streaming import Mp4Writer

REPO = Path(__file__).resolve().parents[1]
FRAME = 20


def cli(*args: str, cwd: Path, env: dict[str, str]) -> None:
    """Runs ``python run_pipeline.py ARGS`` as a user would (warnings shown, the result tables
    not); stops on failure."""
    command = [sys.executable, str(REPO / "run_pipeline.py"), "-q", *args]
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


def video_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` of a video as RGB."""
    with av.open(str(path)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n == index:
                return frame.to_ndarray(format="rgb24")
    raise ValueError(f"{path} has fewer than {index + 1} frames")


def save(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"cannot write {path}")
    print(f"wrote {path} ({rgb.shape[1]}x{rgb.shape[0]})")


def write_clip(path: Path, frames, fps: float = 24.0) -> Path:
    writer = Mp4Writer(path, fps, crf=16, preset="veryfast")
    for frame in frames:
        writer.write(frame)
    return writer.close()


def flickering(frames: list[np.ndarray], seed: int = 7) -> tuple[list[np.ndarray], list[int]]:
    """A copy with 8 frames brightened or darkened by up to 25 % (which ones: returned)."""
    rng = np.random.default_rng(seed)
    chosen = sorted(int(n) for n in rng.choice(np.arange(1, len(frames)), 8, replace=False))
    copy = [f.copy() for f in frames]
    for n in chosen:
        gain = 1.0 + rng.choice([-1, 1]) * rng.uniform(0.1, 0.25)
        copy[n] = np.clip(frames[n] * gain, 0, 255).astype(np.uint8)
    return copy, chosen


def still_clip(path: Path, frames: int = 8) -> Path:
    """The example's first frame held still, each copy with +-2 levels of noise: what a parked
    camera records (no motion, sensor and compression noise)."""
    first = next(iter_example_frames(1))
    rng = np.random.default_rng(3)
    held = (
        np.clip(first + rng.integers(-2, 3, first.shape), 0, 255).astype(np.uint8)
        for _ in range(frames)
    )
    return write_clip(path, held)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where to write")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        env = {**os.environ, "MOTIONPIPE_CACHE": str(work / "empty-cache")}
        quickstart = str(REPO / "configs" / "quickstart.yaml")

        # the quickstart, exactly as the README's first command runs it, plus warping
        cli("example", "example.mp4", cwd=work, env=env)
        cli("run", "example.mp4", "-o", "out", "--config", quickstart,
            "--set", "warp.enabled=true", "--no-progress", cwd=work, env=env)  # fmt: skip
        meta = json.loads((work / "out" / "example" / "meta.json").read_text())
        print(f"quickstart model: {meta['model']}; colour scale: {meta['summary']['writers']}")
        save(args.out / "quickstart_flow.png", video_frame(work / "out/example/viz.mp4", FRAME))
        save(args.out / "warped_panels.png", video_frame(work / "out/example/warped.mp4", FRAME))

        # a still scene: per-frame normalisation against one scale for the video
        still_clip(work / "still.mp4")
        pictures = []
        for scale in ("frame", "video"):
            cli("run", "still.mp4", "-o", f"still_{scale}", "--config", quickstart,
                "--set", f"output.viz_scale={scale}", "--set", "output.viz_video=false",
                "--no-progress", cwd=work, env=env)  # fmt: skip
            viz = cv2.imread(str(work / f"still_{scale}" / "still" / "viz" / "000003.png"))
            title = f"output.viz_scale: {scale}" + (" (default)" if scale == "video" else "")
            pictures.append(with_caption(viz[..., ::-1], title))
        gap = np.full((pictures[0].shape[0], 8, 3), 255, np.uint8)
        save(args.out / "viz_scale.png", np.concatenate([pictures[0], gap, pictures[1]], axis=1))

        # consistency of a flickering copy against its source
        frames = list(iter_example_frames())
        copy, chosen = flickering(frames)
        write_clip(work / "flicker.mp4", copy)
        cli("consistency", "--source", "example.mp4", "--processed", "flicker.mp4",
            "-o", "report", "--no-progress", cwd=work, env=env)  # fmt: skip
        summary = pd.read_csv(work / "report" / "consistency_summary.csv").iloc[0]
        print(
            f"flickering frames {chosen}: E_warp processed {summary['e_warp_processed']:.4f}, "
            f"source {summary['e_warp_source']:.4f} (model {summary['model']})"
        )
        shutil.copyfile(work / "report" / "flicker" / "consistency.png",
                        args.out / "consistency_plot.png")  # fmt: skip
        print(f"wrote {args.out / 'consistency_plot.png'}")


if __name__ == "__main__":
    main()
