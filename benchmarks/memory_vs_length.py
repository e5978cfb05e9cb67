"""Peak memory of `run` against video length: memory must depend on the chunk, not the video.

Generates clips of each length (the example scene, 320x240), runs the whole `run` command on
each in a fresh process and prints peak RSS.

    python benchmarks/memory_vs_length.py --lengths 100 1000 --model raft-small --iters 4
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys, time
from click.testing import CliRunner
from pipeline.cli import main
start = time.perf_counter()
result = CliRunner().invoke(main, sys.argv[1:], catch_exceptions=False)
peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print("RESULT", result.exit_code, round(time.perf_counter() - start, 1), peak // 1024)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--model", default="raft-small")
    parser.add_argument("--checkpoint", default=None, help="default: random weights")
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--formats", default="npy,flo,viz")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the generated clip")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override passed to run (repeatable), e.g. flow.cpu_workers=1",
    )
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    from benchmarks._common import cpu_description

    print(f"CPU: {cpu_description()}")
    from pipeline.example import write_example_clip

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in args.lengths:
            width, height = (int(v) for v in args.size.lower().split("x"))
            clip = write_example_clip(
                Path(tmp) / f"clip{length}.mp4", num_frames=length, width=width, height=height
            )
            command = [sys.executable, "-c", CHILD, "-q", "run", str(clip), "-o", f"{tmp}/out{length}",
                       "--model", args.model, "--iters", str(args.iters), "--formats", args.formats,
                       "--device", "cpu", "--no-progress", "--workers", "0"]  # fmt: skip
            for override in args.set:
                command += ["--set", override]
            if args.checkpoint:
                command += ["--checkpoint", args.checkpoint]
            else:
                command += ["--checkpoint", "random"]
            done = subprocess.run(command, capture_output=True, text=True, cwd=repo, check=False)
            line = [row for row in done.stdout.splitlines() if row.startswith("RESULT")]
            if not line:
                raise SystemExit(f"run failed for {length} frames:\n{done.stdout}\n{done.stderr}")
            _, code, seconds, peak = line[-1].split()
            rows.append((length, int(code), float(seconds), int(peak)))
    print("| frames | model | exit | seconds | peak RSS (MiB) |")
    print("|---:|---|---:|---:|---:|")
    for length, code, seconds, peak in rows:
        print(f"| {length} | {args.model} ({args.iters} it) | {code} | {seconds} | {peak} |")
    if len(rows) > 1:
        print(f"\npeak ratio longest/shortest: {rows[-1][3] / rows[0][3]:.3f}")


if __name__ == "__main__":
    main()
