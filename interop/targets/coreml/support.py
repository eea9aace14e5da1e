"""The Core ML target's op-support table for ``interop check``: whether coremltools (with
interop's translations, targets/coreml/ops.py) translates a TorchScript op kind."""

from __future__ import annotations

from typing import Any

# coremltools translations that exist but reject what models give them
_COREML_PARTIAL = {"linalg_inv": "missing in coremltools for non-constant inputs (its translation only folds constants)"}


def coreml_support(kind: str) -> str:
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    from interop.targets.coreml.ops import PATCHED, register

    register()
    if kind.startswith("prim::PythonOp"):
        return "jit.trace path: no translation for a custom autograd Function; the torch.export path traces through it"
    namespace, name = kind.split("::", 1)
    if name.rstrip("_") in PATCHED or name in PATCHED:
        return "patched by interop"
    if namespace == "aten" and name.rstrip("_") in _COREML_PARTIAL:
        return _COREML_PARTIAL[name.rstrip("_")]
    lookup = name if namespace == "aten" else kind
    return "ok" if _TORCH_OPS_REGISTRY.get_func(lookup) is not None else "missing in coremltools"


def fp16_overflow_check(name: str, prep: Any, spec: Any, config: Any) -> dict[str, Any]:
    """An intermediate value beyond fp16's range: at --precision fp16 Core ML disagrees (an op row
    naming it blocks the target); at auto the build keeps those ops in fp32 (a hint, not a block).
    The hint is the build's own (stages/preflight.overflow_hint). ``Target.check_model``."""
    from interop.stages.preflight import fp16_overflow
    from interop.stages.preflight import overflow_hint

    if config.precision not in ("fp16", "auto") or prep.module is None:
        return {}
    where = fp16_overflow(prep.module, prep.ref.samples["example"][0], spec.names())
    if not where:
        return {}
    op, path, value = where
    hint = overflow_hint(f"{op} in {path}", config.precision)
    found: dict[str, Any] = {"fp16_overflow": {"op": op, "where": path, "max_abs": value, "hint": hint}, "hints": [hint]}
    if config.precision == "fp16":
        found["ops"] = [{"op": op, "where": [path], name: f"overflows fp16 (max |value| {value:.3g} > 65504): Core ML "
                         "at --precision fp16 gives Inf here — build with --precision auto or fp32"}]
    return found
