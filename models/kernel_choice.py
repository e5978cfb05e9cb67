"""Which kernel runs each convolution shape on this machine: timed on first use, then remembered.

The fast 3x3 convolution path (:func:`models.encoders.conv2d`) has two kernels that meet the
same accuracy bound (the fast-kernel parity tests hold for either): NNPACK's Winograd F(6x6,
3x3) and PyTorch's default (oneDNN). Which one is faster depends on the CPU and on the shape:
on a 2-core AMD EPYC (Zen 4, AVX-512) NNPACK took 31 ms where oneDNN took 61 for RAFT-large's
first encoder stage at 1024x436, but 6.7 ms against 3.8 for a convolution with 8 output
channels; on CPUs whose oneDNN kernels use AVX-512 or AMX the balance shifts further.

:data:`KERNELS` is the process-wide table ``{shape key: kernel name}``. The first call with a
new key runs every candidate (one warm-up and ``repeats`` timed runs each, interleaved so a
load change hits all alike), keeps the fastest by its best run and returns that candidate's
output, so the timing wastes no work. A key names the kernel size, channels, image size,
batch and the calling thread's PyTorch thread count. The table holds no file: the pipeline
loads and saves it per machine (:mod:`pipeline.kernel_cache`), so a machine times each shape
once, not every run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import torch

__all__ = ["KERNELS", "KernelChoices", "conv_key"]


def conv_key(x: torch.Tensor, weight: torch.Tensor) -> str:
    """The shape key of convolving ``x (B, C, H, W)`` with ``weight (O, C, kh, kw)`` on this
    thread's PyTorch thread count, e.g. ``"conv3x3 64->96 218x512 b1 t2"``."""
    batch, channels, height, width = x.shape
    kh, kw = weight.shape[-2:]
    return (
        f"conv{kh}x{kw} {channels}->{weight.shape[0]} {height}x{width} b{batch} "
        f"t{torch.get_num_threads()}"
    )


class KernelChoices:
    """A thread-safe ``{shape key: kernel name}`` table that times candidates on first use.

    Args:
        decisions: known choices (e.g. loaded from this machine's cache).
        repeats: timed runs per candidate on first use (after one warm-up).
    """

    def __init__(self, decisions: Mapping[str, str] | None = None, *, repeats: int = 3) -> None:
        self._decisions: dict[str, str] = dict(decisions or {})
        self._timed: set[str] = set()
        self._used: set[str] = set()
        self._lock = threading.Lock()
        self.repeats = repeats

    def run(self, key: str, candidates: Mapping[str, Callable[[], torch.Tensor]]) -> torch.Tensor:
        """The output of the chosen candidate for ``key`` (timing them all the first time).

        A known choice that is not among ``candidates`` (e.g. NNPACK turned off since) is
        timed again among the ones offered. A candidate that raises on first use is left out
        (its error is re-raised only when every candidate failed).
        """
        name = self._decisions.get(key)
        if name in candidates:
            self._used.add(key)
            return candidates[name]()
        with self._lock:  # one timing at a time: a concurrent one would skew both
            name = self._decisions.get(key)
            if name in candidates:
                self._used.add(key)
                return candidates[name]()
            name, output = self._time(candidates)
            self._decisions[key] = name
            self._timed.add(key)
            self._used.add(key)
            return output

    def _time(
        self, candidates: Mapping[str, Callable[[], torch.Tensor]]
    ) -> tuple[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        errors: list[Exception] = []
        for name, candidate in candidates.items():
            try:
                outputs[name] = candidate()  # warm-up; also the output if this one wins
            except Exception as error:  # a candidate the machine cannot run
                errors.append(error)
        if not outputs:
            raise errors[0]
        best = {name: float("inf") for name in outputs}
        for _ in range(self.repeats):
            for name in outputs:
                start = time.perf_counter()
                candidates[name]()
                best[name] = min(best[name], time.perf_counter() - start)
        winner = min(best, key=best.__getitem__)
        return winner, outputs[winner]

    def choice(self, key: str) -> str | None:
        """The kernel chosen for ``key``, or ``None`` before its first use."""
        return self._decisions.get(key)

    def timed_keys(self) -> set[str]:
        """Keys timed in this process (not loaded): what a cache has not seen yet."""
        with self._lock:
            return set(self._timed)

    def used(self) -> dict[str, str]:
        """The choices this process has run (for ``meta.json``)."""
        with self._lock:
            return {key: self._decisions[key] for key in sorted(self._used)}

    def load(self, decisions: Mapping[str, str]) -> None:
        """Adds known choices; ones already made in this process win."""
        with self._lock:
            for key, name in decisions.items():
                self._decisions.setdefault(str(key), str(name))


KERNELS = KernelChoices()
"""The process-wide table :func:`models.encoders.conv2d` consults."""
