"""The command-line interface: a thin layer over the library.

Commands:
    run          flow (and every selected output) for a video or a folder of videos
    pair         flow between two images, written as .flo / .npy / KITTI .png
    example      write the bundled example clip (generated, no third-party media)
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

from .config import FLOW_FORMATS, FLOW_MODELS, ConfigError, dump_config, load_config
from .devices import PRECISIONS, resolve_device, resolve_precision
from .discovery import discover
from .example import write_example_clip
from .images import read_rgb, to_model_input
from .runner import build_flow_session, process_video

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


def _parse_set(values: tuple[str, ...]) -> dict[str, str]:
    overrides = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        overrides[key.strip()] = value.strip()
    return overrides


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", type=click.Choice(FLOW_MODELS), help="Flow model (default: auto).")
@click.option("--checkpoint", help="Checkpoint file or registry name.")
@click.option("--iters", type=click.IntRange(min=1))
@click.option("--device", help="auto, cpu, cuda, cuda:1, mps")
@click.option("--precision", type=click.Choice(list(PRECISIONS)))
@click.option("--formats", help=f"Comma-separated subset of {','.join(FLOW_FORMATS)}.")
@click.option("--decoder", type=click.Choice(["decord", "pyav", "opencv"]))
@click.option("--chunk-size", type=click.IntRange(min=1), help="Pairs per chunk.")
@click.option("--gap", type=click.IntRange(min=1), help="Pair gap k: pairs (t, t+k).")
@click.option("--backward/--no-backward", default=None, help="Also backward flow.")
@click.option("--warm-start/--no-warm-start", default=None)
@click.option("--corr", type=click.Choice(["auto", *CORR_KINDS]))
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any config key, e.g. --set decode.stride=2.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def run(
    input_path: Path, output: Path, config_path: Path | None, progress: bool, settings, **flags
) -> None:
    """Estimate flow for INPUT (a video file or a folder of videos) into OUTPUT.

    Each video gets a folder OUTPUT/<relative path without extension>/ with the selected
    formats, timestamps.csv, pairs.csv and meta.json (written last). The resolved
    configuration is saved as OUTPUT/config.yaml.
    """
    names = {
        "model": "flow.model", "checkpoint": "flow.checkpoint", "iters": "flow.iters",
        "device": "flow.device", "precision": "flow.precision", "formats": "output.formats",
        "decoder": "decode.backend", "chunk_size": "decode.chunk_size", "gap": "flow.gap",
        "backward": "flow.backward", "warm_start": "flow.warm_start", "corr": "flow.corr",
    }  # fmt: skip
    overrides = {names[k]: v for k, v in flags.items()}
    overrides.update(_parse_set(settings))
    try:
        config = load_config(config_path, overrides)
        jobs = discover(input_path)
    except (ConfigError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    if not jobs:
        raise click.ClickException(f"no videos found in {input_path}")
    output.mkdir(parents=True, exist_ok=True)
    dump_config(config, output / "config.yaml")
    try:
        session = build_flow_session(config)
    except (CheckpointError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if session.choice.notice:
        click.echo(f"notice: {session.choice.notice}", err=True)
    results = [
        process_video(
            job.path, output / job.video_id, job.video_id, config, session, progress=progress
        )
        for job in jobs
    ]
    failed = [r for r in results if r.status != "ok"]
    for r in results:
        detail = f"{r.frames} frames, {r.pairs} pairs, {r.seconds.get('total', 0):.1f} s"
        click.echo(
            f"{r.status:6s} {r.video_id}: "
            + (detail if r.status == "ok" else f"{r.error_type}: {r.error}")
        )
    click.echo(f"{len(results) - len(failed)} ok, {len(failed)} failed; outputs in {output}")
    if failed:
        sys.exit(1)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="example.mp4")
@click.option("--frames", type=click.IntRange(min=2), default=48, show_default=True)
def example(path: Path, frames: int) -> None:
    """Write the bundled example clip (a generated 320x240 scene with known motion) to PATH."""
    write_example_clip(path, num_frames=frames)
    click.echo(f"wrote {path}")


# Commands defined in their own modules.
from .consistency_cmd import consistency_command  # noqa: E402

main.add_command(consistency_command)
