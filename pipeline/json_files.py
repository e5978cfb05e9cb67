"""JSON files that strict parsers read: NaN and infinity become ``null`` (JSON has neither;
Python's ``json`` would write the bare words ``NaN`` / ``Infinity``), numpy scalars and
arrays become Python numbers and lists; written atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from models.atomic_files import write_bytes_atomic


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as ``None`` and numpy values as Python ones."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of :func:`json_safe` ``(value)`` (``allow_nan=False`` checks it)."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)


def write_json(path: str | Path, value: Any, *, durable: bool = True) -> None:
    """Writes :func:`dumps` ``(value)`` and a final newline to ``path`` atomically."""
    write_bytes_atomic(path, (dumps(value) + "\n").encode(), durable=durable)
