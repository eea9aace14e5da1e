"""The Core ML target's variant measures: its weights (``const`` ops of rank >= 2), a variant's
coverage (:mod:`interop.variants.coverage`), and where a variant's intermediate tensors first
depart from the base package's (the reference runtime's intermediate trace), naming the
decompression op a weight comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interop.variants.gates import Gate
from interop.variants.measures import below, describe_departure, summary


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
    return {**summary(weights, compressed), "stored_ratio": round(blobs[1] / max(1, blobs[0]), 4)}


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
            m = below(want.get(var.name), got.get(var.name), gate)
            if m is not None:
                return f"MIL op {op.op_type} {var.name!r}{_weight_of(op)}: {describe_departure(m)}"
    return None


def _weight_of(op: Any) -> str:
    """`` (weight from constexpr_lut_to_dense 'w')`` when an input of ``op`` is decompressed."""
    for var in op.inputs.values():
        for v in var if isinstance(var, (list, tuple)) else [var]:
            producer = getattr(v, "op", None)
            if producer is not None and producer.op_type.startswith("constexpr_"):
                return f" (weight from {producer.op_type} {producer.name!r})"
    return ""
