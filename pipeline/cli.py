"""The command-line interface: a thin layer over the library.

Commands:
    pair         flow between two images, written as .flo / .npy / KITTI .png
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import cv2

from models import CORR_KINDS, PAD_MODES, CheckpointError, create_model
from models.raft import ARCHS
from models.registry import DEFAULT_CHECKPOINTS
from stages.flow_io import write_flo, write_flow_npy, write_kitti_png
from stages.flow_viz import flow_to_color

from .devices import PRECISIONS, resolve_device, resolve_precision
from .images import read_rgb, to_model_input

logger = logging.getLogger("motionpipe")

FLOW_FILE_WRITERS = {".flo": write_flo, ".npy": write_flow_npy, ".png": write_kitti_png}


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """motionpipe: optical flow, warping, consistency checks and motion features for video."""
    configure_logging(-1 if quiet else verbose)


@main.command()
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
@click.option("--model", type=click.Choice(ARCHS), default="raft-large", show_default=True)
@click.option(
    "--checkpoint",
    default=None,
    help="Checkpoint file or registry name (default: the architecture's default checkpoint, "
    "downloaded into the cache if missing).",
)
@click.option("--iters", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--pad-mode", type=click.Choice(PAD_MODES), default="sintel", show_default=True)
@click.option("--corr", type=click.Choice(CORR_KINDS), default="all-pairs", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="fp32", show_default=True)
@click.option(
    "--viz",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a colour-wheel visualisation PNG.",
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
    viz: Path | None,
) -> None:
    """Estimate optical flow from IMAGE1 to IMAGE2 (read as RGB)."""
    writer = FLOW_FILE_WRITERS.get(output.suffix.lower())
    if writer is None:
        raise click.BadParameter(
            f"unsupported extension {output.suffix!r}; use one of {', '.join(FLOW_FILE_WRITERS)}",
            param_hint="--output",
        )
    try:
        first, second = read_rgb(image1), read_rgb(image2)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if first.shape != second.shape:
        raise click.ClickException(
            f"images differ in size: {image1} is {first.shape[1]}x{first.shape[0]}, "
            f"{image2} is {second.shape[1]}x{second.shape[0]}"
        )
    try:
        torch_device = resolve_device(device)
        autocast = resolve_precision(precision, torch_device)
        network = create_model(
            model, checkpoint=checkpoint or DEFAULT_CHECKPOINTS[model][0], device=torch_device
        )
        result = network.estimate_flow(
            to_model_input(first, torch_device),
            to_model_input(second, torch_device),
            iters=iters,
            pad_mode=pad_mode,
            corr=corr,
            autocast=autocast,
        )
    except (CheckpointError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    flow = result.flow[0].permute(1, 2, 0).float().cpu().numpy()  # (H, W, 2)
    output.parent.mkdir(parents=True, exist_ok=True)
    writer(output, flow)
    logger.info("wrote %s (%dx%d)", output, flow.shape[1], flow.shape[0])
    if viz is not None:
        viz.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(viz), flow_to_color(flow, convert_to_bgr=True)):
            raise click.ClickException(f"cannot write {viz}")
        logger.info("wrote %s", viz)
