"""``inspect``: the CLI over :mod:`pipeline.inspect` and :mod:`pipeline.inspect_report`."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from models import CheckpointError, create_model
from models.raft import ARCHS
from models.weights import default_checkpoint
from stages.decode import DecodeError
from stages.settings import correlation_kind

from .cli_common import (
    checkpoint_option,
    corr_option,
    device_option,
    iters_option,
    pad_mode_option,
)
from .config import FlowConfig
from .devices import resolve_device
from .images import read_rgb_pair
from .inspect import (
    MAX_PIXELS,
    check_pixels,
    default_pixel,
    inspect_pair,
    read_ground_truth,
    read_video_pair,
    save_arrays,
)
from .model_choice import RANDOM_WEIGHTS, choose_model

logger = logging.getLogger(__name__)


def _parse_pixels(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]):
    pixels = []
    for value in values:
        parts = value.replace(" ", "").split(",")
        try:
            x, y = (int(part) for part in parts)
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not a pixel; write X,Y with integers, e.g. 120,64", ctx, param
            ) from None
        pixels.append((x, y))
    if len(pixels) > MAX_PIXELS:
        raise click.BadParameter(
            f"{len(pixels)} pixels given ({' '.join(values)}); at most {MAX_PIXELS}", ctx, param
        )
    return pixels


def _load_pair(images: tuple[Path, ...], video: Path | None, frame: int | None):
    if video is None and frame is not None:
        raise click.UsageError("--frame picks a pair of --video's frames: give --video too")
    frame = frame or 0
    if video is not None:
        if images:
            raise click.UsageError("give either IMAGE1 IMAGE2 or --video, not both")
        try:
            first, second = read_video_pair(video, frame)
        except DecodeError as exc:
            raise click.ClickException(str(exc)) from None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--frame") from None
        return first, second, f"{video}, frames {frame} and {frame + 1}"
    if len(images) != 2:
        raise click.UsageError(f"need IMAGE1 IMAGE2 (or --video), got {len(images)} image(s)")
    try:
        first, second = read_rgb_pair(images[0], images[1])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    return first, second, f"{images[0]} -> {images[1]}"


@click.command("inspect")
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Folder for report.html, the PNGs and the .npz arrays.",
)  # fmt: skip
@click.option("--video", type=click.Path(path_type=Path), default=None,
              help="Take the pair from a video (or frame folder) instead of two images.")  # fmt: skip
@click.option("--frame", type=click.IntRange(min=0), default=None,
              help="With --video: the pair (FRAME, FRAME + 1), decoded frame indices "
              "[default: 0].")  # fmt: skip
@click.option(
    "--model", type=click.Choice(["auto", *ARCHS]), default="auto", show_default=True,
    help="auto: as run chooses, a cached official checkpoint, else the shipped model.",
)  # fmt: skip
@checkpoint_option
@iters_option
@click.option(
    "--pixel", "pixels", multiple=True, metavar="X,Y", callback=_parse_pixels,
    help=f"Pixel to trace, input coordinates (repeatable, at most {MAX_PIXELS}). "
    "Default: the image centre.",
)  # fmt: skip
@pad_mode_option
@corr_option
@click.option("--gt", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Ground-truth flow (.flo, .npy, KITTI .png): EPE per iteration, true "
              "correspondences in the pictures.")  # fmt: skip
@device_option
def inspect(
    images: tuple[Path, ...],
    output: Path,
    video: Path | None,
    frame: int | None,
    model: str,
    checkpoint: str | None,
    iters: int,
    pixels: list[tuple[int, int]],
    pad_mode: str,
    corr: str,
    gt: Path | None,
    device: str,
) -> None:
    """Show what the network computes at each step for one pair IMAGE1 IMAGE2 (or --video).

    Writes OUTPUT/report.html (one self-contained page), the pictures it shows,
    iterations.npz (flow after each iteration), correlation.npz (each pixel's rows of the
    correlation pyramid and lookup windows), and upsampling.npz / attention.npz where the model
    has convex upsampling / GMA attention.
    """
    first, second, source = _load_pair(images, video, frame)
    height, width = first.shape[:2]
    pixels = list(pixels) or [default_pixel(width, height)]
    try:
        check_pixels(pixels, width, height)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--pixel") from None
    truth = None
    if gt is not None:
        try:
            truth = read_ground_truth(gt)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--gt") from None
        if truth[0].shape[:2] != (height, width):
            raise click.BadParameter(
                f"{gt} is {truth[0].shape[1]}x{truth[0].shape[0]}, the frames {width}x{height}",
                param_hint="--gt",
            )
    if model == "auto":  # with --checkpoint: its architecture; else as run chooses
        try:
            choice = choose_model(FlowConfig(model="auto", checkpoint=checkpoint))
        except (CheckpointError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--checkpoint") from None
        if choice.model == "dis":  # no network at hand offline
            raise click.ClickException(choice.notice or "no network checkpoint available")
        model, checkpoint = choice.model, choice.checkpoint
    if checkpoint == RANDOM_WEIGHTS:
        logger.warning("--checkpoint random: untrained weights, the flow is meaningless")
        weights = None
    else:
        weights = checkpoint or default_checkpoint(model)
    try:
        torch_device = resolve_device(device)
        network = create_model(model, checkpoint=weights, device=torch_device)
        padded_height, padded_width = network.padder(height, width, mode=pad_mode).padded_size
        corr = correlation_kind(
            corr, padded_height * padded_width, FlowConfig.on_demand_above_pixels
        )
        result = inspect_pair(
            network, first, second, pixels=pixels, iters=iters, pad_mode=pad_mode, corr=corr,
            gt=truth,
        )  # fmt: skip
    except (CheckpointError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    from .inspect_report import write_pictures, write_report  # matplotlib: only when drawing

    arrays = save_arrays(result, output)
    pictures = write_pictures(result, output)
    facts = {
        "input": source,
        "size": f"{width}x{height}",
        "model": model,
        "checkpoint": "random (untrained)" if weights is None else str(weights),
        "iterations": str(iters),
        "padding": f"{pad_mode}, (left, right, top, bottom) = {result.pads}",
        "correlation": corr,
        "device": str(torch_device),
        "last iteration moved the flow by": f"{result.delta[-1]:.4f} px on average",
    }
    if result.epe is not None:
        facts["EPE after the last iteration"] = f"{result.epe[-1]:.3f} px"
    report = write_report(result, pictures, output, facts)
    click.echo(f"wrote {report}, {len(pictures)} pictures, {', '.join(p.name for p in arrays)}")
