"""What the targets' variant plugins measure, shared: the coverage summary of a variant's weights
(:mod:`interop.variants.coverage` defines coverage) and whether an intermediate tensor of a variant
departs from its base artifact's past a gate (:mod:`interop.variants.where`). Each target's own
``measures`` module reads its artifacts; this module only does the arithmetic."""

from __future__ import annotations

from typing import Any

import numpy as np

from interop.compare import metrics
from interop.variants.gates import Gate

LISTED = 12  # at most this many uncompressed weight names in a report row
TINY = 1e-6  # a base value this small carries no signal to keep


def below(base: Any, got: Any, gate: Gate) -> dict[str, float] | None:
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


def describe_departure(m: dict[str, float]) -> str:
    return f"PSNR {m['psnr_db']:.1f} dB, cosine {m['cosine']:.4f} against the base artifact"



def summary(weights: dict[str, tuple[str, int]], compressed: set[str]) -> dict[str, Any]:
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
