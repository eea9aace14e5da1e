"""The Core ML target's patches to coremltools, declared in interop/patches.py (the inventory names
these functions by dotted path and applies them through ``patches.applied``)."""

from __future__ import annotations

import functools
from typing import Any, Callable

from interop.patches import _MISSING, Undo, swap


def coremltools_torch_ops() -> Undo:
    """Register interop's translations (targets/coreml/ops.py) into coremltools' torch frontend
    through its public ``register_torch_op(override=True)``; ``__and__`` ends in "_", which that
    refuses (it takes such names for in-place ops), so it is set by name. The undo restores the
    registry's previous entries."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    from interop.targets.coreml.ops import swap_group_norm_impl, translations

    added, replaced = translations()
    restore_group_norm = swap_group_norm_impl()
    mapping = _TORCH_OPS_REGISTRY.name_to_func_mapping
    wanted = {n: f for n, f in added.items() if n not in mapping}  # coremltools' own, where it has one
    wanted.update(replaced)
    before = {name: mapping.get(name, _MISSING) for name in wanted}
    for name, fn in wanted.items():
        if name.endswith("_"):
            _TORCH_OPS_REGISTRY.set_func_by_name(fn, name)
        else:
            register_torch_op(_named(fn, name), override=True)

    def undo() -> None:
        for name, fn in before.items():
            if fn is _MISSING:
                mapping.pop(name, None)
            else:
                mapping[name] = fn
        restore_group_norm()

    return undo


def _named(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``fn`` under the op name (register_torch_op registers a function under its ``__name__``)."""

    @functools.wraps(fn)
    def translation(context: Any, node: Any) -> Any:
        return fn(context, node)

    translation.__name__ = translation.__qualname__ = name
    return translation


def fp16_overflow_check() -> Undo:
    from coremltools.converters.mil.mil.passes.defs.quantization import FP16ComputePrecision

    from interop.targets.coreml.target import _FP16_OVERFLOW

    return swap(FP16ComputePrecision, "fp16_overflow", _FP16_OVERFLOW)
