"""The ONNX target's op-support table for ``interop check`` (stages/preflight.op_report asks each
target through ``Target.op_support``): whether the TorchScript or the dynamo exporter translates a
TorchScript op kind at an opset."""

from __future__ import annotations

from typing import Any

# scalar/list plumbing the TorchScript exporter folds away itself (no symbolic function needed)
_EXPORTER_BUILTINS = {"aten::Int", "aten::Float", "aten::Bool", "aten::ScalarImplicit", "aten::__getitem__",
                      "aten::len", "aten::list", "aten::format", "aten::warn", "aten::dim", "aten::__is__",
                      "aten::__isnot__", "aten::append", "aten::__not__", "aten::__contains__", "aten::device"}


def onnx_support(kind: str, opset: int) -> str:
    if kind.startswith("prim::PythonOp"):
        return "TorchScript exporter: no symbolic for a custom autograd Function; dynamo traces through it"
    import torch
    from torch.onnx._internal.torchscript_exporter import registration

    _fill_torchscript_registry()

    if not kind.endswith("__"):
        kind = kind.rstrip("_")  # in-place ops export as their functional form
    registered = registration.registry.is_registered_op
    # the exporter registers dunder ops one underscore short: aten::__and_, aten::__or_
    if kind in _EXPORTER_BUILTINS or registered(kind, opset) or (kind.endswith("__") and registered(kind[:-1], opset)):
        return "ok"
    namespace, name = kind.split("::", 1)
    if namespace != "aten":
        return f"missing in both exporters ({namespace}:: ops have no ONNX translation)"
    name = name.rstrip("_")
    if name.startswith("linalg_") and not _dynamo_has(name):
        return "missing in both exporters (dynamo decomposes it into ops ONNX has no function for)"
    packet = getattr(torch.ops.aten, name, None)
    composite = packet is not None and any(
        torch._C._dispatch_has_kernel_for_dispatch_key(packet.default.name(), key)
        for key in ("CompositeImplicitAutograd",)) if packet is not None and hasattr(packet, "default") else False
    if composite:
        return "TorchScript exporter: missing; dynamo decomposes it (interop falls back to dynamo)"
    if _dynamo_has(name):
        return "TorchScript exporter: missing; the dynamo exporter has it (interop falls back to dynamo)"
    if name.startswith("_"):  # e.g. _transformer_encoder_layer_fwd: eager's fused fast path, not what export sees
        return "TorchScript exporter: missing (a fused fast-path op); torch.export records unfused ops (dynamo)"
    return "missing in both exporters"


def _fill_torchscript_registry() -> None:
    """Import every symbolic_opset module, as the exporter does when it exports: each registers
    its ops (symbolic_opset20 alone lacks e.g. opset 11's upsample_bicubic2d, 14's SDPA)."""
    import importlib
    import pkgutil

    import torch.onnx._internal.torchscript_exporter as exporter

    for module in pkgutil.iter_modules(exporter.__path__):
        if module.name.startswith("symbolic_opset"):
            importlib.import_module(f"{exporter.__name__}.{module.name}")


def _dynamo_has(name: str) -> bool:
    """Whether the dynamo exporter's registry has ``aten.<name>`` or its ``_ex`` form."""
    import torch
    from torch.onnx._internal.exporter import _registration

    registry = _dynamo_registry(_registration)
    for candidate in (name, f"{name}_ex"):
        packet = getattr(torch.ops.aten, candidate, None)
        if packet is not None and hasattr(packet, "default") and registry.is_registered(packet.default):
            return True
    return False


_DYNAMO: list[Any] = []


def _dynamo_registry(module: Any) -> Any:
    if not _DYNAMO:
        _DYNAMO.append(module.ONNXRegistry.from_torchlib())
    return _DYNAMO[0]
