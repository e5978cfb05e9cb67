"""Configuration values at their edges: duplicate YAML keys, non-finite floats, booleans
for string keys, key names in messages, options given both as a flag and with --set,
unknown keys (with the closest valid one), and numbers read as YAML 1.2 reads them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.cli_common import parse_set_options
from pipeline.config import ConfigError, load_config, parse_yaml


@pytest.mark.parametrize(
    "text",
    [
        "flow:\n  iters: 3\n  iters: 5\n",
        "flow:\n  iters: 3\nflow:\n  model: dis\n",  # the second section dropped iters
    ],
)
def test_a_key_given_twice_in_a_file_is_refused(tmp_path, text: str) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text(text)
    with pytest.raises(ConfigError, match=r"(?s)preset\.yaml.*duplicate key"):
        load_config(preset)


def test_an_unhashable_key_is_the_parsers_error(tmp_path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("flow:\n  ? [1, 2]\n  : 3\n")
    with pytest.raises(ConfigError, match="found unhashable key"):
        load_config(preset)


def test_merge_keys_still_work(tmp_path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("flow:\n  <<: {iters: 4}\n  model: dis\n")
    assert load_config(preset).flow.iters == 4


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_bytes(b"\xff\xfe flow")
    with pytest.raises(ConfigError, match=r"preset\.yaml.*UTF-8"):
        load_config(preset)


@pytest.mark.parametrize(
    "item", ["output.jpg_bound=.inf", "output.viz_max_flow=.inf", "features.temperature=.inf"]
)
def test_non_finite_floats_are_refused_with_key_and_value(item: str) -> None:
    key = item.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key} must be a finite number, got inf"):
        load_config(None, parse_set_options((item,)))


@pytest.mark.parametrize("item", ["flow.device=on", "decode.backend=yes", "flow.checkpoint=no"])
def test_yaml_booleans_are_not_strings(item: str) -> None:
    with pytest.raises(ConfigError, match=r"must be a string, got (True|False)"):
        load_config(None, parse_set_options((item,)))


@pytest.mark.parametrize("key", ["flow.batch_pairs", "flow.encode_batch"])
def test_batch_size_errors_name_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key} must be >= 1, got 0"):
        load_config(None, {key: 0})


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "dis", "--set", "flow.model=raft-small"],
        ["--iters", "3", "--set", "flow.iters=5"],
        ["--formats", "npy", "--set", "output.formats=[flo]"],
    ],
)
def test_a_key_given_as_flag_and_with_set_is_a_usage_error(tmp_path, args) -> None:
    result = CliRunner().invoke(main, ["run", str(tmp_path), "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert "given both as an option and with --set" in result.output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"flow.iter": 3}, "flow.iter (did you mean flow.iters?)"),
        ({"flwo.iters": 3}, "flwo (did you mean flow?)"),
        ({"warp.count_outsid": True}, "warp.count_outsid (did you mean warp.count_outside?)"),
        ({"flow.zzz": 1}, "unknown key(s) flow.zzz; valid: flow.model"),
    ],
)
def test_an_unknown_key_names_the_closest_valid_one(overrides, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert message in str(error.value)


def test_unknown_keys_of_mixed_types_are_all_named(tmp_path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("flow:\n  1: a\n  itres: 3\n")
    with pytest.raises(ConfigError, match=r"flow\.1, flow\.itres \(did you mean flow\.iters\?\)"):
        load_config(preset)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("012", 12),  # YAML 1.1: octal 10
        ("-012", -12),
        ("0o17", 15),
        ("0x1f", 31),
        ("1e9", 1e9),  # YAML 1.1: a string
        (".5", 0.5),
        ("1:30", "1:30"),  # YAML 1.1: sexagesimal 90
        ("1_000", "1_000"),  # YAML 1.1: 1000
        ("yes", True),
    ],
)
def test_numbers_read_as_yaml_1_2_reads_them(text: str, value) -> None:
    assert parse_yaml(text) == value
    assert type(parse_yaml(text)) is type(value)


def test_a_leading_zero_is_decimal_in_files_and_with_set(tmp_path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("flow:\n  iters: 012\n")
    assert load_config(preset).flow.iters == 12
    assert load_config(None, parse_set_options(("flow.iters=012",))).flow.iters == 12


def test_a_section_set_to_null_is_refused_rather_than_reset(tmp_path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("flow:\n  iters: 4\n")
    with pytest.raises(ConfigError, match="cannot set flow to null: it is a section"):
        load_config(preset, parse_set_options(("flow=null",)))
    assert load_config(preset, parse_set_options(("flow.checkpoint=null",))).flow.iters == 4
