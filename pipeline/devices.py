"""Device and precision choices for the commands: they live beside the flow stage, in
:mod:`stages.devices`, which resolves ``flow.device`` and ``flow.precision`` itself."""

from stages.devices import PRECISIONS, cpu_has_native_bf16, resolve_device, resolve_precision

__all__ = ["PRECISIONS", "cpu_has_native_bf16", "resolve_device", "resolve_precision"]
