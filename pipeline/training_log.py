"""The record of a training run: ``log.jsonl`` (training windows and validations, one JSON
object per line), ``curves.png`` drawn from it, and TensorBoard events when it is installed."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from models.atomic_files import atomic_path, write_bytes_atomic

from .json_files import dumps

LOG_FILE = "log.jsonl"


def read_log(run: Path) -> list[dict[str, Any]]:
    """The records of a run folder's ``log.jsonl`` in order (training windows and validations);
    empty if the run has none yet."""
    path = Path(run) / LOG_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLog:
    """A run folder's ``log.jsonl`` (one JSON record per line), ``curves.png`` and, when
    installed, TensorBoard event files.

    ``from_step``: for the log of a run that trains from this step on, records of later steps
    (logged by a run killed after its last saved state, which trains those steps again) are
    dropped; ``None`` leaves the log as it is.
    """

    def __init__(self, folder: Path, *, from_step: int | None = None) -> None:
        self.folder = folder
        if from_step is not None:
            records = read_log(folder)
            kept = [record for record in records if record["step"] <= from_step]
            if len(kept) < len(records):
                lines = "".join(dumps(record, indent=None) + "\n" for record in kept)
                write_bytes_atomic(folder / LOG_FILE, lines.encode())
        self.plot_path = folder / "curves.png"
        self.writer = None
        with contextlib.suppress(Exception):  # TensorBoard is optional
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        with (self.folder / LOG_FILE).open("a", encoding="utf-8") as handle:
            handle.write(dumps(record, indent=None) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def plot(self) -> None:
        write_curves(read_log(self.folder), self.plot_path)


def write_curves(records: list[dict[str, Any]], path: Path) -> None:
    """PNG of the training loss and every validation EPE against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if "loss" in r]
    val_keys = sorted({k for r in records for k in r if k.startswith("val/") and k.endswith("epe")})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, label="loss")
        axes[0].plot([r["step"] for r in train], [r["epe"] for r in train], lw=0.8,
                     label="train EPE (px)")  # fmt: skip
        axes[0].set_yscale("log")
        axes[0].legend()
    axes[0].set_xlabel("step")
    axes[0].set_title("training batches")
    for key in val_keys:
        points = [(r["step"], r[key]) for r in records if key in r]
        axes[1].plot(*zip(*points, strict=True), marker="o", ms=3, label=key[4:-4])
    axes[1].set_yscale("log")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("EPE (px)")
    axes[1].set_title("validation (held-out)")
    if val_keys:
        axes[1].legend()
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
