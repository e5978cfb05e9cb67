"""Pictures and the HTML page of an :class:`pipeline.inspect.Inspection`.

Each picture is a PNG written beside ``report.html``; the page embeds them as base64 as well, so
that it is one self-contained file that opens offline. Matplotlib is used through
``matplotlib.figure.Figure`` only (no pyplot, no global backend state).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from models.atomic_files import atomic_open, write_bytes_atomic
from stages.flow_viz import flow_to_color

from .inspect import Inspection

#: Most iterations drawn in the flow strip (evenly spaced, the first and last always).
MAX_STRIP = 12
DPI = 80

_FIRST, _LAST, _TARGET = "#ffffff", "#ff3030", "#00e5ff"


@dataclass(frozen=True)
class Picture:
    """A written PNG with its section title and caption."""

    path: Path
    title: str
    caption: str


def _picture(fig: Figure, path: Path, title: str, caption: str) -> Picture:
    """Saves ``fig`` as the PNG ``path`` and returns it with its title and caption."""
    with atomic_open(path, durable=False) as handle:
        fig.savefig(handle, format="png", dpi=DPI, bbox_inches="tight")
    return Picture(path, title, caption)


def pca_rgb(maps: list[np.ndarray]) -> list[np.ndarray]:
    """``(C, h, w)`` feature maps -> ``(h, w, 3)`` floats in 0..1: their three principal
    components, one basis fitted on all maps together so that equal features get equal colours;
    each component stretched between its 1st and 99th percentile."""
    flat = [m.reshape(m.shape[0], -1).T.astype(np.float64) for m in maps]  # (h*w, C)
    stacked = np.concatenate(flat)
    mean = stacked.mean(axis=0)
    centred = stacked - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)
    basis = vectors[:, ::-1][:, :3]  # largest first
    basis = basis * np.sign(basis[np.abs(basis).argmax(axis=0), range(basis.shape[1])])
    projected = centred @ basis
    if projected.shape[1] < 3:
        projected = np.pad(projected, ((0, 0), (0, 3 - projected.shape[1])))
    low, high = np.percentile(projected, [1, 99], axis=0)
    scaled = np.clip((projected - low) / np.maximum(high - low, 1e-12), 0, 1)
    out, start = [], 0
    for m, f in zip(maps, flat, strict=True):
        out.append(scaled[start : start + len(f)].reshape(*m.shape[1:], 3))
        start += len(f)
    return out


def _strip_indices(n: int) -> list[int]:
    if n <= MAX_STRIP:
        return list(range(n))
    return sorted({round(i * (n - 1) / (MAX_STRIP - 1)) for i in range(MAX_STRIP)})


def iterations_picture(ins: Inspection, out: Path) -> Picture:
    """The flow after each iteration on one colour scale, and the convergence curve."""
    shown = _strip_indices(len(ins.flows))
    columns = min(len(shown), 4)
    rows = -(-len(shown) // columns)
    height, width = ins.flows.shape[1:3]
    panel = 3.2
    fig = Figure(figsize=(panel * columns, panel * rows * height / width + 2.8))
    grid = fig.add_gridspec(
        rows + 1, columns, height_ratios=[panel * height / width] * rows + [2.4]
    )
    final = np.linalg.norm(ins.flows[-1], axis=-1)
    scale = float(np.percentile(final, 99.5)) or 1.0
    for slot, index in enumerate(shown):
        ax = fig.add_subplot(grid[slot // columns, slot % columns])
        ax.imshow(flow_to_color(ins.flows[index], max_flow=scale))
        title = f"iteration {index + 1}"
        if ins.epe is not None:
            title += f"  (EPE {ins.epe[index]:.2f})"
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[rows, :])
    steps = np.arange(1, len(ins.flows) + 1)
    ax.plot(steps, ins.delta, "o-", label="mean |f_k - f_(k-1)| (px)")
    ax.plot(steps, ins.update, "s--", label="mean |8 delta f_k| on the 1/8 grid (px)")
    if ins.epe is not None:
        ax.plot(steps, ins.epe, "^-", label="EPE against ground truth (px)")
    if np.all(np.concatenate([ins.delta, ins.update]) > 0):
        ax.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("iteration")
    ax.set_xticks(steps if len(steps) <= 24 else steps[:: max(1, len(steps) // 12)])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    which = (
        f"each of the {ins.iters} GRU iterations"
        if len(shown) == len(ins.flows)
        else f"{len(shown)} of the {ins.iters} GRU iterations (evenly spaced, first and last)"
    )
    caption = (
        f"The upsampled flow after {which} (RAFT adds an update "
        "each step, f_(k+1) = f_k + delta f_k), all drawn with one colour scale "
        f"(saturated at {scale:.1f} px; hue = direction). Below: how far each iteration moved "
        "the flow; a converging network gives a falling curve."
    )
    return _picture(fig, out / "iterations.png", "Flow after each iteration", caption)


def overview_picture(ins: Inspection, out: Path) -> Picture:
    """The two frames with the traced pixels numbered, the final flow (and ground truth)."""
    panels = [("frame 1", ins.image1), ("frame 2", ins.image2)]
    scale = float(np.percentile(np.linalg.norm(ins.flows[-1], axis=-1), 99.5)) or 1.0
    panels.append(("final flow", flow_to_color(ins.flows[-1], max_flow=scale)))
    if ins.gt is not None:
        gt = np.where(ins.gt_valid[..., None], ins.gt, np.nan)
        panels.append(("ground truth", flow_to_color(gt, max_flow=scale)))
    height, width = ins.image1.shape[:2]
    fig = Figure(figsize=(3.6 * len(panels), 3.6 * height / width + 0.5))
    for i, (title, image) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        ax.set_autoscale_on(False)  # a correspondence outside the frame must not shrink it
        for p, (x, y) in enumerate(ins.pixels):
            if i == 1:
                x, y = ins.targets[p]
                if not np.isfinite([x, y]).all():  # invalid ground truth at the pixel
                    continue
            ax.plot(x, y, "o", ms=6, mfc="none", mec=_TARGET, mew=1.5)
            ax.annotate(str(p), (x, y), xytext=(4, 4), textcoords="offset points",
                        color=_TARGET, fontsize=9, weight="bold")  # fmt: skip
    caption = (
        "The input pair with the traced pixels numbered on frame 1 and their correspondences "
        f"({ins.target_source}) on frame 2, the final flow and, when given, the ground truth."
    )
    return _picture(fig, out / "overview.png", "The pair", caption)


def correlation_picture(ins: Inspection, p: int, out: Path) -> Picture:
    """Pixel ``p``'s row of each pyramid level, its lookup windows and the window values."""
    levels, r = ins.levels, ins.radius
    fig = Figure(figsize=(3.9 * levels, 5.8))
    first, last = ins.centres[p, 0], ins.centres[p, -1]
    for k in range(levels):
        ax = fig.add_subplot(2, levels, k + 1)
        level = ins.correlation[k][p]
        window = ins.lookups[p, -1, k]
        low = min(float(level.min()), float(window.min()))
        high = max(float(level.max()), float(window.max()), low + 1e-6)
        image = ax.imshow(level, cmap="viridis", vmin=low, vmax=high)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        for centre, colour, style in ((first, _FIRST, "--"), (last, _LAST, "-")):
            cx, cy = centre / 2.0**k
            ax.add_patch(Rectangle((cx - r - 0.5, cy - r - 0.5), 2 * r + 1, 2 * r + 1,
                                   fill=False, ec=colour, ls=style, lw=1.4))  # fmt: skip
            ax.plot(cx, cy, "+", color=colour, ms=7)
        tx, ty = ins.target_centres[p] / 2.0**k
        ax.plot(tx, ty, "x", color=_TARGET, ms=8, mew=2)
        ax.set_xlim(-0.5, level.shape[1] - 0.5)
        ax.set_ylim(level.shape[0] - 0.5, -0.5)
        ax.set_title(f"level {k}: {level.shape[1]}x{level.shape[0]}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax = fig.add_subplot(2, levels, levels + k + 1)
        extent = (-r - 0.5, r + 0.5, r + 0.5, -r - 0.5)
        ax.imshow(window, cmap="viridis", vmin=low, vmax=high, extent=extent)
        ax.set_title(f"level {k}: window read at iteration {ins.iters}", fontsize=9)
        ax.set_xlabel("dx", fontsize=8)
        ax.set_ylabel("dy", fontsize=8)
        ax.tick_params(labelsize=7)
    x, y = ins.pixels[p]
    cell = ins.cells[p]
    fig.suptitle(f"pixel {p} ({x}, {y}), cell ({cell[0]}, {cell[1]})", fontsize=10)
    caption = (
        f"Pixel {p} at ({x}, {y}): top, its row of the 4D correlation volume at each pyramid "
        f"level (its 1/8-grid cell ({cell[0]}, {cell[1]}) correlated with every position of "
        "frame 2, scaled by 1/sqrt(channels), average-pooled per level; bright = similar). "
        f"The lookup window of radius {r} at the first iteration (white, dashed) and at the "
        f"last (red), and the {ins.target_source} correspondence (cyan x). A peak under the "
        "cyan x means the features match; a window far from it means the flow is off there. "
        "Bottom: the values the motion encoder read in each window at the last iteration, on "
        "the colour scale of the map above (bilinear samples; zeros outside the map)."
    )
    return _picture(
        fig,
        out / f"pixel{p}_correlation.png",
        f"Pixel {p}: correlation pyramid and lookup windows",
        caption,
    )


def features_picture(ins: Inspection, out: Path) -> Picture:
    """PCA-to-RGB of the feature, context and hidden maps."""
    names = ["features1", "features2", "context", "hidden_initial", "hidden_final"]
    titles = ["features, frame 1", "features, frame 2", "context features", "hidden state, start",
              f"hidden state, iteration {ins.iters}"]  # fmt: skip
    colours = pca_rgb([ins.features[n] for n in names[:2]])
    colours += [pca_rgb([ins.features[n]])[0] for n in names[2:3]]
    colours += pca_rgb([ins.features[n] for n in names[3:]])
    h, w = colours[0].shape[:2]
    fig = Figure(figsize=(3.2 * 3, 2 * 3.2 * h / w + 0.8))
    for i, (title, image) in enumerate(zip(titles, colours, strict=True)):
        ax = fig.add_subplot(2, 3, i + 1)
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(2, 3, 6)
    ax.imshow(ins.image1)
    ax.set_title("frame 1", fontsize=9)
    ax.axis("off")
    channels = {n: ins.features[n].shape[0] for n in names}
    caption = (
        "Each map on the 1/8 grid reduced to its three principal components shown as RGB. "
        f"Feature-encoder output ({channels['features1']} channels), frame 1 and 2 on one basis: "
        "equal colours = features the correlation finds similar. Context features "
        f"({channels['context']} channels) and the GRU hidden state ({channels['hidden_initial']}"
        " channels) before the first and after the last iteration, on one basis."
    )
    return _picture(fig, out / "features.png", "Features, context, hidden state", caption)


def upsampling_picture(ins: Inspection, p: int, out: Path) -> Picture | None:
    """The pixel's convex weights and those of its whole cell, or None (bilinear model)."""
    if ins.convex is None:
        return None
    fig = Figure(figsize=(8.0, 3.6))
    ax = fig.add_subplot(1, 2, 1)
    weights = ins.convex[p]
    ax.imshow(weights, cmap="magma", vmin=0, vmax=max(float(weights.max()), 1e-6))
    for (i, j), value in np.ndenumerate(weights):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=9,
                color="black" if value > 0.6 * weights.max() else "white")  # fmt: skip
    ax.set_xticks(range(3), ["-1", "0", "+1"])
    ax.set_yticks(range(3), ["-1", "0", "+1"])
    ax.set_xlabel("neighbour cell dx")
    ax.set_ylabel("neighbour cell dy")
    x, y = ins.pixels[p]
    ax.set_title(f"pixel {p} ({x}, {y})", fontsize=9)
    ax = fig.add_subplot(1, 2, 2)
    mosaic = ins.convex_cell[p].transpose(0, 2, 1, 3).reshape(24, 24)
    ax.imshow(mosaic, cmap="magma", vmin=0, vmax=max(float(mosaic.max()), 1e-6))
    for line in range(3, 24, 3):
        ax.axhline(line - 0.5, color="#444", lw=0.5)
        ax.axvline(line - 0.5, color="#444", lw=0.5)
    sub_y = (y + ins.pads[2]) % 8
    sub_x = (x + ins.pads[0]) % 8
    ax.add_patch(Rectangle((3 * sub_x - 0.5, 3 * sub_y - 0.5), 3, 3, fill=False, ec=_TARGET, lw=2))
    ax.set_title("all 64 pixels of its cell", fontsize=9)
    ax.axis("off")
    caption = (
        f"Convex upsampling at pixel {p}: the full-resolution flow is a weighted mean of the "
        "coarse flow (x8) of the 3x3 neighbouring cells; left, the weights for this pixel "
        "(they sum to 1), right, for each of the 8x8 pixels of its cell (the pixel outlined). "
        "Weights concentrated on one side keep motion boundaries sharp."
    )
    return _picture(
        fig, out / f"pixel{p}_upsampling.png", f"Pixel {p}: convex upsampling weights", caption
    )


def attention_picture(ins: Inspection, p: int, out: Path) -> Picture | None:
    """GMA: the attention row of the pixel's cell over frame 1, or None (RAFT)."""
    if ins.attention is None:
        return None
    attention = ins.attention[p].mean(axis=0)
    h, w = attention.shape
    height, width = ins.image1.shape[:2]
    left, _, top, _ = ins.pads
    extent = (-left - 0.5, 8 * w - left - 0.5, 8 * h - top - 0.5, -top - 0.5)
    fig = Figure(figsize=(9.0, 3.6 * height / width + 0.6))
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(ins.image1)
    ax.imshow(attention, cmap="inferno", alpha=0.65, extent=extent, interpolation="nearest")
    x, y = ins.pixels[p]
    ax.plot(x, y, "o", ms=7, mfc="none", mec=_TARGET, mew=2)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.axis("off")
    ax.set_title("over frame 1", fontsize=9)
    ax = fig.add_subplot(1, 2, 2)
    image = ax.imshow(attention, cmap="inferno", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    ax.plot(*ins.cells[p], "o", ms=7, mfc="none", mec=_TARGET, mew=2)
    ax.set_title("1/8 grid", fontsize=9)
    heads = ins.attention.shape[1]
    caption = (
        f"GMA attention of pixel {p}'s cell over all cells of frame 1 (softmax over the context "
        f"features{', mean of ' + str(heads) + ' heads' if heads > 1 else ''}): the cells whose "
        "motion GMA mixes into this pixel's motion features at every iteration."
    )
    return _picture(fig, out / f"pixel{p}_attention.png", f"Pixel {p}: GMA attention", caption)


def write_pictures(ins: Inspection, output: str | Path) -> list[Picture]:
    """Every picture of the report, in the order the page shows them."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    pictures = [overview_picture(ins, out), iterations_picture(ins, out)]
    for p in range(len(ins.pixels)):
        pictures.append(correlation_picture(ins, p, out))
        pictures += [
            pic
            for pic in (upsampling_picture(ins, p, out), attention_picture(ins, p, out))
            if pic is not None
        ]
    pictures.append(features_picture(ins, out))
    return pictures


_STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em;
       color: #222; background: #fff; }
figure { margin: 1.2em 0 2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.92em; color: #444; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.92em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
"""


def write_report(
    ins: Inspection, pictures: list[Picture], output: str | Path, facts: dict[str, str]
) -> Path:
    """``report.html``: the facts table, then every picture (embedded) with its caption."""
    out = Path(output)
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in facts.items()
    )
    pixel_rows = "".join(
        f"<tr><td>{p}</td><td>{x}, {y}</td><td>{cx}, {cy}</td><td>"
        + (f"{tx:.2f}, {ty:.2f}" if np.isfinite([tx, ty]).all() else "none (invalid there)")
        + "</td></tr>"
        for p, ((x, y), (cx, cy), (tx, ty)) in enumerate(
            zip(ins.pixels.tolist(), ins.cells.tolist(), ins.targets.tolist(), strict=True)
        )
    )
    figures = []
    for pic in pictures:
        data = base64.b64encode(pic.path.read_bytes()).decode("ascii")
        figures.append(
            f"<h2>{html.escape(pic.title)}</h2><figure>"
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(pic.title)}">'
            f"<figcaption>{html.escape(pic.caption)} "
            f"<small>({html.escape(pic.path.name)})</small></figcaption></figure>"
        )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>motionpipe inspect: {html.escape(ins.arch)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>Inside {html.escape(ins.arch)}: {ins.iters} iterations</h1>"
        f"<table>{rows}</table>"
        "<h2>Traced pixels</h2><table><tr><th>#</th><th>pixel (x, y)</th>"
        f"<th>1/8-grid cell</th><th>correspondence ({html.escape(ins.target_source)})</th></tr>"
        f"{pixel_rows}</table>" + "".join(figures) + "</body></html>\n"
    )
    path = out / "report.html"
    write_bytes_atomic(path, page.encode("utf-8"), durable=False)
    return path
