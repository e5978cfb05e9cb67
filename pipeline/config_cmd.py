"""``config show``: every key of the run configuration with its value, type and meaning.

The output is itself a preset (YAML with a comment per key), so
``motionpipe config show --preset quickstart > mine.yaml`` starts a configuration of your own.
``configs/quickstart.yaml`` is exactly this output for itself (a test keeps it so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from .cli_common import parse_set_options
from .config import KEY_HELP, ConfigError, RunConfig, config_to_dict, iter_keys, load_config

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"
"""The presets shipped in the repository (``configs/``)."""

_DEFAULT_HEADER = [
    "# motionpipe run configuration: every key with its default value.",
    "# Comments: type; meaning. Use as a preset with run --config FILE.",
]


def run_presets() -> list[str]:
    """Names of the run presets in :data:`PRESETS_DIR` (training presets left out)."""
    names = []
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        try:
            load_config(path)
        except ConfigError:
            continue
        names.append(path.stem)
    return names


def preset_path(preset: str) -> Path:
    """A preset given as a file path or as the name of one in :data:`PRESETS_DIR`.

    Raises:
        ConfigError: neither a file nor a known name; the message lists the names.
    """
    path = Path(preset)
    if path.is_file():
        return path
    named = PRESETS_DIR / f"{preset.removesuffix('.yaml')}.yaml"
    if named.is_file():
        return named
    raise ConfigError(
        f"no preset {preset!r}: not a file, and not one of {', '.join(run_presets())} "
        f"(in {PRESETS_DIR})"
    )


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def header_of(path: Path) -> list[str]:
    """The comment lines a preset file starts with."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def render_config(config: RunConfig, header: list[str] | None = None) -> str:
    """``config`` as a commented YAML preset: every key, its value, then ``# type; meaning``
    and ``(default: X)`` where the value is not the default."""
    values = config_to_dict(config)
    rows = []
    for key, default, type_name in iter_keys():
        name, leaf = key.split(".", 1)
        value = values[name][leaf]
        plain_default = list(default) if isinstance(default, tuple) else default
        comment = f"# {type_name}; {KEY_HELP[key]}"
        if value != plain_default:
            comment += f" (default: {_yaml_value(plain_default)})"
        rows.append((name, f"  {leaf}: {_yaml_value(value)}", comment))
    column = max(len(entry) for _, entry, _ in rows) + 2
    lines = list(header if header is not None else _DEFAULT_HEADER)
    section = None
    for name, entry, comment in rows:
        if name != section:
            lines.append(f"{name}:")
            section = name
        lines.append(f"{entry.ljust(column)}{comment}")
    return "\n".join(lines) + "\n"


@click.group("config")
def config_group() -> None:
    """The run configuration: keys, defaults, presets."""


@config_group.command("show")
@click.option(
    "--preset",
    default=None,
    help="A preset of configs/ by name (quickstart, action-recognition, ...) or a YAML file; "
    "default: the built-in defaults.",
)
@click.option(
    "--set", "settings", multiple=True, metavar="KEY=VALUE", help="Override a key, as in run."
)
def show(preset: str | None, settings: tuple[str, ...]) -> None:
    """Print every configuration key with its value, type and one-line meaning.

    The output is a valid preset: save it and pass it to run --config.
    """
    try:
        path = preset_path(preset) if preset is not None else None
        config = load_config(path, parse_set_options(settings))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render_config(config, header_of(path) if path is not None else None), nl=False)
