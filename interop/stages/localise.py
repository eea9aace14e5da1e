"""Name where an artifact departs from PyTorch.

* ONNX: every intermediate tensor is exposed as a graph output and run through ONNX Runtime;
  PyTorch's intermediate values come from forward hooks on every module. The first node (in graph
  order) whose output matches no PyTorch module output of its shape while its inputs still do is
  named, with the module it came from where the export recorded it.
* Core ML: the reference runtime runs the package twice with every op output recorded — as
  declared (fp16 ops in fp16) and as an fp32 shadow. The first op that turns non-finite, or departs
  from its fp32 shadow beyond the fp16 tolerance, is named: the precision problem's origin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interop.compare import DEFAULT_TOLERANCES, metrics


def _departs(value: np.ndarray, shadow: np.ndarray, rel_l2: float) -> str | None:
    if value.dtype.kind != "f" or value.shape != shadow.shape:
        return None
    if not np.all(np.isfinite(value)) and np.all(np.isfinite(shadow)):
        return "becomes Inf/NaN (beyond fp16 range: max |fp32 value| = %.3g)" % float(np.max(np.abs(shadow)))
    m = metrics(shadow, value)
    if np.isfinite(m["rel_l2"]) and m["rel_l2"] > rel_l2 and float(np.max(np.abs(shadow))) > 1e-6:
        return f"departs from its fp32 value (rel_l2 {m['rel_l2']:.2e})"
    return None


def first_coreml_departure(path: Path, feed: dict[str, np.ndarray], module: Any = None,
                           sample: dict[str, np.ndarray] | None = None, names: list[str] | None = None) -> str | None:
    """The first MIL op whose output leaves its fp32 shadow (a precision problem); failing that,
    the PyTorch layer after which the program's values stop matching PyTorch's."""
    from interop.runtimes import mil

    loaded = mil.load_model(path)
    _, declared = loaded.predict(feed, intermediate=True)
    _, shadow = loaded.predict(feed, intermediate=True, promote_fp16=True)
    limit = DEFAULT_TOLERANCES["fp16"]["rel_l2"]
    ops = {var.name: op for op in _all_ops(loaded.program.functions["main"]) for var in op.outputs}
    for name, value in declared.items():
        if name in shadow and isinstance(value, np.ndarray):
            why = _departs(value, np.asarray(shadow[name]), limit)
            if why:
                op = ops.get(name)
                kind = f"{op.op_type} " if op is not None else ""
                return f"first departure at MIL op {kind}{name!r}: {why}"
    if module is not None and sample is not None and names:
        layer = departure_layer(_module_outputs(module, sample, names), list(declared.values()),
                                rel_l2=DEFAULT_TOLERANCES["fp16"]["rel_l2"])
        if layer:
            return f"first departure after PyTorch layer {layer!r} (no later layer's value is found in the Core ML program)"
    return None


def _all_ops(block: Any):
    for op in block.operations:
        yield op
        for inner in getattr(op, "blocks", []):
            yield from _all_ops(inner)


def first_onnx_departure(path: Path, module: Any, sample: dict[str, np.ndarray], names: list[str]) -> str | None:
    """The first PyTorch layer after which no layer's value can be found among the ONNX graph's
    intermediate tensors (ONNX Runtime run with every node output exposed)."""
    from interop.runtimes.onnxruntime import run_all_outputs

    torch_values = _module_outputs(module, sample, names)
    if not torch_values:
        return None
    try:
        values = list(run_all_outputs(path, sample)[0].values())
    except Exception:
        return None
    layer = departure_layer(torch_values, values)
    return f"first departure after PyTorch layer {layer!r} (no later layer's value is found in the ONNX graph)" if layer else None


def departure_layer(torch_values: dict[str, np.ndarray], artifact_values: list[Any], rel_l2: float = 1e-3) -> str | None:
    """The layer right after the last PyTorch layer (in execution order) whose output is found
    among the artifact's intermediate values; robust to fused layers, whose own outputs vanish."""
    by_shape: dict[tuple, list[np.ndarray]] = {}
    for v in artifact_values:
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            by_shape.setdefault(tuple(v.shape), []).append(v.astype(np.float32))
    layers = list(torch_values)
    found = [any(metrics(ref, v)["rel_l2"] <= rel_l2 for v in by_shape.get(tuple(ref.shape), []))
             for ref in torch_values.values()]
    last = max((i for i, ok in enumerate(found) if ok), default=-1)
    return layers[last + 1] if last + 1 < len(layers) else None


def _module_outputs(module: Any, sample: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    import torch

    values: dict[str, np.ndarray] = {}
    hooks = []
    for path, sub in module.named_modules():
        if isinstance(sub, torch.jit.ScriptModule):
            continue

        def hook(_m: Any, _i: Any, out: Any, path: str = path) -> None:
            if isinstance(out, torch.Tensor) and path not in ("", "inner"):
                values[path.removeprefix("inner.")] = out.detach().numpy()

        hooks.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(*[torch.from_numpy(sample[n]) for n in names])
    finally:
        for h in hooks:
            h.remove()
    return values


def localise(find: Any) -> str:
    """``; <where it departs>`` or "" — localisation is best effort and never fails a build."""
    try:
        where = find()
    except Exception:
        return ""
    return f"; {where}" if where else ""
