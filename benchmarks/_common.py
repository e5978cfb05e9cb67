"""Helpers shared by the benchmark scripts: what CPU ran them, whole-process timing, and their
Markdown tables."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from statistics import median

from stages.devices import cpu_info


def cpu_description() -> str:
    """The CPU model and which of the flags that decide kernel speed it has
    (:func:`stages.devices.cpu_info`)."""
    info = cpu_info()
    return f"{info['model']}; {info['cores']} cores; flags: {', '.join(info['flags']) or 'none'}"


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """``"median (min-max)"`` of ``values`` times ``scale``, with ``digits`` decimals."""
    low, mid, high = (scale * v for v in (min(values), median(values), max(values)))
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def print_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Prints a Markdown table: the first column left-aligned (names), the others right-aligned
    (numbers, already formatted)."""
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def add_clip_arguments(parser, *, frames: int) -> None:
    """The clip a benchmark runs on: the first ``--frames`` (default ``frames``) frames of
    ``--video`` (default the shared ``bottle-detection.mp4``)."""
    default = Path(__file__).resolve().parents[2] / "shared/videos/bottle-detection.mp4"
    parser.add_argument("--video", type=Path, default=default)
    parser.add_argument("--frames", type=int, default=frames)


def run_timed(arguments: Sequence[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the command and its worker processes) of one
    ``python run_pipeline.py ARGUMENTS`` process; raises if it fails."""
    command = [sys.executable, str(Path(__file__).resolve().parents[1] / "run_pipeline.py")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([*command, *arguments], check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
