"""A per-frame error plot: curves over time with the worst frames marked and labelled.

Used for the consistency reports (``consistency.png`` of the warp stage and of the
``consistency`` command); any per-pair table with numeric columns can be drawn.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from models.atomic_files import atomic_open

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn, not with the pipeline (0.5 s)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_error_over_time"]


def plot_error_over_time(
    per_frame: pd.DataFrame,
    columns: str | Sequence[str],
    out_png: str | os.PathLike[str],
    *,
    worst: int = 5,
    title: str = "Temporal consistency over time",
    x: str | None = None,
    labels: Mapping[str, str] | None = None,
    dpi: int = 100,
) -> Path:
    """Plot per-frame errors over time, marking and labelling the ``worst`` frames of each curve.

    Drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global state) and
    written atomically: to a temporary file in the target folder, then ``os.replace``, so a
    reader never sees a partial PNG.

    Args:
        per_frame: one row per frame pair.
        columns: column(s) to draw, one curve each (e.g. ``"e_warp"``).
        out_png: destination path; its folder is created if needed.
        worst: how many largest values per curve to mark, each labelled with its x value
            (NaN values are never marked); 0 marks none.
        title: figure title.
        x: column for the horizontal axis (e.g. a frame index); default: the table's index.
        labels: optional legend text per column.
        dpi: resolution of the PNG.

    Returns:
        The path written.

    Raises:
        ValueError: a requested column is missing, or ``worst`` is negative.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [columns] if isinstance(columns, str) else list(columns)
    _check_plot_args(per_frame, names, x, worst)
    figure = Figure(figsize=(10, 4), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = per_frame[x] if x is not None else pd.Series(per_frame.index, index=per_frame.index)
    for name in names:
        _draw_curve(axes, positions, per_frame[name], (labels or {}).get(name, name), worst)
    axes.set_xlabel(x or "frame")
    axes.set_ylabel("error")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if names:
        axes.legend(loc="best")
    figure.tight_layout()
    return _save_atomic(figure, Path(out_png))


def _draw_curve(
    axes: Axes, positions: pd.Series, values: pd.Series, label: str, worst: int
) -> None:
    """One line plus markers and text labels on its ``worst`` largest finite values."""
    numeric = pd.to_numeric(values, errors="coerce")
    line = axes.plot(positions.to_numpy(), numeric.to_numpy(), label=label, linewidth=1.2)[0]
    top = numeric.dropna().nlargest(worst) if worst > 0 else numeric.iloc[:0]
    if top.empty:
        return
    top_x = positions.loc[top.index].to_numpy()
    axes.scatter(top_x, top.to_numpy(), color=line.get_color(), zorder=3, s=24)
    for x_value, y_value in zip(top_x, top.to_numpy(), strict=True):
        axes.annotate(
            _format_position(x_value),
            (x_value, y_value),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
            color=line.get_color(),
        )


def _format_position(value: object) -> str:
    """Label text for an x value: integers without decimals, floats with 3 significant places."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _save_atomic(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as PNG to ``path`` atomically (:mod:`models.atomic_files`)."""
    with atomic_open(path, durable=False) as stream:
        figure.savefig(stream, format="png")
    return path


def _check_plot_args(per_frame: pd.DataFrame, names: list[str], x: str | None, worst: int) -> None:
    wanted = [*names, *([x] if x is not None else [])]
    missing = [name for name in wanted if name not in per_frame.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table (has {list(per_frame.columns)})")
    if worst < 0:
        raise ValueError(f"worst must be >= 0, got {worst}")
