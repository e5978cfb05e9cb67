"""Option parsing shared by the CLI commands."""

from __future__ import annotations

import click


def parse_set_options(values: tuple[str, ...]) -> dict[str, str]:
    """``--set KEY=VALUE`` options -> ``{"KEY": "VALUE"}`` (dotted config keys)."""
    overrides = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        overrides[key.strip()] = value.strip()
    return overrides
