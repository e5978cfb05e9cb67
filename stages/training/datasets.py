"""Training samples as tensors: the synthetic generator behind a ``torch`` data set.

A sample is a dict of tensors:

- ``image1``, ``image2``: ``(3, H, W)`` float32 RGB in 0..255 (what the models take);
- ``flow``: ``(2, H, W)`` float32 pixels, channel 0 = x, frame 1 -> frame 2;
- ``valid``: ``(H, W)`` float32, 1 where the ground truth is defined.

Samples are pure functions of ``(seed, index)``: the trainer resumes exactly by continuing at
the next index, with any number of loader workers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import AugmentConfig, augment
from .synthetic import LayeredPairConfig, generate_pair
from .textures import TexturePool

#: Consecutive samples that share one generation of procedural textures.
TEXTURE_REUSE = 64


def to_sample(
    image1: np.ndarray, image2: np.ndarray, flow: np.ndarray, valid: np.ndarray
) -> dict[str, torch.Tensor]:
    """numpy ``(H, W, 3)`` uint8 images, ``(H, W, 2)`` flow, ``(H, W)`` valid -> sample dict."""
    return {
        "image1": torch.from_numpy(np.ascontiguousarray(image1)).permute(2, 0, 1).float(),
        "image2": torch.from_numpy(np.ascontiguousarray(image2)).permute(2, 0, 1).float(),
        "flow": torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1),
        "valid": torch.from_numpy(np.ascontiguousarray(valid, dtype=np.float32)),
    }


class SyntheticPairs(Dataset):
    """Layered synthetic pairs (:mod:`stages.training.synthetic`), photometric augmentation.

    Args:
        config: generator settings (size, motions, sprites ...).
        textures: texture pool (procedural and the user's media).
        seed: sample ``i`` uses ``numpy.random.default_rng([seed, i])``.
        length: number of samples (the generator is unbounded; the trainer asks for
            ``steps * batch_size``).
        augment_config: photometric augmentation (spatial augmentation is off: the generator
            already varies scale, rotation and position); ``None`` for none (validation).
    """

    def __init__(
        self,
        config: LayeredPairConfig,
        textures: TexturePool,
        *,
        seed: int,
        length: int,
        augment_config: AugmentConfig | None = None,
    ) -> None:
        self.config = config
        self.textures = textures
        self.seed = seed
        self.length = length
        self.augment_config = augment_config

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        pair = generate_pair(rng, self.textures, self.config, generation=index // TEXTURE_REUSE)
        image1, image2, flow = pair.image1, pair.image2, pair.flow
        valid = np.ones(flow.shape[:2], np.float32)
        if self.augment_config is not None:
            image1, image2, flow, valid = augment(rng, image1, image2, flow, valid,
                                                  self.augment_config)  # fmt: skip
        sample = to_sample(image1, image2, flow, valid)
        sample["occluded"] = torch.from_numpy(pair.occluded)
        return sample
