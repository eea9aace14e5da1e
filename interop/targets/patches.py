"""Translations for torch ops coremltools lacks, registered into its torch frontend.

One small function per op, registered under the op's name, which both capture paths use
(``torch.jit.trace`` nodes ``aten::new_ones`` and ``torch.export`` nodes ``new_ones.default``
are looked up as ``new_ones``). Each is tested against torch on both paths
(tests/test_patches.py). ``PATCHED`` names them, so ``interop check`` can say an op is handled.
"""

from __future__ import annotations

from typing import Any

PATCHED = {"diff": "aten::diff", "new_ones": "aten::new_ones", "__and__": "aten::__and__ (torch.export)"}
_REGISTERED = False


def register() -> None:
    """Register every patch once (idempotent; coremltools must be importable). A patch never
    replaces a translation coremltools has itself."""
    global _REGISTERED
    if _REGISTERED:
        return
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    for name, fn in (("diff", _diff), ("new_ones", _new_ones)):
        if _TORCH_OPS_REGISTRY.get_func(name) is None:
            register_torch_op(fn, torch_alias=[name])
    if "__and__" not in _TORCH_OPS_REGISTRY.name_to_func_mapping:
        # register_torch_op refuses names ending in "_" (it takes them for in-place ops)
        _TORCH_OPS_REGISTRY.set_func_by_name(_and, "__and__")
    _REGISTERED = True


def _diff(context, node):
    """aten::diff(x, n=1, dim=-1, prepend=None, append=None): ``x[1:] - x[:-1]`` along dim, n times,
    after concatenating prepend / append (both capture paths give the same inputs)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs

    inputs = _get_inputs(context, node, min_expected=1)
    inputs += [None] * (5 - len(inputs))
    x, n, dim, prepend, append = inputs[:5]
    n = 1 if n is None or n.val is None else int(n.val)
    dim = -1 if dim is None or dim.val is None else int(dim.val)
    parts = [v for v in (prepend, x, append) if v is not None and not (v.val is None and v is not x and v.op is None)]
    if len(parts) > 1:
        x = mb.concat(values=parts, axis=dim)
    axis = dim % x.rank
    for i in range(n):
        begin = [0] * x.rank
        begin[axis] = 1
        end = [0] * x.rank
        end[axis] = -1
        upper = mb.slice_by_index(x=x, begin=begin, end=[0] * x.rank, end_mask=[True] * x.rank)
        lower_mask = [True] * x.rank
        lower_mask[axis] = False
        lower = mb.slice_by_index(x=x, begin=[0] * x.rank, end=end, end_mask=lower_mask)
        x = mb.sub(x=upper, y=lower, name=node.name if i == n - 1 else f"{node.name}_diff{i}")
    context.add(x)


def _new_ones(context, node):
    """aten::new_ones(x, size, *, dtype=None, ...): ones of ``size``, of ``dtype`` or x's dtype
    (transformers' attention masks build ``q_idx.new_ones((), dtype=torch.bool)``)."""
    import numpy as np
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs, _get_kwinputs

    inputs = _get_inputs(context, node, min_expected=2)
    x, size = inputs[0], inputs[1]
    dtype = inputs[2] if len(inputs) > 2 else _get_kwinputs(context, node, "dtype", default=[None])[0]
    np_dtype = _numpy_dtype(dtype, x)
    if isinstance(size, (list, tuple)):
        size = mb.concat(values=list(size), axis=0) if size else None
    if size is None or size.val is not None:  # a static size: a constant
        shape = () if size is None else tuple(int(s) for s in np.atleast_1d(size.val))
        context.add(mb.const(val=np.ones(shape, dtype=np_dtype), name=node.name))
        return
    size = mb.cast(x=size, dtype="int32") if size.dtype != _int32() else size
    ones = mb.fill(shape=size, value=1.0)
    context.add(mb.cast(x=ones, dtype=_mil_dtype_name(np_dtype), name=node.name))


def _and(context, node):
    """aten::__and__.Tensor, as torch.export records ``a & b`` (coremltools' name cleaning keeps
    the dunders when a namespace precedes them, so its own ``bitwise_and`` is never found):
    the same translation, boolean inputs only."""
    from coremltools.converters.mil.frontend.torch.ops import bitwise_and

    bitwise_and(context, node)


def _numpy_dtype(dtype: Any, like: Any) -> Any:
    """The numpy dtype of a torch dtype argument (a torch.dtype, its enum number, or None for
    ``like``'s dtype), narrowed to what Core ML holds (int32, fp32, bool)."""
    import numpy as np
    import torch
    from coremltools.converters.mil.frontend.torch.utils import NUM_TO_NUMPY_DTYPE, TORCH_DTYPE_TO_NUM
    from coremltools.converters.mil.mil.types import nptype_from_builtin

    value = getattr(dtype, "val", dtype)
    if value is None:
        out = np.dtype(nptype_from_builtin(like.dtype))
    elif isinstance(value, torch.dtype):
        out = np.dtype(NUM_TO_NUMPY_DTYPE[TORCH_DTYPE_TO_NUM[value]])
    else:
        out = np.dtype(NUM_TO_NUMPY_DTYPE[int(value)])
    if out.kind in "iu":
        return np.int32
    return np.bool_ if out.kind == "b" else np.float32


def _mil_dtype_name(np_dtype: Any) -> str:
    import numpy as np

    return {np.dtype(np.int32): "int32", np.dtype(np.bool_): "bool"}.get(np.dtype(np_dtype), "fp32")


def _int32() -> Any:
    from coremltools.converters.mil.mil import types

    return types.int32
