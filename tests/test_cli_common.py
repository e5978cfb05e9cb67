"""``--set KEY=VALUE`` parsing: values are YAML, as in a preset file."""

from __future__ import annotations

import click
import pytest

from pipeline.cli_common import parse_set_options
from pipeline.config import EXPLICIT_NULL, ConfigError, load_config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null", EXPLICIT_NULL),
        ("~", EXPLICIT_NULL),
        ("", EXPLICIT_NULL),
        ("true", True),
        ("False", False),
        ("12", 12),
        ("-3", -3),
        ("0.5", 0.5),
        ("1.0e+9", 1e9),
        ("[1, 2]", [1, 2]),
        ("[npy, viz]", ["npy", "viz"]),
        ("npy,viz", "npy,viz"),
        ("raft-things", "raft-things"),
        ("cuda:0", "cuda:0"),
        ("/data/weights/raft sintel.pth", "/data/weights/raft sintel.pth"),
        ('"12"', "12"),
        ("'null'", "null"),
        ("1e9", 1e9),  # YAML 1.2, as the config reads files (YAML 1.1: a string)
        ("012", 12),  # YAML 1.2 (YAML 1.1: octal 10)
        ("[1, 2", "[1, 2"),  # not valid YAML: kept as typed
        ("%x", "%x"),
    ],
)
def test_values_are_read_as_yaml(text: str, expected: object) -> None:
    parsed = parse_set_options((f"section.key={text}",))
    assert parsed == {"section.key": expected}
    assert type(parsed["section.key"]) is type(expected)


def test_keys_split_at_the_first_equals_sign_and_are_stripped() -> None:
    parsed = parse_set_options((" flow.iters = 20 ", "output.prefix=a=b"))
    assert parsed == {"flow.iters": 20, "output.prefix": "a=b"}


@pytest.mark.parametrize("item", ["flow.iters", "=3", " =3"])
def test_malformed_items_are_refused(item: str) -> None:
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        parse_set_options((item,))


def test_parsed_values_build_the_configuration() -> None:
    overrides = parse_set_options(
        (
            "flow.iters=1e9",
            "flow.backward=true",
            "output.formats=[npy, viz]",
            "output.jpg_bound=25",
            "flow.checkpoint=raft-sintel",
        )
    )
    config = load_config(None, overrides)
    assert config.flow.iters == 1_000_000_000 and isinstance(config.flow.iters, int)
    assert config.flow.backward is True
    assert config.output.formats == ("npy", "viz")
    assert config.output.jpg_bound == 25.0
    assert config.flow.checkpoint == "raft-sintel"


def test_null_sets_a_key_to_none_where_a_missing_flag_changes_nothing(tmp_path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("flow:\n  checkpoint: raft-sintel\n  model: raft-large\n")
    assert load_config(preset, {"flow.checkpoint": None}).flow.checkpoint == "raft-sintel"
    nulled = load_config(preset, parse_set_options(("flow.checkpoint=null",)))
    assert nulled.flow.checkpoint is None


@pytest.mark.parametrize("value", ["1.5", "[1, 2]", "abc", "true", "false"])
def test_a_non_integer_for_an_integer_key_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"flow\.iters must be"):
        load_config(None, parse_set_options((f"flow.iters={value}",)))


def test_a_bad_value_names_where_it_came_from(tmp_path) -> None:
    """A bad --set value is blamed on the command line, a bad file value on the file."""
    preset = tmp_path / "preset.yaml"
    preset.write_text("flow:\n  iters: 4\n")
    with pytest.raises(ConfigError, match=r"got 'abc' \(from the command-line options\)"):
        load_config(preset, parse_set_options(("flow.iters=abc",)))
    preset.write_text("flow:\n  iters: abc\n")
    with pytest.raises(ConfigError, match=r"\(in .*preset.yaml\)"):
        load_config(preset, parse_set_options(("flow.gap=2",)))
    preset.write_text("flow: 3\n")
    with pytest.raises(ConfigError, match=r"^flow must be a mapping"):
        load_config(preset)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"output.formats": []}, "nothing to write"),
        ({"output.formats": ["npy", "npy"]}, "lists npy more than once"),
        ({"output.viz_max_flow": -1}, r"output\.viz_max_flow must be > 0"),
    ],
)
def test_settings_that_would_do_nothing_or_be_ignored_are_refused(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    # formats may be empty when another stage writes something
    assert load_config(None, {"output.formats": [], "warp.enabled": True}).output.formats == ()


def test_a_checkpoint_given_with_dis_is_named_as_unused(caplog) -> None:
    """A preset's checkpoint with --model dis is not an error (the preset serves its other
    settings) but is said to be unused."""
    from pipeline.model_choice import choose_model

    config = load_config(None, {"flow.model": "dis", "flow.checkpoint": "raft-things"})
    assert choose_model(config.flow).model == "dis"
    assert "flow.checkpoint raft-things is not used" in caplog.text
