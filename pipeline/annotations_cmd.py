"""``annotations``: (re)write the action-recognition lists of a finished ``run`` folder.

``run`` writes them itself when the configuration selects ``jpg`` output; this command
rewrites them from the folder's manifest and ``config.yaml`` (e.g. with another
``--label-level``) without computing any flow. See :mod:`pipeline.annotations`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click
import pandas as pd

from .annotations import FinishedVideo, write_rawframe_lists
from .config import ConfigError, RunConfig, load_config
from .manifest import MANIFEST_CSV, has_manifest

LABEL_LEVEL_HELP = (
    "Which folder above each video names its class in the action-recognition lists "
    "(1: the folder holding the video, as in UCF101/HMDB51/Kinetics trees; 2: the one above; "
    "0: no labels)."
)


def write_run_annotations(
    out_root: Path, config: RunConfig, videos: Iterable[FinishedVideo], label_level: int
) -> dict[str, Path]:
    """The lists of :mod:`pipeline.annotations` for a run with ``config`` (its jpg layout and
    whether RGB frames were written)."""
    return write_rawframe_lists(
        out_root,
        videos,
        config.output.jpg_layout,
        rgb=config.output.write_rgb,
        label_level=label_level,
    )


def describe(written: dict[str, Path]) -> str:
    """One line for the terminal: where the lists are and what they hold."""
    count = len(written["flow_list"].read_text(encoding="utf-8").splitlines())
    classes = written.get("classes")
    n_classes = len(classes.read_text(encoding="utf-8").splitlines()) if classes else 0
    labels = f"{n_classes} classes in {classes}" if classes else "no labels"
    return f"action-recognition lists: {written['flow_list']} ({count} videos, {labels})"


@click.command("annotations")
@click.argument("output", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--label-level", type=click.IntRange(min=0), default=1, show_default=True, help=LABEL_LEVEL_HELP
)
def annotations_command(output: Path, label_level: int) -> None:
    """Write mmaction2 annotation lists (rawframes_flow.txt, rawframes_rgb.txt, classes.txt,
    mmaction2_rawframes.py) for the finished videos of the run folder OUTPUT."""
    if not has_manifest(output):
        raise click.ClickException(f"{output} holds no motionpipe run (no {MANIFEST_CSV})")
    try:
        config = load_config(output / "config.yaml")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if "jpg" not in config.output.formats:
        raise click.ClickException(
            f"the run in {output} wrote no flow JPEGs (output.formats: "
            f"{', '.join(config.output.formats)})"
        )
    table = pd.read_csv(output / MANIFEST_CSV, keep_default_na=False)
    videos = [
        FinishedVideo(str(row.video_id), int(row.frames), int(row.pairs))
        for row in table.itertuples()
        if row.status == "ok"
    ]
    written = write_run_annotations(output, config, videos, label_level)
    click.echo(describe(written))
