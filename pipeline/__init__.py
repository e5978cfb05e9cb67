"""Orchestration: configuration, inputs, runs, executors, manifest and the CLI.

Configuration: ``config``, ``train_config``, ``devices``, ``model_choice``, ``estimators``.
Inputs and outputs: ``discovery``, ``images``, ``example``, ``manifest``, ``tables``,
``json_files`` (strict JSON: NaN as null). Running:
``run_start``, ``runner`` (the stages over one video), ``batch`` (many videos: lock,
failure policy), ``resume`` (what ``--resume`` keeps), ``executors`` (the contract,
in-process), ``worker_processes``, ``ray_executor``, ``overlap``, ``allocator``. Commands:
``cli`` (the group and its table of commands, each imported when used), ``startup``
(imports without the garbage collector's passes), ``cli_common``, ``progress`` (the bars:
live on a terminal, a line every 30 s in a log), ``logs``, and
one module per command beside its library (``run_cmd``, ``pair_cmd``, ``consistency_cmd``,
``evaluate`` / ``evaluate_cmd``, ``inspect`` / ``inspect_cmd`` / ``inspect_report``,
``training`` / ``training_log`` / ``training_weights`` / ``train_cmd``, ``annotations`` / ``annotations_cmd``,
``config_cmd``).

Imports ``stages`` and ``models``; ``run_pipeline.py`` is the only thing above it.
"""
