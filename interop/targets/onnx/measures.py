"""The ONNX target's variant measures: its weights (float initializers of rank >= 2), a variant's
coverage (:mod:`interop.variants.coverage`), and where a variant's intermediate tensors first
depart from the base model's (every node output exposed in ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interop.variants.gates import Gate
from interop.variants.measures import below, describe_departure, summary


def onnx_weights(path: Path) -> dict[str, tuple[str, int]]:
    """Name -> (op kind of its first reader, bytes) of the float initializers of rank >= 2."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path), load_external_data=False)
    readers: dict[str, str] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, node.op_type)
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
    out = {}
    for t in model.graph.initializer:
        if t.data_type in floats and len(t.dims) >= 2:
            size = int(np.prod(t.dims)) * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
            out[t.name] = (readers.get(t.name, "other"), size)
    return out


def _onnx_stored(path: Path) -> tuple[dict[str, tuple[int, int]], int]:
    """Name -> (dtype, element count) of every initializer, and their bytes in all."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    stored = {t.name: (t.data_type, int(np.prod(t.dims))) for t in model.graph.initializer}
    size = 0
    for t in model.graph.initializer:
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 1
        bits = 4 if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) else 8 * itemsize
        size += int(np.prod(t.dims)) * bits // 8
    return stored, size


def onnx_coverage(base: Path, variant: Path) -> dict[str, Any]:
    weights = onnx_weights(base)
    before, base_bytes = _onnx_stored(base)
    after, variant_bytes = _onnx_stored(variant)
    compressed = {n for n in weights if after.get(n) != before[n]}
    return {**summary(weights, compressed), "stored_ratio": round(variant_bytes / max(1, base_bytes), 4)}


def onnx_where(base: Path, variant: Path, sample: dict[str, np.ndarray], gate: Gate) -> str | None:
    from interop.runtimes.onnxruntime import run_all_outputs

    want, _ = run_all_outputs(base, sample)
    got, nodes = run_all_outputs(variant, sample)
    for node in nodes:
        for out in node.output:
            m = below(want.get(out), got.get(out), gate)
            if m is not None:
                return f"ONNX node {node.op_type} {node.name or out!r} (output {out!r}): {describe_departure(m)}"
    return None
