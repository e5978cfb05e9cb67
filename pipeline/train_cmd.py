"""``train``: the CLI over :mod:`pipeline.training`."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from models import CheckpointError

from .cli_common import parse_set_options
from .config import ConfigError
from .train_config import load_train_config
from .training import Trainer, TrainingError

logger = logging.getLogger(__name__)


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Training preset (configs/train-*.yaml); defaults apply to missing keys.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Run folder: state, checkpoints, log, curves, final model.pth.",
)  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT where it stopped.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Total steps.")
@click.option("--init-checkpoint", default=None, help="Start from these weights (fine-tuning).")
@click.option(
    "--stop-after", type=click.IntRange(min=1), default=None,
    help="Train this many steps now, save, and exit (resume later with --resume).",
)  # fmt: skip
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
def train(
    config_path: Path | None,
    output: Path,
    resume: bool,
    steps: int | None,
    init_checkpoint: str | None,
    stop_after: int | None,
    sets: tuple[str, ...],
) -> None:
    """Train a RAFT-family model (synthetic data built in, or data sets on disk) into OUTPUT."""
    overrides = {"steps": steps, "init_checkpoint": init_checkpoint, **parse_set_options(sets)}
    try:
        config = load_train_config(config_path, overrides)
        result = Trainer(config, output, resume=resume).run(stop_after=stop_after)
    except (ConfigError, TrainingError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from None
    if result.weights is not None:
        click.echo(f"trained {result.step} steps; weights: {result.weights}")
    else:
        click.echo(f"stopped at step {result.step}; continue with --resume -o {output}")
