"""ONNX graph -> PyTorch module, so an ``.onnx`` source can go through interop's own Core ML path.

The converter is onnx2torch (a maintained, torch.fx-based converter: its modules capture cleanly
with torch.jit.trace and torch.export, and keep dynamic shapes as shape arithmetic). It was chosen
over onnx2pytorch on this machine (see pyproject.toml): onnx2pytorch executes the graph node by
node in Python with data-dependent shapes, so torch.export fails on 7 of 8 zoo models
(GuardOnDataDependentSymNode), and torch.jit.trace bakes sizes into constants (the zoo's diff
model is wrong at a second size) or crashes the process (segfault tracing BERT).

onnx2torch registers converters per (op type, opset version) and stops at opset ~16. Later opsets
mostly re-issued ops without changing what they compute for the types interop handles (they added
data types such as bfloat16, int4 or float8). ``VERSION_ALIASES`` maps each such later version to
the newest registered one — checked op by op against the ONNX changelog; an op whose semantics
changed (ReduceMean 18 takes ``axes`` as an input) gets its own converter below instead.

Imports: onnx2torch imports torchvision at import time only for its NMS and RoiAlign converters;
torchvision cannot be installed beside this torch (its CUDA build). ``_import_onnx2torch`` gives it
a placeholder module for the import (removed again right after, so no other library sees a
torchvision) whose functions raise: a graph with NMS/RoiAlign is reported as converter-blocked.
"""

from __future__ import annotations

import sys
import types
from typing import Any

# (op type, version onnx2torch lacks) -> registered version with the same semantics for the types
# interop feeds (fp32/fp16/int64/int32/bool). Each line checked against onnx/docs/Changelog.md.
VERSION_ALIASES: dict[tuple[str, int], int] = {
    ("Constant", 19): 13, ("Constant", 21): 13,  # + string/float8/int4 value types
    ("Shape", 19): 15, ("Shape", 21): 15,  # + types
    ("Size", 19): 13, ("Size", 21): 13,
    ("Reshape", 19): 14, ("Reshape", 21): 14,
    ("Cast", 19): 13, ("Cast", 21): 13,  # + saturate attribute (float8 only)
    ("Identity", 19): 16, ("Identity", 21): 16,
    ("Pad", 18): 13, ("Pad", 19): 13, ("Pad", 21): 13,  # 18: optional axes input (checked below)
    ("Equal", 19): 13,
    ("Squeeze", 21): 13, ("Unsqueeze", 21): 13, ("Transpose", 21): 13, ("Flatten", 21): 13,
    ("Scan", 21): 19, ("ConstantOfShape", 19): 9, ("ConstantOfShape", 20): 9, ("ConstantOfShape", 21): 9,
    ("Split", 18): 13,  # 18: num_outputs attribute (checked below)
    # Resize 10-19: its own converter (sources/onnx_resize.py), every version
    ("ReduceMax", 18): 13, ("ReduceMin", 18): 13, ("ReduceProd", 18): 13, ("ReduceL2", 18): 13,
    ("ReduceSumSquare", 18): 13, ("ReduceLogSumExp", 18): 13, ("ReduceL1", 18): 13,
    ("ReduceMean", 18): 13, ("ReduceLogSum", 18): 13,  # 18: axes as an input: see _axes_from_input
    ("ReduceMax", 20): 13, ("ReduceMin", 20): 13,  # + bool
    ("AveragePool", 19): 11, ("Pad", 23): 13, ("Constant", 23): 13, ("Cast", 23): 13, ("Shape", 23): 15,
    ("Reshape", 23): 14, ("Identity", 23): 16, ("Squeeze", 23): 13, ("Unsqueeze", 23): 13,
    ("Transpose", 23): 13, ("Flatten", 23): 13, ("Size", 23): 13, ("ConstantOfShape", 23): 9,
    # opset 22 re-issued these for bfloat16 only (Changelog: "22: type constraints extended")
    ("Conv", 22): 11, ("ConvTranspose", 22): 11, ("MaxPool", 22): 12, ("AveragePool", 22): 11,
    ("GlobalAveragePool", 22): 1, ("GlobalMaxPool", 22): 1, ("InstanceNormalization", 22): 6,
    ("Dropout", 22): 13, ("Elu", 22): 6, ("Selu", 22): 6, ("HardSigmoid", 22): 6, ("Softplus", 22): 1,
    ("Softsign", 22): 1, ("Mish", 22): 18, ("HardSwish", 22): 14,
}
# attribute or input that makes a later version compute something the aliased converter does not
_NOT_ALIASED_WHEN = {
    "Pad": lambda node: (len(node.input) > 3 and bool(node.input[3])) or any(  # 18: axes input; 19: mode wrap
        a.name == "mode" and a.s == b"wrap" for a in node.attribute),
    "AveragePool": lambda node: any(a.name == "dilations" and any(v != 1 for v in a.ints) for a in node.attribute),
}
_REDUCE_AXES_INPUT = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare",
                      "ReduceLogSumExp", "ReduceL1", "ReduceLogSum")
CONVERTER = "onnx2torch"


def _placeholder_torchvision() -> dict[str, types.ModuleType]:
    def missing(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("torchvision is not installed: onnx2torch cannot convert NMS / RoiAlign here")

    def attr(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return missing

    mods = {}
    for name in ("torchvision", "torchvision.ops", "torchvision.io"):
        mod = types.ModuleType(name)
        mod.__getattr__ = attr  # type: ignore[attr-defined]
        mod.__path__ = []  # type: ignore[attr-defined]
        mods[name] = mod
    mods["torchvision"].ops = mods["torchvision.ops"]  # type: ignore[attr-defined]
    return mods


def _import_onnx2torch() -> Any:
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    try:
        import torchvision  # noqa: F401
        placeholder: dict[str, types.ModuleType] = {}
    except Exception:
        placeholder = _placeholder_torchvision()
    saved = {k: sys.modules.get(k) for k in placeholder}
    sys.modules.update(placeholder)
    try:
        import onnx2torch
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    _register_aliases()
    from interop.sources import onnx_extra_ops

    onnx_extra_ops.register()
    _name_nodes_in_errors()
    return onnx2torch


class NodeConversionError(RuntimeError):
    """A converter failed on one node: the message names it (op type and node name) first."""


def _name_nodes_in_errors() -> None:
    """Every registered converter re-raises its failure naming the ONNX node it was converting, so a
    converter error that is not a missing op still says where (``Conv node '/conv/Conv': ...``)."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY

    for key, convert in list(_CONVERTER_REGISTRY.items()):
        if not getattr(convert, "_names_node", False):
            _CONVERTER_REGISTRY[key] = _naming(convert)


def _naming(convert: Any) -> Any:
    def converter(node: Any, graph: Any) -> Any:
        try:
            return convert(node, graph)
        except NodeConversionError:
            raise
        except Exception as exc:
            proto = node.proto
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise NodeConversionError(f"{proto.op_type} node {proto.name or '(unnamed)'!r}: {type(exc).__name__}"
                                      + (f": {text}" if text else "")) from exc

    converter._names_node = True  # type: ignore[attr-defined]
    return converter


def _register_aliases() -> None:
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

    gelu = OperationDescription(domain="", operation_type="Gelu", version=20)
    if gelu not in _CONVERTER_REGISTRY:
        _CONVERTER_REGISTRY[gelu] = _gelu

    for (op, version), have in VERSION_ALIASES.items():
        new = OperationDescription(domain="", operation_type=op, version=version)
        old = OperationDescription(domain="", operation_type=op, version=have)
        if new not in _CONVERTER_REGISTRY and old in _CONVERTER_REGISTRY:
            _CONVERTER_REGISTRY[new] = _guarded(op, _CONVERTER_REGISTRY[old])


def _gelu(node: Any, graph: Any) -> Any:
    """ONNX Gelu (opset 20): torch.nn.GELU with the same ``approximate`` ('none' or 'tanh')."""
    import torch
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    approximate = node.attributes.get("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    return OperationConverterResult(torch_module=torch.nn.GELU(approximate=approximate),
                                    onnx_mapping=onnx_mapping_from_node(node))


def _guarded(op: str, convert: Any) -> Any:
    def converter(node: Any, graph: Any) -> Any:
        proto = node.proto
        if op in _NOT_ALIASED_WHEN and _NOT_ALIASED_WHEN[op](proto):
            raise NotImplementedError(f"{op} with this opset's new attributes/inputs is not converted")
        if op in _REDUCE_AXES_INPUT and len(proto.input) > 1 and proto.input[1]:
            return _reduce_with_axes_input(node, graph, convert)
        return convert(node, graph)

    return converter


def _reduce_with_axes_input(node: Any, graph: Any, convert: Any) -> Any:
    """Opset 18 reductions take ``axes`` as an input; a constant one becomes the attribute the
    opset-13 converter understands (a computed one is not converted)."""
    import copy

    import onnx
    from onnx import numpy_helper
    from onnx2torch.onnx_node import OnnxNode

    proto = copy.deepcopy(node.proto)
    axes = _constant_value(graph, proto.input[1])
    if axes is None:
        raise NotImplementedError(f"{proto.op_type} with computed (non-constant) axes")
    del proto.input[1:]
    proto.attribute.append(onnx.helper.make_attribute("axes", [int(a) for a in axes.ravel()]))
    del numpy_helper
    return convert(OnnxNode(proto, node.unique_name), graph)


def _constant_value(graph: Any, name: str) -> Any:
    from onnx import numpy_helper

    init = graph.initializers.get(name)
    if init is not None:
        return init.to_numpy() if hasattr(init, "to_numpy") else numpy_helper.to_array(init.proto)
    for node in graph.proto.node:
        if name in node.output and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
                if attr.name == "value_ints":
                    import numpy as np

                    return np.asarray(list(attr.ints))
    return None


INSTALL_HINT = f"pip install --no-deps {CONVERTER}==1.5.15 (the Makefile does)"


def available() -> bool:
    try:
        _import_onnx2torch()
    except ImportError:
        return False
    return True


def unsupported_ops(model: Any) -> list[dict[str, Any]]:
    """ONNX nodes the converter has no converter for, grouped by op type with node names and counts
    (empty when the converter is not installed: :func:`available` says so)."""
    if not available():
        return []
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

    opset = {o.domain or "": o.version for o in model.opset_import}
    found: dict[str, dict[str, Any]] = {}
    for node in _all_nodes(model.graph):
        domain = node.domain or ""
        since = _since_version(domain, node.op_type, opset.get(domain, opset.get("ai.onnx", 1)))
        known = OperationDescription(domain=domain, operation_type=node.op_type, version=since) in _CONVERTER_REGISTRY
        blocked = not known or (node.op_type in _NOT_ALIASED_WHEN and since > 13 and _NOT_ALIASED_WHEN[node.op_type](node))
        if blocked:
            entry = found.setdefault(node.op_type, {"op": node.op_type, "domain": domain or "ai.onnx", "count": 0,
                                                    "nodes": [], "converter": CONVERTER})
            entry["count"] += 1
            if len(entry["nodes"]) < 5:
                entry["nodes"].append(node.name or "(unnamed)")
    return sorted(found.values(), key=lambda e: -e["count"])


def _since_version(domain: str, op: str, opset: int) -> int:
    """The version of ``op``'s schema in force at ``opset`` (what onnx2torch looks converters up by)."""
    from onnx import defs

    try:
        return defs.get_schema(op, max_inclusive_version=opset, domain=domain).since_version
    except Exception:
        return opset


def _all_nodes(graph: Any):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_nodes(attr.g)


def convert(model: Any) -> Any:
    """The ONNX ModelProto as a torch.fx GraphModule (eval mode); raises with the converter's words."""
    try:
        onnx2torch = _import_onnx2torch()
    except ImportError as exc:
        raise ImportError(f"{CONVERTER} is not installed: {INSTALL_HINT}") from exc
    import copy

    return onnx2torch.convert(copy.deepcopy(model)).eval()


def version() -> str | None:
    try:
        from importlib.metadata import version as dist_version

        return dist_version(CONVERTER)
    except Exception:
        return None
