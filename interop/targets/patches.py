"""Translations for torch ops coremltools lacks, registered into its torch frontend.

One small function per op, each tested against torch (tests/test_patches.py). ``PATCHED`` names
them, so ``interop check`` can say an op is handled by interop.
"""

from __future__ import annotations

PATCHED = {"diff": "aten::diff"}
_REGISTERED = False


def register() -> None:
    """Register every patch once (idempotent; coremltools must be importable)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    if "diff" not in _TORCH_OPS_REGISTRY:
        register_torch_op(_diff, torch_alias=["diff"])
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
