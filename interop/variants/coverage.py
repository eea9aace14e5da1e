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


def measure(target: Any, base: Path, variant: Path) -> dict[str, Any] | None:
    """Coverage of ``variant`` against ``base``: the target's own measure (``Target.coverage``, its
    arithmetic in :mod:`interop.variants.measures`); None for a target without one."""
    return target.coverage(base, variant)


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
