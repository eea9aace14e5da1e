"""Translations for torch ops coremltools lacks (or translates wrongly), registered into its
torch frontend.

One small function per op, registered under the op's name, which both capture paths use
(``torch.jit.trace`` nodes ``aten::new_ones`` and ``torch.export`` nodes ``new_ones.default``
are looked up as ``new_ones``). Each is tested against torch on both paths
(tests/test_coreml_ops.py). ``PATCHED`` names the added ones, so ``interop check`` can say an op is
handled; ``OVERRIDES`` the replaced ones and why.
"""

from __future__ import annotations

from typing import Any

from interop.targets.coreml import export_ops as export_ops
from interop.targets.coreml import structured_ops as structured_ops

# Ops coremltools has no translation for.
PATCHED = {"diff": "aten::diff", "new_ones": "aten::new_ones", "__and__": "aten::__and__ (torch.export)",
           "where.scalarother": "aten::where.ScalarOther (torch.export)", "where.scalar": "aten::where.Scalar (torch.export)"}
PATCHED.update(structured_ops.PATCHED)  # embedding_bag, index_add (interop/targets/coreml/structured_ops.py)
PATCHED.update(export_ops.PATCHED)  # lstm, gru, alias, ... of torch.export programs (export_ops.py)
# coremltools' own translations that fail on what real models give them, replaced rather than added
# (the replacement hands the cases that work back to coremltools' own):
OVERRIDES = {
    "adaptive_avg_pool1d": "builds constant slice ends from the input shape: 'Cannot add const [is0, 32, 16]' "
                           "when a leading axis is dynamic (Swin's pooler with a dynamic batch)",
    "adaptive_max_pool1d": "as adaptive_avg_pool1d",
    "permute": "keeps rank-6 tensors, which Core ML rejects ('only supports tensors with rank <= 5')",
    "transpose": "as permute (Swin's window partition: view to rank 6, transpose(2, 3), view back)",
    "max_pool2d": "wants the stride given: 'node max_pool2d got 2 input(s)' from TS2EPConverter, which leaves "
                  "the default stride (= kernel) out (samples/digit_net.pt with --no-torchscript)",
    "group_norm": "reshapes to a constant [N, groups, C/groups, ...] holding the symbolic batch: 'Cannot add const "
                  "[is0, 8, 4, 16, 16]' with a flexible batch (diffusers' UNet2DModel, HF Wav2Vec2's feature encoder)",
}


def translations() -> tuple[dict[str, Any], dict[str, Any]]:
    """(added, replaced): op name -> translation. interop.patches registers them into coremltools
    for a Core ML conversion and takes them out again afterwards."""
    added = {"diff": _diff, "new_ones": _new_ones, "__and__": _and, "where.scalarother": _where_scalar,
             "where.scalar": _where_scalar}
    added.update(structured_ops.functions())
    added.update(export_ops.functions())
    replaced = {"adaptive_avg_pool1d": _adaptive_avg_pool1d, "adaptive_max_pool1d": _adaptive_max_pool1d,
                "permute": _permute, "transpose": _transpose, "group_norm": _group_norm,
                "max_pool2d": export_ops.max_pool}
    return added, replaced


def register() -> None:
    """Register every translation for the rest of the process (idempotent; coremltools must be
    importable); ``interop build`` registers them only while it converts (patches.applied). A
    translation replaces one coremltools has itself only where that one fails (``OVERRIDES``)."""
    from interop import patches

    patches.install("coremltools-torch-ops")


def _group_norm(context, node):
    """coremltools' own group_norm, whose reshape ``swap_group_norm_impl`` makes batch-flexible."""
    from coremltools.converters.mil.frontend.torch import ops as torch_ops

    torch_ops.group_norm(context, node)


def swap_group_norm_impl() -> Any:
    """coremltools' group_norm (both capture paths, and native_group_norm) calls the module-level
    ``_group_norm_impl``: replaced by one that reshapes with -1 for the batch when it is symbolic,
    handing static shapes back to the original. Returns the undo (interop.patches applies it)."""
    from coremltools.converters.mil.frontend.torch import ops as torch_ops

    original = getattr(torch_ops, "_group_norm_impl", None)
    if original is None or getattr(original, "interop_patch", False):
        return lambda: None

    def group_norm_impl(x, num_groups, weight, bias, eps):
        from coremltools.converters.mil.mil.types.symbolic import is_symbolic

        if not is_symbolic(x.shape[0]) or is_symbolic(x.shape[1]):
            return original(x, num_groups, weight, bias, eps)
        return _group_norm_dynamic_batch(x, num_groups, weight, bias, eps)

    group_norm_impl.interop_patch = True
    from interop.patches import swap

    return swap(torch_ops, "_group_norm_impl", group_norm_impl)


def _group_norm_dynamic_batch(x, num_groups, weight, bias, eps):
    """Group norm of (N, C, *) with a symbolic N: reshape to (-1, G, C/G, *rest) (rest from the
    runtime shape where symbolic), normalise over all but the first two axes, reshape back to
    x's runtime shape, then the per-channel affine."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _var
    from coremltools.converters.mil.mil.types.symbolic import any_symbolic

    c = x.shape[1]
    groups = min(int(num_groups), c)
    rest = x.shape[2:]
    head = [-1, groups, c // groups]
    if any_symbolic(rest):
        new_shape = mb.concat(values=[head, mb.slice_by_size(x=mb.shape(x=x), begin=[2], size=[-1])], axis=0)
    else:
        new_shape = head + [int(d) for d in rest]
    axes = list(range(2, 3 + len(rest)))
    y = mb.reshape(x=x, shape=new_shape)
    mean = mb.reduce_mean(x=y, axes=axes, keep_dims=True)
    std = mb.sqrt(x=mb.add(x=_var(y, axes=axes, keep_dims=True, unbiased=False), y=eps))
    y = mb.real_div(x=mb.sub(x=y, y=mean), y=std)
    y = mb.reshape(x=y, shape=mb.shape(x=x))
    affine = [1, c] + [1] * len(rest)
    if weight is not None:
        y = mb.mul(x=y, y=mb.reshape(x=weight, shape=affine))
    if bias is not None:
        y = mb.add(x=y, y=mb.reshape(x=bias, shape=affine))
    return y


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


def _where_scalar(context, node):
    """aten::where.ScalarOther(cond, x, 2.0) / where.Scalar(cond, 1.0, 2.0), as torch.export records
    ``torch.where`` with Python scalars (T5's attention bias): coremltools' own ``where``, which
    promotes a scalar operand; only the overload name is unknown to it."""
    from coremltools.converters.mil.frontend.torch.ops import where

    where(context, node)


def _adaptive_avg_pool1d(context, node):
    """aten::adaptive_avg_pool1d(x, [out]): torch's bins (start = floor(i L / out), end =
    ceil((i + 1) L / out)) along the last axis, sliced with masks so leading axes may be dynamic."""
    from coremltools.converters.mil import Builder as mb

    _adaptive_pool1d(context, node, mb.reduce_mean)


def _adaptive_max_pool1d(context, node):
    """aten::adaptive_max_pool1d(x, [out]) -> values (the indices output is not supported)."""
    from coremltools.converters.mil import Builder as mb

    _adaptive_pool1d(context, node, mb.reduce_max)


def _adaptive_pool1d(context, node, reduce_op) -> None:
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    x, size = _get_inputs(context, node, min_expected=2)[:2]
    out = int(size.val[0] if size.val.ndim else size.val)
    length = x.shape[-1]
    if is_symbolic(length):
        raise NotImplementedError("adaptive_*_pool1d over a dynamic last axis is not supported")
    if length % out == 0:  # equal bins: one reshape and one reduction
        lead = mb.slice_by_index(x=mb.shape(x=x), begin=[0], end=[x.rank - 1])
        shape = mb.concat(values=[lead, [out, length // out]], axis=0)
        pooled = reduce_op(x=mb.reshape(x=x, shape=shape), axes=[-1], keep_dims=False, name=node.name)
        context.add(pooled)
        return
    bins = []
    for i in range(out):
        start, end = (i * length) // out, -(-((i + 1) * length) // out)
        mask = [True] * (x.rank - 1) + [False]
        piece = mb.slice_by_index(x=x, begin=[0] * (x.rank - 1) + [start], end=[0] * (x.rank - 1) + [end],
                                  begin_mask=mask, end_mask=mask)
        bins.append(reduce_op(x=piece, axes=[-1], keep_dims=True))
    context.add(mb.concat(values=bins, axis=-1, name=node.name))


def _permute(context, node):
    """aten::permute(x, perm), also for rank > 5 (see ``_high_rank_transpose``)."""
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs, permute_copy

    x, perm = _get_inputs(context, node, expected=2)
    if x.rank <= 5 or not _high_rank_transpose(context, node, x, [int(p) % x.rank for p in perm.val]):
        permute_copy(context, node)


def _transpose(context, node):
    """aten::transpose(x, dim0, dim1), also for rank > 5: Swin's window partition is
    ``x.view(rank 6).transpose(2, 3).contiguous().view(rank 4)``."""
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs, transpose

    inputs = _get_inputs(context, node)
    x = inputs[0]
    if x.rank <= 5 or len(inputs) < 3:
        transpose(context, node)
        return
    perm = list(range(x.rank))
    a, b = int(inputs[1].val) % x.rank, int(inputs[2].val) % x.rank
    perm[a], perm[b] = perm[b], perm[a]
    if not _high_rank_transpose(context, node, x, perm):
        transpose(context, node)


def _high_rank_transpose(context, node, x, perm: list[int]) -> bool:
    """Transpose a rank > 5 tensor by merging the axes that stay adjacent and in order: reshape
    to rank <= 5 (from the view's input when x is a view), transpose, reshape to the permuted
    shape. When the next op is a view, coremltools' merge_consecutive_reshapes folds the last two
    reshapes and dead-code elimination drops the first view, so no rank-6 tensor remains.
    False when the permutation cannot be brought to rank 5."""
    from coremltools.converters.mil import Builder as mb

    groups = _adjacent_groups(perm)
    if len(groups) > 5:
        return False
    in_order = sorted(groups)
    shape = mb.shape(x=x)
    source = x.op.x if x.op is not None and x.op.op_type == "reshape" else x  # skip the rank-6 view
    merged = mb.reshape(x=source, shape=mb.concat(values=[_prod(shape, g) for g in in_order], axis=0))
    moved = mb.transpose(x=merged, perm=[in_order.index(g) for g in groups])
    context.add(mb.reshape(x=moved, shape=mb.gather(x=shape, indices=perm, axis=0), name=node.name))
    return True


def _adjacent_groups(perm: list[int]) -> list[list[int]]:
    """[0, 1, 3, 2, 4, 5] -> [[0, 1], [3], [2], [4, 5]]: runs of source axes kept together."""
    groups: list[list[int]] = []
    for p in perm:
        if groups and p == groups[-1][-1] + 1:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def _prod(shape: Any, axes: list[int]) -> Any:
    from coremltools.converters.mil import Builder as mb

    picked = mb.gather(x=shape, indices=axes, axis=0)
    return mb.reduce_prod(x=picked, axes=[0], keep_dims=True) if len(axes) > 1 else picked


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
