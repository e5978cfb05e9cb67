"""The pipeline's steps, one job per module, and the chunk that flows between them.

Contract and unit of work: ``base`` (``FrameChunk``, the stage contract). Stages: ``decode``
(package ``decoding``: backends, probing, frame selection, chunks), ``flow``, ``writers``
(with the formats of ``flow_io``, ``flow_jpeg``, ``image_io``, ``streaming`` and
``flow_viz``), ``warp_stage`` (with ``warp``, ``occlusion``, ``consistency`` and
``error_plot``),
``clip_features`` (with ``motion_features``, ``flow_statistics``, ``motionsqueeze_maps``,
``frame_descriptor`` and ``feature_io``).
Settings: ``settings`` (one frozen dataclass per section of the run configuration, each the
config of its stage), ``devices`` (``auto`` device, autocast dtype). Helpers: ``cpu_workers``.
Training data: package ``training`` (data set readers, the synthetic pair generator,
augmentations).

Imports ``models`` and never ``pipeline``: no CLI, no YAML or overrides, no progress output.
"""
