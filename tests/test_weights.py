"""Tests for models/weights.py: registry, cache/download, safe loading, layouts, strict load."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import pickle
import re
import shlex
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from models import weights as W
from models.weights import CheckpointError

FIXTURES = {
    "raft_large_random.pth": ("raft-large", 179),
    "raft_small_random.pth": ("raft-small", 106),
    "gma_random.pth": ("gma", 185),
}
BUFFER_LEAVES = {"running_mean", "running_var", "num_batches_tracked", "rel_ind"}
UNREACHABLE_URL = "http://127.0.0.1:9/x.pth"

# Every key of torchvision's raft_small() state dict, in registration order, written out from
# the module tree of torchvision/models/optical_flow/raft.py (Conv2dNormActivation is a
# Sequential: 0 = conv, 1 = norm or activation; InstanceNorm2d and norm_layer=None add no keys).
TV_RAFT_SMALL_KEYS = (
    "feature_encoder.convnormrelu.0.weight",
    "feature_encoder.convnormrelu.0.bias",
    "feature_encoder.layer1.0.convnormrelu1.0.weight",
    "feature_encoder.layer1.0.convnormrelu1.0.bias",
    "feature_encoder.layer1.0.convnormrelu2.0.weight",
    "feature_encoder.layer1.0.convnormrelu2.0.bias",
    "feature_encoder.layer1.0.convnormrelu3.0.weight",
    "feature_encoder.layer1.0.convnormrelu3.0.bias",
    "feature_encoder.layer1.1.convnormrelu1.0.weight",
    "feature_encoder.layer1.1.convnormrelu1.0.bias",
    "feature_encoder.layer1.1.convnormrelu2.0.weight",
    "feature_encoder.layer1.1.convnormrelu2.0.bias",
    "feature_encoder.layer1.1.convnormrelu3.0.weight",
    "feature_encoder.layer1.1.convnormrelu3.0.bias",
    "feature_encoder.layer2.0.convnormrelu1.0.weight",
    "feature_encoder.layer2.0.convnormrelu1.0.bias",
    "feature_encoder.layer2.0.convnormrelu2.0.weight",
    "feature_encoder.layer2.0.convnormrelu2.0.bias",
    "feature_encoder.layer2.0.convnormrelu3.0.weight",
    "feature_encoder.layer2.0.convnormrelu3.0.bias",
    "feature_encoder.layer2.0.downsample.0.weight",
    "feature_encoder.layer2.0.downsample.0.bias",
    "feature_encoder.layer2.1.convnormrelu1.0.weight",
    "feature_encoder.layer2.1.convnormrelu1.0.bias",
    "feature_encoder.layer2.1.convnormrelu2.0.weight",
    "feature_encoder.layer2.1.convnormrelu2.0.bias",
    "feature_encoder.layer2.1.convnormrelu3.0.weight",
    "feature_encoder.layer2.1.convnormrelu3.0.bias",
    "feature_encoder.layer3.0.convnormrelu1.0.weight",
    "feature_encoder.layer3.0.convnormrelu1.0.bias",
    "feature_encoder.layer3.0.convnormrelu2.0.weight",
    "feature_encoder.layer3.0.convnormrelu2.0.bias",
    "feature_encoder.layer3.0.convnormrelu3.0.weight",
    "feature_encoder.layer3.0.convnormrelu3.0.bias",
    "feature_encoder.layer3.0.downsample.0.weight",
    "feature_encoder.layer3.0.downsample.0.bias",
    "feature_encoder.layer3.1.convnormrelu1.0.weight",
    "feature_encoder.layer3.1.convnormrelu1.0.bias",
    "feature_encoder.layer3.1.convnormrelu2.0.weight",
    "feature_encoder.layer3.1.convnormrelu2.0.bias",
    "feature_encoder.layer3.1.convnormrelu3.0.weight",
    "feature_encoder.layer3.1.convnormrelu3.0.bias",
    "feature_encoder.conv.weight",
    "feature_encoder.conv.bias",
    "context_encoder.convnormrelu.0.weight",
    "context_encoder.convnormrelu.0.bias",
    "context_encoder.layer1.0.convnormrelu1.0.weight",
    "context_encoder.layer1.0.convnormrelu1.0.bias",
    "context_encoder.layer1.0.convnormrelu2.0.weight",
    "context_encoder.layer1.0.convnormrelu2.0.bias",
    "context_encoder.layer1.0.convnormrelu3.0.weight",
    "context_encoder.layer1.0.convnormrelu3.0.bias",
    "context_encoder.layer1.1.convnormrelu1.0.weight",
    "context_encoder.layer1.1.convnormrelu1.0.bias",
    "context_encoder.layer1.1.convnormrelu2.0.weight",
    "context_encoder.layer1.1.convnormrelu2.0.bias",
    "context_encoder.layer1.1.convnormrelu3.0.weight",
    "context_encoder.layer1.1.convnormrelu3.0.bias",
    "context_encoder.layer2.0.convnormrelu1.0.weight",
    "context_encoder.layer2.0.convnormrelu1.0.bias",
    "context_encoder.layer2.0.convnormrelu2.0.weight",
    "context_encoder.layer2.0.convnormrelu2.0.bias",
    "context_encoder.layer2.0.convnormrelu3.0.weight",
    "context_encoder.layer2.0.convnormrelu3.0.bias",
    "context_encoder.layer2.0.downsample.0.weight",
    "context_encoder.layer2.0.downsample.0.bias",
    "context_encoder.layer2.1.convnormrelu1.0.weight",
    "context_encoder.layer2.1.convnormrelu1.0.bias",
    "context_encoder.layer2.1.convnormrelu2.0.weight",
    "context_encoder.layer2.1.convnormrelu2.0.bias",
    "context_encoder.layer2.1.convnormrelu3.0.weight",
    "context_encoder.layer2.1.convnormrelu3.0.bias",
    "context_encoder.layer3.0.convnormrelu1.0.weight",
    "context_encoder.layer3.0.convnormrelu1.0.bias",
    "context_encoder.layer3.0.convnormrelu2.0.weight",
    "context_encoder.layer3.0.convnormrelu2.0.bias",
    "context_encoder.layer3.0.convnormrelu3.0.weight",
    "context_encoder.layer3.0.convnormrelu3.0.bias",
    "context_encoder.layer3.0.downsample.0.weight",
    "context_encoder.layer3.0.downsample.0.bias",
    "context_encoder.layer3.1.convnormrelu1.0.weight",
    "context_encoder.layer3.1.convnormrelu1.0.bias",
    "context_encoder.layer3.1.convnormrelu2.0.weight",
    "context_encoder.layer3.1.convnormrelu2.0.bias",
    "context_encoder.layer3.1.convnormrelu3.0.weight",
    "context_encoder.layer3.1.convnormrelu3.0.bias",
    "context_encoder.conv.weight",
    "context_encoder.conv.bias",
    "update_block.motion_encoder.convcorr1.0.weight",
    "update_block.motion_encoder.convcorr1.0.bias",
    "update_block.motion_encoder.convflow1.0.weight",
    "update_block.motion_encoder.convflow1.0.bias",
    "update_block.motion_encoder.convflow2.0.weight",
    "update_block.motion_encoder.convflow2.0.bias",
    "update_block.motion_encoder.conv.0.weight",
    "update_block.motion_encoder.conv.0.bias",
    "update_block.recurrent_block.convgru1.convz.weight",
    "update_block.recurrent_block.convgru1.convz.bias",
    "update_block.recurrent_block.convgru1.convr.weight",
    "update_block.recurrent_block.convgru1.convr.bias",
    "update_block.recurrent_block.convgru1.convq.weight",
    "update_block.recurrent_block.convgru1.convq.bias",
    "update_block.flow_head.conv1.weight",
    "update_block.flow_head.conv1.bias",
    "update_block.flow_head.conv2.weight",
    "update_block.flow_head.conv2.bias",
)

# A sample of torchvision's raft_large() keys, chosen to cover every renaming rule.
TV_RAFT_LARGE_SAMPLE = (
    "feature_encoder.convnormrelu.0.weight",
    "feature_encoder.layer2.0.downsample.0.bias",
    "feature_encoder.conv.weight",
    "context_encoder.convnormrelu.1.running_mean",
    "context_encoder.layer1.0.convnormrelu2.1.num_batches_tracked",
    "context_encoder.layer2.0.downsample.1.running_var",
    "context_encoder.layer3.0.downsample.1.weight",
    "context_encoder.layer3.1.convnormrelu1.0.weight",
    "update_block.motion_encoder.convcorr1.0.weight",
    "update_block.motion_encoder.convcorr2.0.bias",
    "update_block.motion_encoder.convflow1.0.weight",
    "update_block.motion_encoder.conv.0.weight",
    "update_block.recurrent_block.convgru1.convz.weight",
    "update_block.recurrent_block.convgru2.convq.bias",
    "update_block.flow_head.conv2.weight",
    "mask_predictor.convrelu.0.weight",
    "mask_predictor.conv.bias",
)

# Trainable parameter counts published in torchvision's weight metadata ("num_params").
TV_NUM_PARAMS = {"raft_large_random.pth": 5257536, "raft_small_random.pth": 990162}

REGISTRY_NAMES = (
    "raft-things",
    "raft-sintel",
    "raft-kitti",
    "raft-chairs",
    "raft-small",
    "gma-things",
    "gma-sintel",
    "gma-kitti",
    "gma-chairs",
    "tv-raft-large-c-t-v1",
    "tv-raft-large-c-t-v2",
    "tv-raft-large-c-t-skht-v1",
    "tv-raft-large-c-t-skht-v2",
    "tv-raft-large-c-t-skht-k-v1",
    "tv-raft-large-c-t-skht-k-v2",
    "tv-raft-small-c-t-v1",
    "tv-raft-small-c-t-v2",
)


class _RunsShellCommand:
    """Pickles to a call of os.system: a checkpoint that would run code when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


# ------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def key_lists(parity_dir: Path) -> dict[str, list[list]]:
    """weights_keys.json: file name -> [[key, shape, dtype], ...]."""
    data = json.loads((parity_dir / "weights_keys.json").read_text())
    return {name: entry["keys"] for name, entry in data.items()}


@pytest.fixture(scope="module")
def states(parity_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Each fixture checkpoint as returned by load_checkpoint."""
    return {name: W.load_checkpoint(parity_dir / name) for name in FIXTURES}


def build_stand_in(entries: list[list]) -> nn.Module:
    """A module whose state dict has exactly the given keys, shapes and dtypes (zeros)."""
    root = nn.Module()
    for key, shape, dtype in entries:
        *path, leaf = key.removeprefix("module.").split(".")
        parent = root
        for part in path:
            child = parent._modules.get(part)
            if child is None:
                child = nn.Module()
                parent.add_module(part, child)
            parent = child
        tensor = torch.zeros(shape, dtype=getattr(torch, dtype))
        if leaf in BUFFER_LEAVES:
            parent.register_buffer(leaf, tensor)
        else:
            parent.register_parameter(leaf, nn.Parameter(tensor))
    return root


def custom_spec(name: str, url: str, **changes: object) -> W.WeightSpec:
    """A copy of a registry entry pointing somewhere else."""
    base = W.WEIGHTS[name]
    fields = {"url": url, "archive_member": None, "sha256": None, "sha256_prefix": None}
    fields.update(changes)
    return dataclasses.replace(base, **fields)


def leftovers(folder: Path) -> list[str]:
    """Temporary download files (hidden ``*.part``) left in a cache folder."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def tiny_state_file(path: Path) -> bytes:
    """Write a small real checkpoint to ``path`` and return its bytes."""
    torch.save({"update_block.gru.convz.weight": torch.arange(6.0).reshape(2, 3)}, path)
    return path.read_bytes()


# ------------------------------------------------------------------------------ fixtures load


@pytest.mark.parametrize("file_name", sorted(FIXTURES))
def test_fixture_checkpoints_load_with_official_keys(
    file_name: str, parity_dir: Path, states: dict, key_lists: dict
) -> None:
    arch, n_keys = FIXTURES[file_name]
    state = states[file_name]
    expected = [
        (k.removeprefix("module."), shape, dtype) for k, shape, dtype in key_lists[file_name]
    ]
    assert len(state) == n_keys == len(expected)
    assert list(state) == [k for k, _, _ in expected]
    for key, shape, dtype in expected:
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype) == f"torch.{dtype}", key
    assert not any(k.startswith("module.") for k in state)
    assert W.infer_architecture(state) == arch
    raw = torch.load(parity_dir / file_name, map_location="cpu", weights_only=True)
    assert all(torch.equal(raw[f"module.{k}"], v) for k, v in state.items())


def test_gma_heads(states: dict) -> None:
    assert W.gma_num_heads(states["gma_random.pth"]) == 1
    four_heads = dict(states["gma_random.pth"])
    four_heads["att.to_qk.weight"] = torch.zeros(4 * 128 * 2, 128, 1, 1)
    assert W.gma_num_heads(four_heads) == 4
    with pytest.raises(CheckpointError, match="not a GMA checkpoint"):
        W.gma_num_heads(states["raft_large_random.pth"])
    broken = dict(four_heads, **{"att.to_qk.weight": torch.zeros(300, 128, 1, 1)})
    with pytest.raises(CheckpointError, match="multiple of 256"):
        W.gma_num_heads(broken)


def test_infer_architecture_rejects_unrelated_state() -> None:
    with pytest.raises(CheckpointError, match="cannot tell which model"):
        W.infer_architecture({"encoder.weight": torch.zeros(1)})


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_state_dicts_are_unwrapped(wrapper: str, tmp_path: Path, states: dict) -> None:
    state = states["raft_small_random.pth"]
    path = tmp_path / "wrapped.pth"
    torch.save({wrapper: {f"module.{k}": v for k, v in state.items()}, "epoch": 7}, path)
    loaded = W.load_checkpoint(path)
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


# ------------------------------------------------------------------------------ torchvision


def test_torchvision_raft_small_keys_match_torchvision_source(states: dict) -> None:
    tv = W.official_to_torchvision(states["raft_small_random.pth"])
    assert tuple(tv) == TV_RAFT_SMALL_KEYS
    assert len(set(TV_RAFT_SMALL_KEYS)) == 106


def test_torchvision_raft_large_keys_match_torchvision_source(states: dict) -> None:
    official = states["raft_large_random.pth"]
    tv = W.official_to_torchvision(official)
    # The official model registers each cnet downsample BatchNorm twice (norm3 and
    # downsample.1); torchvision once: 2 blocks x 5 entries fewer.
    assert len(tv) == 179 - 10
    assert set(TV_RAFT_LARGE_SAMPLE) <= set(tv)
    assert not any(".norm" in k for k in tv)
    assert torch.equal(
        tv["context_encoder.layer2.0.downsample.1.running_var"],
        official["cnet.layer2.0.norm3.running_var"],
    )


@pytest.mark.parametrize("file_name", ["raft_large_random.pth", "raft_small_random.pth"])
def test_torchvision_parameter_count_matches_published_metadata(
    file_name: str, states: dict
) -> None:
    tv = W.official_to_torchvision(states[file_name])
    trainable = sum(v.numel() for k, v in tv.items() if k.rsplit(".", 1)[-1] not in BUFFER_LEAVES)
    assert trainable == TV_NUM_PARAMS[file_name]


@pytest.mark.parametrize("file_name", ["raft_large_random.pth", "raft_small_random.pth"])
def test_torchvision_layout_round_trip_through_a_file(
    file_name: str, tmp_path: Path, states: dict
) -> None:
    official = states[file_name]
    tv = W.official_to_torchvision(official)
    assert W.is_torchvision_layout(tv)
    assert W.infer_architecture(tv) == FIXTURES[file_name][0]
    path = tmp_path / "tv.pth"
    torch.save(tv, path)
    loaded = W.load_checkpoint(path)
    assert set(loaded) == set(official)
    for key, value in official.items():
        assert torch.equal(loaded[key], value), key


def test_torchvision_has_no_gma(states: dict) -> None:
    with pytest.raises(CheckpointError, match="no torchvision equivalent"):
        W.official_to_torchvision(states["gma_random.pth"])


# ------------------------------------------------------------------------------ bad files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found") as info:
        W.load_checkpoint(tmp_path / "nope.pth")
    assert "--checkpoint PATH" in str(info.value)
    with pytest.raises(CheckpointError, match="not a file"):
        W.load_checkpoint(tmp_path)


def test_truncated_file(tmp_path: Path, parity_dir: Path) -> None:
    data = (parity_dir / "raft_small_random.pth").read_bytes()
    path = tmp_path / "half.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        W.load_checkpoint(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty or cut short"):
        W.load_checkpoint(path)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.pth"
    path.write_bytes(bytes(range(7, 256)) * 20)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        W.load_checkpoint(path)
    html = tmp_path / "page.pth"
    html.write_bytes(b"<!DOCTYPE html><html>quota exceeded</html>")
    with pytest.raises(CheckpointError, match="HTML error page"):
        W.load_checkpoint(html)


@pytest.mark.parametrize("writer", ["torch.save", "pickle-protocol-2", "pickle-protocol-4"])
def test_pickle_with_code_is_refused_not_executed(writer: str, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    payload: dict[str, object] = {"hook": _RunsShellCommand(marker)}
    path = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save({"fnet.conv1.weight": torch.zeros(1), **payload}, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle, protocol=int(writer[-1]))
    with pytest.raises(CheckpointError, match="not a plain weights file") as info:
        W.load_checkpoint(path)
    assert not marker.exists()
    message = str(info.value)
    assert "arbitrary code" in message
    if writer != "pickle-protocol-4":  # protocol 4 is refused before the global is read
        assert "posix.system" in message


@pytest.mark.parametrize(
    ("payload", "pattern"),
    [
        (["fnet.conv1.weight", 1], "holds a list, not a state dict"),
        ("fnet.conv1.weight", "holds a str, not a state dict"),
        ({"fnet.conv1.weight": [1.0, 2.0], "step": 3}, "2 of its 2 entries are not tensors"),
        ({}, "empty dict"),
        ({"state_dict": {}}, "empty dict"),
    ],
)
def test_files_without_tensors(payload: object, pattern: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=pattern) as info:
        W.load_checkpoint(path)
    assert "expected a state dict" in str(info.value)


# ------------------------------------------------------------------------------ load_into


@pytest.mark.parametrize("file_name", sorted(FIXTURES))
def test_load_into_stand_in_model(file_name: str, states: dict, key_lists: dict) -> None:
    model = build_stand_in(key_lists[file_name])
    arch = FIXTURES[file_name][0]
    W.load_into(model, states[file_name], arch=arch)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in states[file_name].items())


def test_load_into_accepts_prefixed_and_torchvision_states(states: dict, key_lists: dict) -> None:
    state = states["raft_large_random.pth"]
    model = build_stand_in(key_lists["raft_large_random.pth"])
    W.load_into(model, W.official_to_torchvision(state), arch="raft-large")
    W.load_into(model, {f"module.{k}": v for k, v in state.items()}, arch="raft-large")
    assert torch.equal(
        model.state_dict()["cnet.layer3.0.norm3.weight"], state["cnet.layer3.0.norm3.weight"]
    )


def test_load_into_wrong_architecture(states: dict, key_lists: dict) -> None:
    model = build_stand_in(key_lists["raft_large_random.pth"])
    with pytest.raises(CheckpointError) as info:
        W.load_into(model, states["raft_small_random.pth"], arch="raft-large")
    message = str(info.value)
    assert "this checkpoint is a raft-small checkpoint but the model is raft-large" in message
    assert "--model raft-small" in message
    with pytest.raises(CheckpointError, match="--model gma"):
        W.load_into(model, states["gma_random.pth"], arch="raft-large")
    with pytest.raises(ValueError, match="unknown architecture"):
        W.load_into(model, states["raft_large_random.pth"], arch="raft")


def test_load_into_lists_missing_unexpected_and_mismatched_keys(
    states: dict, key_lists: dict
) -> None:
    model = build_stand_in(key_lists["raft_large_random.pth"])
    state = dict(states["raft_large_random.pth"])
    removed = [k for k in state if k.startswith("update_block.mask.")]
    for key in removed:
        del state[key]
    state["update_block.extra.weight"] = torch.zeros(3)
    state["fnet.conv2.bias"] = torch.zeros(128)
    with pytest.raises(CheckpointError) as info:
        W.load_into(model, state, arch="raft-large")
    message = str(info.value)
    assert "4 missing keys" in message
    assert all(k in message for k in removed)
    assert "1 unexpected keys (update_block.extra.weight)" in message
    assert "fnet.conv2.bias: checkpoint [128] vs model [256]" in message
    assert torch.count_nonzero(model.state_dict()["fnet.conv1.weight"]) == 0  # nothing loaded


def test_load_into_caps_the_listed_keys(states: dict, key_lists: dict) -> None:
    model = build_stand_in(key_lists["raft_small_random.pth"])
    state = {k: v for k, v in states["raft_small_random.pth"].items() if not k.startswith("cnet.")}
    with pytest.raises(CheckpointError, match=r"44 missing keys \(.*, \.\.\. 39 more\)"):
        W.load_into(model, state, arch="raft-small")


def test_load_into_reports_gma_head_mismatch(states: dict, key_lists: dict) -> None:
    model = build_stand_in(key_lists["gma_random.pth"])
    state = dict(states["gma_random.pth"], **{"att.to_qk.weight": torch.zeros(512, 128, 1, 1)})
    with pytest.raises(CheckpointError, match="attention has 2 head"):
        W.load_into(model, state, arch="gma")


# ------------------------------------------------------------------------------ registry


def test_registry_has_all_names_with_https_urls() -> None:
    assert set(REGISTRY_NAMES) <= set(W.WEIGHTS)
    assert W.list_weights() == list(W.WEIGHTS)
    for name in REGISTRY_NAMES:
        spec = W.get_weight_spec(name)
        assert spec.name == name
        assert spec.url.startswith("https://"), name
        assert spec.arch in W.ARCHITECTURES
        assert spec.training_data and spec.description and spec.input_convention
        assert spec.sha256 is None or len(spec.sha256) == 64


def test_registry_entries_are_consistent() -> None:
    for spec in W.WEIGHTS.values():
        if spec.bundled:
            assert spec.url == (W.BUNDLED_DIR / spec.file_name).as_uri()
            assert spec.sha256 is not None and spec.archive_member is None
        elif spec.layout == "torchvision":
            assert spec.url.startswith("https://download.pytorch.org/models/raft_")
            assert spec.url.endswith(f"/{spec.file_name}")
            assert spec.file_name.endswith(f"-{spec.sha256_prefix}.pth")
            assert spec.archive_member is None
        elif spec.arch == "gma":
            assert spec.url.endswith(f"/checkpoints/{spec.file_name}")
            assert spec.gma_num_heads == 1
        else:
            assert spec.url.endswith("/models.zip")
            assert spec.archive_member == f"models/{spec.file_name}"
    assert W.list_weights("raft-small") == [
        "raft-small",
        "tv-raft-small-c-t-v1",
        "tv-raft-small-c-t-v2",
    ]
    assert W.list_weights("gma") == ["gma-things", "gma-sintel", "gma-kitti", "gma-chairs"]


def test_registry_flags_are_consistent() -> None:
    for arch in W.ARCHITECTURES:
        defaults = [s.name for s in W.WEIGHTS.values() if s.arch == arch and s.default]
        assert len(defaults) <= 1, (arch, defaults)
    ranks = [s.auto_rank for s in W.WEIGHTS.values() if s.auto_rank is not None]
    assert len(ranks) == len(set(ranks))
    assert all(s.sha256 is not None for s in W.WEIGHTS.values() if s.bundled)
    with pytest.raises(ValueError, match="needs its full sha256"):
        dataclasses.replace(W.WEIGHTS["raft-things"], bundled=True)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown checkpoint name 'raft-huge'.*raft-things"):
        W.get_weight_spec("raft-huge")
    with pytest.raises(CheckpointError, match=r"neither an existing checkpoint file.*gma-sintel"):
        W.resolve_checkpoint("raft-huge", download=False)


# ------------------------------------------------------------------------------ cache / download


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOTIONPIPE_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("MOTIONPIPE_CACHE")
    assert W.default_cache_dir() == tmp_path / "xdg" / "motionpipe" / "checkpoints"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert W.default_cache_dir() == tmp_path / "home" / ".cache" / "motionpipe" / "checkpoints"


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    assert W.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_existing_path_is_returned_as_is(tmp_path: Path, parity_dir: Path) -> None:
    path = parity_dir / "raft_small_random.pth"
    assert W.resolve_checkpoint(path, cache_dir=tmp_path) == path
    assert W.resolve_checkpoint(str(path), download=False) == path


def test_offline_download_error_names_url_and_target(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(W.WEIGHTS, "raft-things", custom_spec("raft-things", UNREACHABLE_URL))
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError) as info:
        W.resolve_checkpoint("raft-things", cache_dir=cache)
    message = str(info.value)
    assert UNREACHABLE_URL in message
    assert str(cache / "raft-things.pth") in message
    assert "--checkpoint PATH" in message
    assert not cache.exists() or list(cache.iterdir()) == []


def test_no_download_error_names_url_and_target(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        W.resolve_checkpoint("raft-sintel", cache_dir=tmp_path, download=False)
    message = str(info.value)
    assert W.WEIGHTS["raft-sintel"].url in message
    assert "models/raft-sintel.pth" in message
    assert str(tmp_path / "raft-sintel.pth") in message
    assert "--checkpoint PATH" in message
    with pytest.raises(CheckpointError, match=re.escape("raft_small_C_T_V2-01064c6d.pth")):
        W.resolve_checkpoint("tv-raft-small-c-t-v2", cache_dir=tmp_path, download=False)


def test_no_download_error_names_the_hash_the_file_must_have(tmp_path: Path) -> None:
    spec = W.WEIGHTS["tv-raft-small-c-t-v2"]
    with pytest.raises(CheckpointError) as info:
        W.resolve_checkpoint(spec.name, cache_dir=tmp_path, download=False)
    assert f"SHA-256 starts with {spec.sha256_prefix}" in str(info.value)
    # Where nothing is published the message does not invent a hash.
    with pytest.raises(CheckpointError) as info:
        W.resolve_checkpoint("gma-sintel", cache_dir=tmp_path, download=False)
    assert "SHA-256" not in str(info.value)


def test_cache_hit_verifies_hash_without_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cached = tmp_path / "raft-small.pth"
    data = tiny_state_file(cached)
    digest = hashlib.sha256(data).hexdigest()
    for fields in ({}, {"sha256": digest}, {"sha256_prefix": digest[:8]}):
        spec = custom_spec("raft-small", UNREACHABLE_URL, **fields)
        monkeypatch.setitem(W.WEIGHTS, "raft-small", spec)
        assert W.resolve_checkpoint("raft-small", cache_dir=tmp_path) == cached
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    monkeypatch.setitem(
        W.WEIGHTS, "raft-small", custom_spec("raft-small", UNREACHABLE_URL, sha256_prefix=wrong)
    )
    with pytest.raises(CheckpointError, match=f"start with {wrong}"):
        W.resolve_checkpoint("raft-small", cache_dir=tmp_path, download=False)
    with pytest.raises(CheckpointError, match=UNREACHABLE_URL):  # damaged copy: fetch again
        W.resolve_checkpoint("raft-small", cache_dir=tmp_path)
    assert cached.read_bytes() == data  # a failed download leaves the old file alone


def test_download_verifies_hash_and_renames(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "server" / "weights.pth"
    source.parent.mkdir()
    data = tiny_state_file(source)
    digest = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    spec = custom_spec("gma-things", source.as_uri(), sha256=digest)
    monkeypatch.setitem(W.WEIGHTS, "gma-things", spec)
    path = W.resolve_checkpoint("gma-things", cache_dir=cache)
    assert path == cache / "gma-things.pth"
    assert path.read_bytes() == data
    assert leftovers(cache) == []

    bad = custom_spec(
        "gma-sintel", source.as_uri(), sha256_prefix="00000000" if digest[0] != "0" else "ffffffff"
    )
    monkeypatch.setitem(W.WEIGHTS, "gma-sintel", bad)
    with pytest.raises(CheckpointError, match="is damaged") as info:
        W.resolve_checkpoint("gma-sintel", cache_dir=cache)
    assert source.as_uri() in str(info.value)
    assert not (cache / "gma-sintel.pth").exists()
    assert leftovers(cache) == []


def test_download_extracts_zip_members(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    member_data = {}
    archive = tmp_path / "models.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for name in ("raft-things", "raft-small"):
            member = tmp_path / f"{name}.src"
            member_data[name] = tiny_state_file(member)
            bundle.write(member, f"models/{name}.pth")
    for name in ("raft-things", "raft-small"):
        spec = custom_spec(name, archive.as_uri(), archive_member=f"models/{name}.pth")
        monkeypatch.setitem(W.WEIGHTS, name, spec)
    cache = tmp_path / "cache"
    path = W.resolve_checkpoint("raft-things", cache_dir=cache)
    assert path.read_bytes() == member_data["raft-things"]
    # The sibling from the same archive was installed too, so no second download is needed.
    assert (cache / "raft-small.pth").read_bytes() == member_data["raft-small"]
    assert sorted(p.name for p in cache.iterdir()) == ["raft-small.pth", "raft-things.pth"]
    assert W.load_checkpoint(path)["update_block.gru.convz.weight"].shape == (2, 3)


def test_download_of_a_web_page_is_not_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    page = tmp_path / "quota.html"
    page.write_bytes(b"<!DOCTYPE html><html><body>Too many requests</body></html>")
    monkeypatch.setitem(W.WEIGHTS, "gma-kitti", custom_spec("gma-kitti", page.as_uri()))
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="did not send a PyTorch checkpoint") as info:
        W.resolve_checkpoint("gma-kitti", cache_dir=cache)
    assert str(cache / "gma-kitti.pth") in str(info.value)
    assert list(cache.iterdir()) == []


def test_download_cut_short_by_the_server_is_not_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A server that announces the whole file and closes the connection after a third of it:
    # urllib ends such a read without an error. GMA's entries publish no hash, so only the
    # announced length tells that the file is incomplete.
    data = tiny_state_file(tmp_path / "weights.pth") + bytes(4096)

    class CutShort(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 3])
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutShort)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/gma-sintel.pth"
        monkeypatch.setitem(W.WEIGHTS, "gma-sintel", custom_spec("gma-sintel", url))
        cache = tmp_path / "cache"
        with pytest.raises(CheckpointError, match=f"stopped after {len(data) // 3} of") as info:
            W.resolve_checkpoint("gma-sintel", cache_dir=cache)
    finally:
        server.shutdown()
        server.server_close()
    assert str(cache / "gma-sintel.pth") in str(info.value)
    assert list(cache.iterdir()) == []


def test_zip_without_the_member(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    archive = tmp_path / "models.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("models/other.pth", b"x")
    spec = custom_spec("raft-kitti", archive.as_uri(), archive_member="models/raft-kitti.pth")
    monkeypatch.setitem(W.WEIGHTS, "raft-kitti", spec)
    cache = tmp_path / "cache"
    with pytest.raises(
        CheckpointError, match=re.escape("no member 'models/raft-kitti.pth'")
    ) as info:
        W.resolve_checkpoint("raft-kitti", cache_dir=cache)
    assert archive.as_uri() in str(info.value)
    assert str(cache / "raft-kitti.pth") in str(info.value)
    assert list(cache.iterdir()) == []


def test_bottleneck_block_with_batch_norm_uses_norm4_alias() -> None:
    # Official BottleneckBlock(norm_fn="batch") registers its downsample norm as norm4.
    value = torch.ones(4)
    names = (
        "conv1",
        "conv2",
        "conv3",
        "norm1",
        "norm2",
        "norm3",
        "norm4",
        "downsample.0",
        "downsample.1",
    )
    official = {f"cnet.layer2.0.{name}.weight": value for name in names}
    tv = W.official_to_torchvision(official)
    assert set(tv) == {
        f"context_encoder.layer2.0.{name}.weight"
        for name in (
            "convnormrelu1.0",
            "convnormrelu1.1",
            "convnormrelu2.0",
            "convnormrelu2.1",
            "convnormrelu3.0",
            "convnormrelu3.1",
            "downsample.0",
            "downsample.1",
        )
    }
    assert set(W.torchvision_to_official(tv)) == set(official)
