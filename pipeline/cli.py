"""The command-line interface: the ``motionpipe`` group and the table of its commands.

Each command lives in its own module beside its library and is imported only when it runs
(or shows its own ``--help``), so ``motionpipe --help`` does not load torch:

    run          flow (and every selected output) for videos         run_cmd.py
    pair         flow between two images                             pair_cmd.py
    example      write the bundled example clip                      pair_cmd.py
    annotations  action-recognition lists for a finished run         annotations_cmd.py
    config show  every configuration key                             config_cmd.py
    consistency, train, export-model, evaluate, inspect              their *_cmd.py

Adding a command: write it in its module and add a :data:`COMMANDS` entry; a test checks that
each entry's summary is its command's own first paragraph.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click

from .logs import configure_logging
from .startup import imports


@dataclass(frozen=True)
class CommandEntry:
    """Where a command is defined (``module``, ``attribute``) and its one-paragraph summary,
    listed by ``motionpipe --help`` without importing the module."""

    module: str
    attribute: str
    summary: str


COMMANDS: dict[str, CommandEntry] = {
    "annotations": CommandEntry(
        "pipeline.annotations_cmd",
        "annotations_command",
        "Write mmaction2 annotation lists (rawframes_flow.txt, rawframes_rgb.txt, classes.txt, "
        "split lists, mmaction2_rawframes.py) for the finished videos of the run folder OUTPUT.",
    ),
    "config": CommandEntry(
        "pipeline.config_cmd", "config_group", "The run configuration: keys, defaults, presets."
    ),
    "consistency": CommandEntry(
        "pipeline.consistency_cmd",
        "consistency_command",
        "Warping error (E_warp) of PROCESSED against SOURCE, with SOURCE's own as the baseline.",
    ),
    "evaluate": CommandEntry(
        "pipeline.evaluate_cmd",
        "evaluate",
        "Measure a flow model against the ground truth of DATASET (EPE, outliers, Fl).",
    ),
    "example": CommandEntry(
        "pipeline.pair_cmd",
        "example",
        "Write the bundled example clip (a generated 320x240 scene with known motion) to PATH.",
    ),
    "export-model": CommandEntry(
        "pipeline.train_cmd",
        "export_model",
        "Package trained WEIGHTS for distribution: official layout, optional float16, and a "
        "JSON sidecar with the training configs, seeds and the file's SHA-256.",
    ),
    "inspect": CommandEntry(
        "pipeline.inspect_cmd",
        "inspect",
        "Show what the network computes at each step for one pair IMAGE1 IMAGE2 (or --video).",
    ),
    "pair": CommandEntry(
        "pipeline.pair_cmd", "pair", "Estimate optical flow from IMAGE1 to IMAGE2 (read as RGB)."
    ),
    "run": CommandEntry("pipeline.run_cmd", "run", "Estimate flow for INPUT into OUTPUT."),
    "train": CommandEntry(
        "pipeline.train_cmd",
        "train",
        "Train a RAFT-family model (synthetic data built in, or data sets on disk) into OUTPUT.",
    ),
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when the command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        with imports():
            return getattr(importlib.import_module(entry.module), entry.attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from the summaries, shortened as click does."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [
            (name, click.Command(name, help=COMMANDS[name].summary).get_short_help_str(limit))
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More log output: -v adds a line per finished video, -vv debug messages.",
)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """motionpipe: optical flow, warping, consistency checks and motion features for video."""
    configure_logging(-1 if quiet else verbose)
