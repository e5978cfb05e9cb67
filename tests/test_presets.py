"""Every YAML preset in ``configs/`` loads as the configuration its command reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.train_config import load_train_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TRAIN_PRESETS = sorted(CONFIGS.glob("train-*.yaml"))
RUN_PRESETS = sorted(set(CONFIGS.glob("*.yaml")) - set(TRAIN_PRESETS))


@pytest.mark.parametrize("preset", TRAIN_PRESETS, ids=lambda p: p.stem)
def test_train_presets_load(preset: Path, tmp_path: Path) -> None:
    sources = yaml.safe_load(preset.read_text()).get("data", [])
    missing = {  # roots the preset leaves to --set
        f"data.{i}.root": str(tmp_path)
        for i, source in enumerate(sources)
        if source.get("kind", "synthetic") != "synthetic" and source.get("root") is None
    }
    config = load_train_config(preset, missing)
    for source in config.data:
        assert config.augmentation(source).crop == tuple(config.crop)


@pytest.mark.parametrize("preset", RUN_PRESETS, ids=lambda p: p.stem)
def test_run_presets_load(preset: Path) -> None:
    load_config(preset)


def test_the_kitti_preset_is_the_official_kitti_stage() -> None:
    config = load_train_config(CONFIGS / "train-kitti.yaml", {"data.0.root": "KITTI"})
    augment = config.augmentation(config.data[0])
    assert (config.init_checkpoint, config.crop, config.gamma) == ("raft-sintel", (288, 960), 0.85)
    assert (augment.min_scale, augment.max_scale, augment.hflip_prob) == (-0.2, 0.4, 0.0)
    assert augment.brightness == 0.3 and augment.asymmetric_color == 0.0
