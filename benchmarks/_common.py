"""Helpers shared by the benchmark scripts: what CPU ran them, and their Markdown tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from statistics import median

FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
"""CPU flags that matter for the convolution and matmul kernels these scripts time."""


def cpu_description(flags: Sequence[str] = FLAGS) -> str:
    """``/proc/cpuinfo`` model name and which of ``flags`` the CPU has."""
    model, present = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    found = [f for f in flags if f in present]
    return f"{model}; flags: {', '.join(found) or 'none of ' + ', '.join(flags)}"


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
