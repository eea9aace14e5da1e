"""The reference runtime's decompression against coremltools' own numpy decompression.

For every ``constexpr_*`` op of a package (iOS16 affine / lookup table / sparse, iOS18 block-wise
shift-scale, grouped-channel lookup tables, and their compositions), the runtime's kernel is run
on the op's stored inputs (``interop.runtimes.mil.kernels.constexpr``) and compared with what
coremltools computes for the same op (``materialized_val_inference`` for iOS18 ops,
``value_inference`` for iOS16 ones). Both round to the op's declared output dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _reference(op: Any, expected: dict[str, Any]) -> Any:
    """coremltools' decompression of ``op``. In a chain (an input computed by another constexpr
    op) coremltools' inference has no value for that input: its op class's own ``decompress``
    is called with coremltools' value of the upstream op instead."""
    chained = {name: expected[var.name] for name, var in op.inputs.items() if var.name in expected}
    if chained and hasattr(type(op), "decompress"):
        inputs = {name: expected.get(var.name, var.val) for name, var in op.inputs.items()}
        import inspect

        wanted = inspect.signature(type(op).decompress).parameters
        return type(op).decompress(**{k: inputs.get(k) for k in wanted})
    for name in ("materialized_val_inference", "value_inference"):
        fn = getattr(op, name, None)
        if fn is None:
            continue
        try:
            return fn()
        except NotImplementedError:
            continue
    return None


def _values(op: Any, computed: dict[str, Any]) -> dict[str, Any]:
    """The op's inputs: const values, or what an earlier constexpr op of the chain computed."""
    out = {}
    for name, var in op.inputs.items():
        out[name] = computed[var.name] if var.name in computed else var.val
    return out


def check_package(path: Path) -> list[dict[str, Any]]:
    """One row per constexpr op: its type, name, shape and max |runtime - coremltools| (0 = identical)."""
    from interop.runtimes import mil
    from interop.runtimes.mil.registry import KernelContext, get_kernel
    from interop.runtimes.mil.values import conform
    from interop.stages.localise import _all_ops

    loaded = mil.load_model(path)
    computed: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    rows = []
    for op in _all_ops(loaded.program.functions["main"]):
        if not op.op_type.startswith("constexpr_"):
            continue
        kernel = get_kernel(op.op_type)
        result = kernel(KernelContext(op, lambda *a: []), **_values(op, computed))
        results = result if isinstance(result, tuple) else (result,)
        results = [conform(np.asarray(r), var) for r, var in zip(results, op.outputs)]
        for var, value in zip(op.outputs, results):
            computed[var.name] = value
        want = _reference(op, expected)
        wants = want if isinstance(want, tuple) else (want,)
        if want is not None:
            for var, value in zip(op.outputs, wants):
                expected[var.name] = value
        diff = None
        if want is not None:
            diff = max(float(np.max(np.abs(np.asarray(r, np.float64) - np.asarray(w, np.float64))))
                       if np.size(r) else 0.0 for r, w in zip(results, wants))
        rows.append({"op": op.op_type, "name": op.name, "shape": list(np.shape(results[-1])), "max_abs_diff": diff})
    return rows
