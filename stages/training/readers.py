"""Readers for optical-flow data sets on disk (filled in by the data set readers work)."""

from __future__ import annotations

#: ``synthetic`` is the built-in generator; the others read files under a root folder.
DATASET_KINDS: tuple[str, ...] = (
    "synthetic",
    "chairs",
    "things",
    "sintel",
    "kitti",
    "hd1k",
    "folder",
)


def build_reader_dataset(source, augment_config, *, seed: int):
    """A training data set for a :class:`pipeline.train_config.DataSource` read from disk."""
    raise NotImplementedError(f"the {source.kind} reader is not available yet")
