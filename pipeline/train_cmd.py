"""``train``: the CLI over :mod:`pipeline.training`."""

from __future__ import annotations

import errno
import json
import logging
import re
from pathlib import Path

import click
import yaml

from models import CheckpointError
from models.weights import BUNDLED_DIR, WEIGHTS

from .cli_common import merge_overrides
from .config import ConfigError
from .progress import ShowProgress, progress_option
from .train_config import load_train_config
from .training import STATE_FILE, Trainer, TrainingError
from .training_log import read_log
from .training_weights import export_weights

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
@progress_option
def train(
    config_path: Path | None,
    output: Path,
    resume: bool,
    steps: int | None,
    init_checkpoint: str | None,
    stop_after: int | None,
    sets: tuple[str, ...],
    progress: ShowProgress,
) -> None:
    """Train a RAFT-family model (synthetic data built in, or data sets on disk) into OUTPUT."""
    overrides = merge_overrides({"steps": steps, "init_checkpoint": init_checkpoint}, sets)
    if resume and config_path is None and (output / "config.yaml").is_file():
        config_path = output / "config.yaml"  # the run's own configuration
    try:
        config = load_train_config(config_path, overrides)
        result = Trainer(config, output, resume=resume).run(
            stop_after=stop_after, progress=progress
        )
    except (ConfigError, TrainingError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # disk full, folder not writable: the last saved state is intact
        room = "make room and " if exc.errno == errno.ENOSPC else ""
        again = (
            f"continue from the last saved state with --resume -o {output}"
            if (output / STATE_FILE).is_file()
            else "run the command again (no state was saved yet)"
        )
        raise click.ClickException(f"training stopped: {exc}; {room}{again}") from None
    if result.weights is not None:
        click.echo(f"trained {result.step} steps; weights: {result.weights}")
    else:
        click.echo(f"stopped at step {result.step}; continue with --resume -o {output}")
        if result.signal is not None:  # a scheduler or `train && export-model` must not see success
            raise SystemExit(128 + result.signal)


@click.command("export-model")
@click.argument("weights", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to write (.pth); a .json sidecar with its provenance goes beside it.")  # fmt: skip
@click.option("--half", is_flag=True, help="Store float16 tensors (half the size).")
@click.option(
    "--run", "runs", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Training run folder(s) that made the weights, in order (their config.yaml is recorded; "
    "a first run that started from a bundled model also records that model's stages).",
)  # fmt: skip
@click.option("--name", default=None, help="Name recorded in the sidecar.")
def export_model(
    weights: Path, output: Path, half: bool, runs: tuple[Path, ...], name: str | None
) -> None:
    """Package trained WEIGHTS for distribution: official layout, optional float16, and a JSON
    sidecar with the training configs, seeds and the file's SHA-256."""
    if output.suffix.lower() == ".json":
        raise click.ClickException(
            f"{output}: the checkpoint needs another suffix than .json (its sidecar is "
            f"{output.with_suffix('.json').name}, which would overwrite it)"
        )
    stages = []
    for run in runs:
        config_file = run / "config.yaml"
        if not config_file.is_file():
            raise click.ClickException(f"{run} has no config.yaml: not a training run folder")
        config = yaml.safe_load(config_file.read_text())
        stages.append({"run": run.name, "seed": config.get("seed"),
                       "steps_trained": _last_logged_step(run), "config": config})  # fmt: skip
    if stages:
        from models.weights import infer_architecture, load_checkpoint

        try:
            arch = infer_architecture(load_checkpoint(weights))
        except CheckpointError as exc:
            raise click.ClickException(str(exc)) from None
        trained = stages[-1]["config"].get("model")
        if trained is not None and trained != arch:
            raise click.ClickException(
                f"{weights} is a {arch} checkpoint but the last --run, {runs[-1]}, trained "
                f"{trained}: the sidecar would record another model's recipe"
            )
    _steps_handed_on(stages, weights)
    if stages:
        stages = _inherited_stages(stages[0]["config"].get("init_checkpoint")) + stages
    try:
        record = export_weights(
            weights, output, half=half,
            provenance={"name": name or output.stem, "source": weights.name, "training": stages},
        )  # fmt: skip
    except (CheckpointError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({k: record[k] for k in ("file", "architecture", "dtype", "bytes",
                                                 "sha256")}))  # fmt: skip


def _steps_handed_on(stages: list[dict], weights: Path) -> None:
    """A stage that started from an earlier run's ``checkpoints/step_N.pth`` took that run at
    step N, whatever the earlier run did afterwards: its ``steps_trained`` becomes N. So does
    the last run's when the exported ``weights`` are such a snapshot of it."""
    handed_on = [Path(str(s["config"].get("init_checkpoint") or "")) for s in stages[1:]]
    for earlier, start in zip(stages, [*handed_on, weights], strict=False):  # none: no stage
        match = re.fullmatch(r"step_(\d+)\.pth", start.name)
        if (
            match
            and start.parent.name == "checkpoints"
            and start.parent.parent.name == earlier["run"]
        ):
            earlier["steps_trained"] = int(match.group(1))


def _inherited_stages(init_checkpoint: str | None) -> list[dict]:
    """The recorded stages of a bundled model the first run started from (its sidecar's
    ``training``), so a fine-tune of the shipped model carries the whole recipe."""
    spec = WEIGHTS.get(str(init_checkpoint)) if init_checkpoint else None
    if spec is None or not spec.bundled:
        return []
    sidecar = (BUNDLED_DIR / spec.file_name).with_suffix(".json")
    try:
        return list(json.loads(sidecar.read_text())["training"])
    except (OSError, ValueError, KeyError) as exc:
        raise click.ClickException(
            f"{init_checkpoint} is a bundled model but its provenance {sidecar} cannot be read "
            f"({exc}); the exported sidecar would lose its earlier stages"
        ) from None


def _last_logged_step(run: Path) -> int | None:
    """The last step in a run's ``log.jsonl``: where a run stopped with ``--stop-after``
    may be before its configured ``steps``."""
    return max((record["step"] for record in read_log(run)), default=None)
