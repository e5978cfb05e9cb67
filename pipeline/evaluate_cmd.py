"""``evaluate``: the CLI over :mod:`pipeline.evaluate`."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np

from models import PAD_MODES, CheckpointError
from models.raft import ARCHS
from stages.training.readers import READER_KINDS, FlowPair, FlowReader, open_reader
from stages.training.textures import find_media, load_media_frames
from stages.training.validation import (
    VALIDATION_FRAMES_PER_VIDEO,
    VALIDATION_SETS,
    build_validation_set,
)

from .cli_common import refine_option
from .config import ConfigError
from .estimators import build_estimator
from .evaluate import evaluate_dataset, remove_earlier_outputs, resolve_pad_mode
from .progress import ShowProgress, progress_option
from .run_start import RunStartError, check_output_root

logger = logging.getLogger(__name__)

EVALUATION_MODELS: tuple[str, ...] = ("auto", "dis", *ARCHS)


def _generated_set(name: str, pairs: int, seed: int, textures: tuple[Path, ...]):
    media = []
    if textures:
        files = find_media(textures)
        if not files:
            raise click.ClickException(f"no images or videos under {', '.join(map(str, textures))}")
        media = load_media_frames(files, frames_per_video=VALIDATION_FRAMES_PER_VIDEO)
        if not media:
            raise click.ClickException(f"none of the {len(files)} media files could be read")
    label, generated = build_validation_set(name, pairs=pairs, seed=seed, media_frames=media)
    return label, [
        FlowPair(
            image1=p.image1,
            image2=p.image2,
            flow=p.flow,
            valid=np.ones(p.flow.shape[:2], np.float32),
            occluded=p.occluded,
            sequence=label,
            frame=index,
            name=f"{label}/{index:04d}",
        )
        for index, p in enumerate(generated)
    ]


@click.command("evaluate")
@click.argument("dataset", type=click.Choice([*READER_KINDS, *VALIDATION_SETS]))
@click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The data set's folder as distributed (not for layered / photo).",
)  # fmt: skip
@click.option("--split", default="training", show_default=True, help="Split with ground truth.")
@click.option(
    "--variant", default=None,
    help="Sintel clean|final; FlyingThings3D frames_cleanpass|frames_finalpass [clean].",
)  # fmt: skip
@click.option("--model", type=click.Choice(EVALUATION_MODELS), default="auto", show_default=True)
@click.option(
    "--checkpoint", default=None,
    help="Checkpoint file or registry name ('random': untrained weights). Default: the "
    "architecture's default checkpoint.",
)  # fmt: skip
@click.option("--iters", type=click.IntRange(min=1), default=12, show_default=True)
@click.option(
    "--pad-mode", type=click.Choice(["auto", *PAD_MODES]), default="auto", show_default=True,
    help="auto: kitti for kitti / hd1k, sintel otherwise.",
)  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps")
@refine_option()
@click.option("--max-pairs", type=click.IntRange(min=1), default=None, help="Only the first N.")
@click.option(
    "--pixels", type=click.Choice(["valid", "all"]), default="valid", show_default=True,
    help="all: every pixel against the flow file as stored, Sintel's invalid ones included "
    "(RAFT's validate_sintel); dense ground truth only.",
)  # fmt: skip
@click.option(
    "--pairs", "num_pairs", type=click.IntRange(min=1), default=32, show_default=True,
    help="layered / photo: pairs to generate.",
)  # fmt: skip
@click.option("--seed", type=int, default=2026, show_default=True, help="layered / photo seed.")
@click.option(
    "--textures", multiple=True, type=click.Path(exists=True, path_type=Path),
    help="layered / photo: media folders or files for textures (repeatable).",
)  # fmt: skip
@click.option(
    "-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Folder for pairs.csv, pairs.parquet, sequences.csv, summary.json.",
)  # fmt: skip
@progress_option
def evaluate(
    dataset: str,
    root: Path | None,
    split: str,
    variant: str | None,
    model: str,
    checkpoint: str | None,
    iters: int,
    pad_mode: str,
    device: str,
    refine: str,
    max_pairs: int | None,
    pixels: str,
    num_pairs: int,
    seed: int,
    textures: tuple[Path, ...],
    output: Path,
    progress: ShowProgress,
) -> None:
    """Measure a flow model against the ground truth of DATASET (EPE, outliers, Fl)."""
    try:  # before any pair is evaluated
        check_output_root(output)
    except RunStartError as exc:
        raise click.ClickException(str(exc)) from None
    info: dict = {}
    if dataset in READER_KINDS:
        if root is None:
            raise click.ClickException(f"data set {dataset} needs --root (its folder)")
        try:
            data = open_reader(dataset, root, split=split, variant=variant)
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        if pixels == "all":
            _require_dense(data)
        info = {"root": str(root), "split": split, "variant": data.variant}
        label = dataset
    else:
        if root is not None:
            raise click.BadParameter(
                f"{dataset} pairs are generated; --root is for data sets on disk",
                param_hint="--root",
            )
        label, data = _generated_set(dataset, num_pairs, seed, textures)
        info = {"seed": seed, "generated_pairs": num_pairs}
    try:
        estimator = build_estimator(
            model,
            checkpoint=checkpoint,
            iters=iters,
            pad_mode=resolve_pad_mode(pad_mode, dataset),
            device=device,
            refine=refine,
        )
    except (CheckpointError, ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if max_pairs is not None:
        info["max_pairs"] = max_pairs  # a partial evaluation says so
    try:
        remove_earlier_outputs(output)  # a failed run must not leave the last one's tables
        result = evaluate_dataset(
            data,
            estimator,
            dataset=label,
            max_pairs=max_pairs,
            info=info,
            progress=progress,
            every_pixel=pixels == "all",
        )
        paths = result.write(output)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.table())
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


def _require_dense(data: FlowReader) -> None:
    """``--pixels all`` scores the flow files as stored at every pixel: refuse, before any
    estimate, a data set whose ground truth (or any of its files) is sparse (KITTI PNG)."""
    if data.sparse:
        raise click.BadParameter(
            f"{data.title} has ground truth only at its valid pixels", param_hint="--pixels"
        )
    sparse = [pair.flow for pair in data.files if pair.flow.suffix.lower() == ".png"]
    if sparse:
        others = f" and {len(sparse) - 1} other(s)" if len(sparse) > 1 else ""
        raise click.BadParameter(
            f"{sparse[0]}{others}: sparse ground truth (KITTI PNG), flow only at its valid pixels",
            param_hint="--pixels",
        )
