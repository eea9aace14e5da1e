"""The Core ML target's op-support table for ``interop check``: whether coremltools (with
interop's translations, targets/coreml/ops.py) translates a TorchScript op kind."""

from __future__ import annotations

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
