"""`config show`: every key with its value, type and meaning; presets carry the same comments."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import KEY_HELP, config_to_dict, iter_keys, load_config
from pipeline.config_cmd import PRESETS_DIR, header_of, render_config, run_presets


def _show(*args: str) -> str:
    result = CliRunner().invoke(main, ["config", "show", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_key_has_a_meaning() -> None:
    assert {key for key, _, _ in iter_keys()} == set(KEY_HELP)
    assert all(KEY_HELP.values())


def test_output_is_a_preset_with_every_key_type_and_meaning() -> None:
    text = _show()
    assert yaml.safe_load(text) == config_to_dict(load_config())
    lines, section = {}, ""
    for line in text.splitlines():
        if not line.startswith((" ", "#")):
            section = line.rstrip(":")
        elif line.startswith("  "):
            lines[f"{section}.{line.split(':')[0].strip()}"] = line
    assert list(lines) == [key for key, _, _ in iter_keys()]
    for key, _, type_name in iter_keys():
        assert f"# {type_name}; {KEY_HELP[key]}" in lines[key], key
    assert "warp:" in text and "features:" in text and "fb_alpha1" in text


def test_a_preset_shows_its_values_and_the_defaults_it_changes() -> None:
    text = _show("--preset", "high-resolution", "--set", "flow.iters=20")
    assert yaml.safe_load(text) == config_to_dict(
        load_config(PRESETS_DIR / "high-resolution.yaml", {"flow.iters": 20})
    )
    line = next(ln for ln in text.splitlines() if ln.startswith("  corr:"))
    assert line.startswith("  corr: on-demand") and "(default: auto)" in line
    assert text.startswith("# 1080p / 4K")  # the preset's own header


def test_unknown_preset_lists_the_known_ones() -> None:
    result = CliRunner().invoke(main, ["config", "show", "--preset", "nope"])
    assert result.exit_code != 0
    assert "quickstart" in result.output and "action-recognition" in result.output


def test_quickstart_preset_is_the_documented_configuration() -> None:
    """configs/quickstart.yaml lists every key with the comments `config show` prints
    (regenerate: motionpipe config show --preset quickstart > configs/quickstart.yaml)."""
    path = PRESETS_DIR / "quickstart.yaml"
    assert path.read_text() == render_config(load_config(path), header_of(path))


def test_every_key_a_preset_sets_is_commented() -> None:
    assert {"quickstart", "action-recognition", "high-resolution"} <= set(run_presets())
    for name in run_presets():
        for line in (PRESETS_DIR / f"{name}.yaml").read_text().splitlines():
            if line.startswith("  ") and ":" in line:
                assert "#" in line, f"{name}: {line}"
