"""``pair``: flow between two images; ``example``: the bundled example clip."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
import cv2
import numpy as np

from models import CheckpointError
from stages.flow_io import write_flo, write_flow_npy, write_kitti_png
from stages.flow_viz import flow_to_color, largest_magnitude, legend_panel
from stages.image_io import write_image

from .cli_common import corr_option, device_option, iters_option, pad_mode_option, refine_option
from .config import FLOW_MODELS, FlowConfig
from .devices import PRECISIONS
from .estimators import build_estimator
from .example import write_example_clip
from .images import read_rgb_pair

logger = logging.getLogger("motionpipe")

FLOW_FILE_WRITERS = {".flo": write_flo, ".npy": write_flow_npy, ".png": write_kitti_png}


@click.command("pair")
@click.argument("image1", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("image2", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Flow file; the extension picks the format: .flo (Middlebury), .npy (float32 "
    "(H, W, 2), channel 0 = x), .png (KITTI 16-bit).",
)
@click.option(
    "--model",
    type=click.Choice(FLOW_MODELS),
    default=FlowConfig.model,
    show_default=True,
    help="auto: a cached official checkpoint, else the shipped model (raft-small-convex).",
)
@click.option(
    "--checkpoint",
    default=None,
    help="Checkpoint file or registry name (default: the architecture's default checkpoint, "
    "downloaded into the cache if missing).",
)
@iters_option
@pad_mode_option
@corr_option
@device_option
@click.option(
    "--precision",
    type=click.Choice(list(PRECISIONS)),
    default=FlowConfig.precision,
    show_default=True,
)
@refine_option()
@click.option(
    "--viz",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a colour-wheel picture of the flow, with its legend (rim = the largest "
    "motion) on the right.",
)
def pair(
    image1: Path,
    image2: Path,
    output: Path,
    model: str,
    checkpoint: str | None,
    iters: int,
    pad_mode: str,
    corr: str,
    device: str,
    precision: str,
    refine: str,
    viz: Path | None,
) -> None:
    """Estimate optical flow from IMAGE1 to IMAGE2 (read as RGB)."""
    writer = FLOW_FILE_WRITERS.get(output.suffix.lower())
    if writer is None:
        raise click.BadParameter(
            f"unsupported extension {output.suffix!r}; use one of {', '.join(FLOW_FILE_WRITERS)}",
            param_hint="--output",
        )
    if viz is not None and not cv2.haveImageWriter(str(viz)):
        raise click.BadParameter(
            f"no image format for {viz.name!r}; use .png or .jpg", param_hint="--viz"
        )
    if viz is not None and _same_file(output, viz):
        raise click.BadParameter(
            f"{viz} is also the flow file (-o); give the picture another name", param_hint="--viz"
        )
    for path, role in ((output, "-o"), (viz, "--viz")):
        for image in (image1, image2):
            if path is not None and _same_file(path, image):
                raise click.BadParameter(
                    f"{path} is an input image; writing there would replace it",
                    param_hint=role,
                )
    for path in (output, viz):  # before the flow is computed: a bad path fails at once
        if path is not None:
            _make_parent(path)
    try:
        first, second = read_rgb_pair(image1, image2)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        estimator = build_estimator(
            model, checkpoint=checkpoint, iters=iters, pad_mode=pad_mode, device=device,
            corr=corr, precision=precision, refine=refine,
        )  # fmt: skip
        logger.info("estimator: %s", estimator.describe())
        flow = estimator(first, second)  # (H, W, 2)
    except (CheckpointError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        writer(output, flow)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    logger.info("wrote %s (%dx%d)", output, flow.shape[1], flow.shape[0])
    if viz is not None:
        rim = largest_magnitude(flow)
        picture = np.concatenate(
            [flow_to_color(flow, max_flow=rim), legend_panel(flow.shape[0], rim, "max")], axis=1
        )
        try:
            write_image(viz, picture)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"cannot write {viz}: {exc}") from None
        logger.info("wrote %s", viz)


@click.command("example")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="example.mp4")
@click.option("--frames", type=click.IntRange(min=2), default=48, show_default=True)
def example(path: Path, frames: int) -> None:
    """Write the bundled example clip (a generated 320x240 scene with known motion) to PATH."""
    if path.suffix.lower() != ".mp4":
        raise click.BadParameter(
            f"the example clip is an MP4 file: name it *.mp4, not {path.name!r}", param_hint="PATH"
        )
    _make_parent(path)
    try:
        write_example_clip(path, num_frames=frames)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"wrote {path}")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (resolved; existing or not)."""
    return os.path.normcase(a.resolve()) == os.path.normcase(b.resolve())


def _make_parent(path: Path) -> None:
    """Creates the folder ``path`` goes in; a path that cannot hold a file is a usage error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise click.ClickException(f"cannot write {path}: a file is in the way") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise click.ClickException(f"{path} is a folder; give a file name")
    if not os.access(path.parent, os.W_OK):
        raise click.ClickException(f"cannot write {path}: the folder is not writable")
