"""Device and precision choices: clear errors, and a warning where bf16 would be emulated."""

from __future__ import annotations

import logging

import pytest
import torch

import stages.devices as devices


def test_precisions_map_to_autocast_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    # as on a CPU with bf16 instructions, whatever this one has (emulated bf16: next test)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    cpu = torch.device("cpu")
    assert devices.resolve_precision("fp32", cpu) is None
    assert devices.resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        devices.resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="unknown precision"):
        devices.resolve_precision("int8", cpu)


@pytest.mark.parametrize(("native", "warned"), [(False, True), (True, False), (None, False)])
def test_bf16_on_a_cpu_without_bf16_instructions_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, native, warned
) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger="stages.devices"):
        dtype = devices.resolve_precision("bf16", torch.device("cpu"))
    assert ("is emulated" in caplog.text) is warned
    assert dtype is (None if warned else torch.bfloat16)  # emulated bf16 runs as fp32
    assert devices.precision_name(dtype) == ("fp32" if warned else "bf16")


def test_cpu_flags_are_read() -> None:
    assert devices.cpu_has_native_bf16() in (True, False, None)
    info = devices.cpu_info()
    assert info["model"] and info["cores"] >= 1
    assert set(info["flags"]) <= set(devices.KERNEL_FLAGS)
    if devices.cpu_has_native_bf16():
        assert {"avx512_bf16", "amx_bf16"} & set(info["flags"])


def test_devices_that_are_not_there_are_refused_by_name() -> None:
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        with pytest.raises(ValueError, match=f"there are {count} CUDA device"):
            devices.resolve_device(f"cuda:{count}")
    else:
        with pytest.raises(ValueError, match="'cuda:0' requested but CUDA is not available"):
            devices.resolve_device("cuda:0")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        with pytest.raises(ValueError, match="'mps' requested but MPS is not available"):
            devices.resolve_device("mps")
    assert devices.resolve_device("cpu") == torch.device("cpu")
