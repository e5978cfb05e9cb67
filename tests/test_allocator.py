"""pipeline.allocator: large blocks kept for reuse, handed back when turned off, env respected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, os, sys
import torch
from pipeline.allocator import set_large_block_reuse

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def after_free():
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB: above glibc's largest mmap threshold
    del block
    return rss_mib()

out = {"base": rss_mib(), "on": set_large_block_reuse(True)}
out["kept"] = after_free()
out["off"] = set_large_block_reuse(False)
out["released"] = rss_mib()
print(json.dumps(out))
"""


def _probe(env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env}, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_freed_large_blocks_are_kept_while_on_and_handed_back_when_off() -> None:
    out = _probe({})
    assert out["on"] is True and out["off"] is False
    assert out["kept"] - out["base"] >= 60  # the freed 64 MiB block stayed for reuse
    assert out["released"] - out["base"] < 30  # malloc_trim gave it back


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_malloc_settings_from_the_environment_are_left_alone() -> None:
    out = _probe({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"})
    assert out["on"] is False
    assert out["kept"] - out["base"] < 30  # glibc's default: the block was unmapped
