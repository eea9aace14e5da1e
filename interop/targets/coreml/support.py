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
    """At --precision fp16, an intermediate value beyond fp16's range makes Core ML disagree:
    ``interop check``'s ``fp16_overflow`` and an op row naming it (``Target.check_model``)."""
    from interop.stages.preflight import fp16_overflow

    if config.precision != "fp16" or prep.module is None:
        return {}
    where = fp16_overflow(prep.module, prep.ref.samples["example"][0], spec.names())
    if not where:
        return {}
    op, path, value = where
    return {"fp16_overflow": {"op": op, "where": path, "max_abs": value},
            "ops": [{"op": op, "where": [path], name: f"overflows fp16 (max |value| {value:.3g} > 65504): Core ML at "
                     "--precision fp16 gives Inf here — build with --precision fp32"}]}
