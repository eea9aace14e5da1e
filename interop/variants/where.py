"""Where a compressed variant's error first grows past its gate.

The base artifact was verified against PyTorch; a variant is the same graph with compressed
weights (and, for the calibrated variants, quantized activations), and its tensors keep their
names. So every intermediate tensor of the variant is compared with the base artifact's tensor of
the same name on the failing sample, in program order, with the same metric as the gate (PSNR,
peak = max |base value|, and cosine): the first tensor below the gate is named, with the op that
computes it and, for Core ML, the decompression op (``constexpr_*``) its weight comes from.
Built on the localisation of :mod:`interop.stages.localise` (the reference runtime's
intermediate trace; ONNX Runtime with every node output exposed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interop.compare import metrics
from interop.variants.gates import Gate

TINY = 1e-6  # a base value this small carries no signal to keep


def _below(base: Any, got: Any, gate: Gate) -> dict[str, float] | None:
    """The metrics of ``got`` against ``base`` when they miss the gate's PSNR or cosine, else None."""
    if not isinstance(base, np.ndarray) or not isinstance(got, np.ndarray):
        return None
    if base.dtype.kind != "f" or got.dtype.kind != "f" or base.shape != got.shape or base.size < 2 \
            or float(np.max(np.abs(base))) < TINY:  # a name reused for a quantized (integer) tensor is no match
        return None
    if not np.all(np.isfinite(base)):
        return None
    m = metrics(base, got)
    if not np.all(np.isfinite(got)) or m["psnr_db"] < gate.limits["psnr"] or m["cosine"] < gate.limits["cosine"]:
        return m
    return None


def _describe(m: dict[str, float]) -> str:
    return f"PSNR {m['psnr_db']:.1f} dB, cosine {m['cosine']:.4f} against the base artifact"


def coreml_where(base: Path, variant: Path, feed: dict[str, np.ndarray], gate: Gate) -> str | None:
    from interop.runtimes import mil
    from interop.stages.localise import _all_ops

    _, want = mil.load_model(base).predict(feed, intermediate=True)
    loaded = mil.load_model(variant)
    _, got = loaded.predict(feed, intermediate=True)
    from interop.runtimes.mil.values import numpy_dtype

    for op in _all_ops(loaded.program.functions["main"]):
        if op.op_type.startswith("constexpr_") or op.op_type in ("const", "quantize"):
            continue
        for var in op.outputs:
            if np.dtype(numpy_dtype(var)).kind != "f":  # declared integer (a quantized activation)
                continue
            m = _below(want.get(var.name), got.get(var.name), gate)
            if m is not None:
                return f"MIL op {op.op_type} {var.name!r}{_weight_of(op)}: {_describe(m)}"
    return None


def _weight_of(op: Any) -> str:
    """`` (weight from constexpr_lut_to_dense 'w')`` when an input of ``op`` is decompressed."""
    for var in op.inputs.values():
        for v in var if isinstance(var, (list, tuple)) else [var]:
            producer = getattr(v, "op", None)
            if producer is not None and producer.op_type.startswith("constexpr_"):
                return f" (weight from {producer.op_type} {producer.name!r})"
    return ""


def onnx_where(base: Path, variant: Path, sample: dict[str, np.ndarray], gate: Gate) -> str | None:
    from interop.runtimes.onnxruntime import run_all_outputs

    want, _ = run_all_outputs(base, sample)
    got, nodes = run_all_outputs(variant, sample)
    for node in nodes:
        for out in node.output:
            m = _below(want.get(out), got.get(out), gate)
            if m is not None:
                return f"ONNX node {node.op_type} {node.name or out!r} (output {out!r}): {_describe(m)}"
    return None


def where(target: str, base: Path, variant: Path, feed: dict[str, np.ndarray], gate: Gate) -> str | None:
    """Best effort: a localisation that fails says nothing rather than failing the build."""
    try:
        if target == "coreml":
            return coreml_where(base, variant, feed, gate)
        if target == "onnx":
            return onnx_where(base, variant, feed, gate)
    except Exception:
        return None
    return None
