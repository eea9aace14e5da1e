"""How much of a model a compressed variant really compressed: coverage as a number.

The weights of a model are its float constants of rank >= 2 (ONNX initializers, Core ML ``const``
ops): biases, norms' scales and shape constants are not weights. A weight is *compressed* in a
variant when the variant no longer stores it as the same float constant (same name, same float
dtype, same number of values): it became ``MatMulNBits`` / ``ConvInteger`` / ``DequantizeLinear``
data, fp16, or a ``constexpr_*`` op's input. Coverage is measured from the two artifacts on disk,
never from what the library says it did, per op kind (the op that reads the weight in the base
artifact: ``Gemm``, ``MatMul``, ``Conv``, ``Gather``, ``LSTM``; ``linear``, ``conv``, ``gather``
...), in bytes as the base artifact stores them. ``stored_ratio``: the bytes of every stored
constant of the variant (ONNX initializers, the Core ML package's weight blobs) over the base's.

A variant that compresses less than ``MIN_COVERAGE`` of the weight bytes, or whose artifact keeps
more than ``MAX_RATIO`` of the base artifact's size, is not a variant: the build reports it
``not-applicable`` with the reason and does not write it (:func:`not_applicable`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MIN_COVERAGE = 0.10  # share of the weight bytes a variant must hold in compressed form
MAX_RATIO = 0.90  # a variant this close to the base artifact's size is not worth shipping
LISTED = 12  # at most this many uncompressed weight names in a report row


def _summary(weights: dict[str, tuple[str, int]], compressed: set[str]) -> dict[str, Any]:
    """``weights``: name -> (op kind, bytes in the base artifact)."""
    total = sum(b for _, b in weights.values())
    done = sum(b for n, (_, b) in weights.items() if n in compressed)
    by_op: dict[str, dict[str, Any]] = {}
    for name, (kind, size) in sorted(weights.items(), key=lambda kv: kv[1][0]):
        entry = by_op.setdefault(kind, {"weights": 0, "compressed": 0, "bytes": 0, "compressed_bytes": 0})
        entry["weights"] += 1
        entry["bytes"] += size
        if name in compressed:
            entry["compressed"] += 1
            entry["compressed_bytes"] += size
    for entry in by_op.values():
        entry["fraction"] = round(entry["compressed_bytes"] / entry["bytes"], 4) if entry["bytes"] else None
    left = sorted((n for n in weights if n not in compressed), key=lambda n: -weights[n][1])
    return {"fraction": round(done / total, 4) if total else 0.0, "weight_bytes": total, "compressed_bytes": done,
            "weights": len(weights), "compressed": len(compressed & set(weights)), "by_op": by_op,
            "uncompressed": left[:LISTED], "uncompressed_count": len(left)}


# -------------------------------------------------------------------------------------------- ONNX


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
    return {**_summary(weights, compressed), "stored_ratio": round(variant_bytes / max(1, base_bytes), 4)}


# ----------------------------------------------------------------------------------------- Core ML


def coreml_weights(model: Any) -> dict[str, tuple[str, int]]:
    """Name -> (op kind of its first reader, bytes) of the float constants of rank >= 2 of an MLModel."""
    import coremltools.optimize.coreml as cto

    from interop.support.quiet import captured

    with captured():
        meta = cto.get_weights_metadata(model, weight_threshold=0)
    out = {}
    for name, m in meta.items():
        val = np.asarray(m.val)
        if val.ndim >= 2 and val.dtype.kind == "f":
            kind = m.child_ops[0].op_type if m.child_ops else "other"
            out[name] = (kind, int(val.nbytes))
    return out


def coreml_coverage(base: Path, variant: Path) -> dict[str, Any]:
    import coremltools as ct

    from interop.support.quiet import captured

    with captured():
        weights = coreml_weights(ct.models.MLModel(str(base), skip_model_load=True))
        left = coreml_weights(ct.models.MLModel(str(variant), skip_model_load=True))
    compressed = {n for n in weights if n not in left or left[n][1] != weights[n][1]}
    blobs = [sum(p.stat().st_size for p in Path(d).rglob("weights/*") if p.is_file()) for d in (base, variant)]
    return {**_summary(weights, compressed), "stored_ratio": round(blobs[1] / max(1, blobs[0]), 4)}


MEASURE = {"onnx": onnx_coverage, "coreml": coreml_coverage}


def measure(target: str, base: Path, variant: Path) -> dict[str, Any] | None:
    """Coverage of ``variant`` against ``base``; None for a target without a measure."""
    fn = MEASURE.get(target)
    return fn(base, variant) if fn else None


def not_applicable(coverage: dict[str, Any] | None, ratio: float | None) -> str | None:
    """Why a variant is not a variant (None: it is one)."""
    if coverage is not None:
        if not coverage["weights"]:
            return "the model has no weight tensor (float constant of rank >= 2) to compress"
        if coverage["fraction"] < MIN_COVERAGE:
            kinds = ", ".join(f"{k} {v['fraction']:.0%}" for k, v in coverage["by_op"].items())
            return (f"compresses {coverage['fraction']:.0%} of the weight bytes (under {MIN_COVERAGE:.0%}; "
                    f"per op kind: {kinds}): not written")
    if ratio is not None and ratio > MAX_RATIO:
        return f"keeps {ratio:.0%} of the base artifact's size (over {MAX_RATIO:.0%}): not written"
    return None


def describe(coverage: dict[str, Any] | None) -> str:
    """``62% of weight bytes (Gemm 100%, Gather 0%)`` for tables and notes."""
    if not coverage:
        return ""
    kinds = ", ".join(f"{k} {v['fraction']:.0%}" for k, v in coverage["by_op"].items() if v["fraction"] is not None)
    return f"{coverage['fraction']:.0%} of weight bytes" + (f" ({kinds})" if kinds else "")
