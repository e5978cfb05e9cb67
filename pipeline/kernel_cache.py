"""This machine's convolution-kernel choices on disk (:mod:`models.kernel_choice`).

One JSON file per machine and PyTorch version in ``<checkpoint cache>/kernels/``: the CPU model,
its kernel-relevant flags, the torch version and ``{shape key: kernel}``. A run loads it before
the first frame, so each shape is timed once per machine, and adds what it timed after each
video (re-reading the file first, so parallel workers and runs merge their findings). A file
that cannot be read is ignored with a warning: the shapes are timed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

import torch

from models.atomic_files import write_bytes_atomic
from models.download import default_cache_dir
from models.kernel_choice import KERNELS
from stages.devices import cpu_info

logger = logging.getLogger(__name__)

_saved: set[str] = set()
_lock = threading.Lock()


def machine_identity() -> dict[str, object]:
    """What a kernel choice depends on besides the shape: CPU model and flags, torch version."""
    info = cpu_info()
    return {"cpu": info["model"], "flags": info["flags"], "torch": torch.__version__}


def kernel_cache_path() -> Path:
    """``<checkpoint cache>/kernels/<cpu model>-<hash of the identity>.json``."""
    identity = machine_identity()
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    model = "".join(c if c.isalnum() else "-" for c in str(identity["cpu"])).strip("-")[:40]
    return default_cache_dir() / "kernels" / f"{model or 'cpu'}-{digest}.json"


def _read(path: Path) -> dict[str, str]:
    try:
        content = json.loads(path.read_text())
        decisions = content["decisions"]
        if not isinstance(decisions, dict):
            raise ValueError("'decisions' is not a mapping")
        return {str(key): str(name) for key, name in decisions.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring the kernel choices in %s (%s): timing again", path, error)
        return {}


def load_kernel_choices() -> int:
    """Loads this machine's saved choices into :data:`models.kernel_choice.KERNELS`; how many."""
    decisions = _read(kernel_cache_path())
    KERNELS.load(decisions)
    with _lock:
        _saved.update(decisions)
    return len(decisions)


def save_kernel_choices() -> bool:
    """Adds the choices timed in this process since the last save to the machine's file;
    whether anything was written. Never raises: a cache that cannot be written only costs
    the timing again next time (logged)."""
    with _lock:
        new = KERNELS.timed_keys() - _saved
        if not new:
            return False
        path = kernel_cache_path()
        try:
            merged = _read(path)
            merged.update({key: KERNELS.choice(key) for key in new})
            content = {**machine_identity(), "decisions": dict(sorted(merged.items()))}
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, json.dumps(content, indent=1).encode(), durable=False)
        except OSError as error:
            logger.warning("could not save the kernel choices to %s: %s", path, error)
            return False
        _saved.update(new)
        return True
