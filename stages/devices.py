"""Device and numeric-precision choices: ``auto`` devices, autocast dtypes, bf16 support."""

from __future__ import annotations

import functools
import logging
import os
import platform

import torch

logger = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ValueError(f"device {name!r} requested but there are {count} CUDA device(s)")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {name!r} requested but MPS is not available")
    return device


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``fp16`` / ``bf16`` (``None`` for float32).

    fp16 autocast is only offered on CUDA; bf16 runs on CUDA and on CPUs with bf16
    instructions (a speed mode that moves the flow by a fraction of a pixel: see README); on a
    CPU that would emulate it, float32 runs instead, with a warning.
    """
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[name]
    if dtype is torch.float16 and device.type != "cuda":
        raise ValueError("fp16 autocast needs a CUDA device; use bf16 or fp32 on CPU")
    if dtype is torch.bfloat16 and device.type == "cpu" and cpu_has_native_bf16() is False:
        logger.warning(
            "bf16 on a CPU without avx512_bf16 / amx_bf16 is emulated (measured 40-160x slower "
            "than fp32 on an AVX2 machine, benchmarks/RESULTS.md): running fp32 instead"
        )
        return None
    return dtype


def precision_name(dtype: torch.dtype | None) -> str:
    """``"fp32"``, ``"fp16"`` or ``"bf16"`` for an autocast dtype from :func:`resolve_precision`."""
    return next(name for name, value in PRECISIONS.items() if value == dtype)


KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd")
"""CPU flags that decide which convolution / matmul kernels are fast (x86 vector and matrix
units; ``asimd``: ARM NEON)."""


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, object]:
    """This machine's CPU: ``{"model": str, "flags": [the KERNEL_FLAGS it has], "cores": int}``.

    From ``/proc/cpuinfo`` (Linux); elsewhere ``model`` is :func:`platform.processor` and
    ``flags`` is empty.
    """
    model, present = None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:  # the first processor's entries describe them all
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model") and model is None:
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not present:
                    present = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or "unknown"
    flags = [flag for flag in KERNEL_FLAGS if flag in present]
    return {"model": model, "flags": flags, "cores": os.cpu_count() or 1}


def cpu_has_native_bf16() -> bool | None:
    """Whether the CPU has bf16 dot-product instructions (``None``: cannot tell, not Linux)."""
    if not os.path.exists("/proc/cpuinfo"):
        return None
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_info()["flags"]))
