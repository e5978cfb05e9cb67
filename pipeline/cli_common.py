"""Options and option parsing shared by the CLI commands."""

from __future__ import annotations

from typing import Any

import click
import yaml

from models import PAD_MODES
from stages.flow_refine import REFINE_CHOICES

from .config import CORR_CHOICES, EXPLICIT_NULL, FlowConfig, parse_yaml

checkpoint_option = click.option(
    "--checkpoint",
    default=None,
    help="Checkpoint file or registry name ('random': untrained weights). Default: the "
    "architecture's default checkpoint.",
)
"""``--checkpoint`` of the commands that run one network (``inspect``, ``evaluate``)."""

iters_option = click.option(
    "--iters", type=click.IntRange(min=1), default=FlowConfig.iters, show_default=True
)
"""``--iters``: refinement iterations, by default the ``flow.iters`` default."""

pad_mode_option = click.option(
    "--pad-mode", type=click.Choice(PAD_MODES), default=FlowConfig.pad_mode, show_default=True
)
"""``--pad-mode`` of the commands that run one network on a pair (``pair``, ``inspect``)."""

corr_option = click.option(
    "--corr",
    type=click.Choice(CORR_CHOICES),
    default=FlowConfig.corr,
    show_default=True,
    help="Correlation volume; auto: on-demand above flow.on_demand_above_pixels padded pixels "
    "(as run), else all-pairs.",
)
"""``--corr`` of ``pair`` and ``inspect``, with ``flow.corr``'s choices and default."""

device_option = click.option(
    "--device", default=FlowConfig.device, show_default=True, help="auto, cpu, cuda, cuda:1, mps"
)
"""``--device`` of the commands that run one network (``pair``, ``inspect``)."""


def refine_option(default: str | None = FlowConfig.refine):
    """``--refine`` (``flow.refine``); ``default=None`` for ``run``, where the config decides."""
    return click.option(
        "--refine",
        type=click.Choice(REFINE_CHOICES),
        default=default,
        show_default=default is not None,
        help="Variational refinement of network flow at full resolution: auto (where the "
        "checkpoint's registry entry asks for it, e.g. the shipped model), none, variational.",
    )


def parse_set_options(values: tuple[str, ...]) -> dict[str, Any]:
    """``--set KEY=VALUE`` options -> ``{"KEY": value}`` (dotted config keys).

    Each VALUE is read as YAML, the way it would read in a preset file
    (:class:`pipeline.config.ConfigLoader`): ``null``, ``~`` or nothing -> null
    (:data:`pipeline.config.EXPLICIT_NULL`, which sets the key to ``None``); ``true`` /
    ``false`` -> bool; ``12`` and ``012`` -> int 12; ``0.5`` and ``1e9`` -> float; ``[npy,
    viz]`` -> list; ``"12"`` (quoted) -> the string. Other text stays a string; the
    configuration turns numeric strings into numbers for numeric keys. A VALUE that is not
    valid YAML (``[1, 2``, ``%x``) is kept as the text typed.
    """
    overrides = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        overrides[key.strip()] = _yaml_value(value.strip())
    return overrides


def merge_overrides(flags: dict[str, Any], settings: tuple[str, ...]) -> dict[str, Any]:
    """Dotted overrides from command-line flags (``{"flow.model": "dis"}``, ``None``: not
    given) and ``--set`` options, refusing a key given both ways: either one silently losing
    to the other would run something the user did not ask for."""
    parsed = parse_set_options(settings)
    clashes = sorted(k for k, v in flags.items() if v is not None and k in parsed)
    if clashes:
        raise click.UsageError(
            f"{', '.join(clashes)} given both as an option and with --set; give each key once"
        )
    return {**flags, **parsed}


def _yaml_value(text: str) -> Any:
    """``text`` read as a YAML value, or ``text`` itself where it is not valid YAML."""
    try:
        value = parse_yaml(text)
    except yaml.YAMLError:
        return text
    return EXPLICIT_NULL if value is None else value
