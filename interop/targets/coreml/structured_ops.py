"""Core ML translations of the torch ops that take structured integer inputs and coremltools lacks:
``embedding_bag`` (recommenders: bags given by offsets) and ``index_add`` (graph networks:
messages summed into nodes). Registered by interop.targets.coreml.ops.register, tested against
torch through both artifacts in tests/test_structured_inputs.py.

embedding_bag (modes sum and mean, 1-D indices with offsets or 2-D indices, per_sample_weights,
padding_idx, include_last_offset): gather the rows, then a (bags x indices) 0/1 membership
matrix (``start[b] <= i < end[b]``) times the rows; mean divides by the bag's size (empty bags
are 0, as in torch). index_add: MIL ``scatter`` with mode ``add``.
"""

from __future__ import annotations

from typing import Any

PATCHED = {"embedding_bag": "aten::embedding_bag (sum, mean)", "embedding_bag.padding_idx": "aten::embedding_bag (torch.export)",
           "index_add": "aten::index_add"}
_SUM, _MEAN = 0, 1


def functions() -> dict[str, Any]:
    """name -> translation, for coremltools' torch op registry."""
    return {"embedding_bag": _embedding_bag, "embedding_bag.padding_idx": _embedding_bag, "index_add": _index_add}


def _val(var: Any, default: Any) -> Any:
    return default if var is None or getattr(var, "val", None) is None else var.val


def _given(var: Any) -> bool:
    """An optional input that is there (a torch ``None`` is a var with neither value nor op)."""
    return var is not None and (var.op is not None or var.val is not None)


def _embedding_bag(context: Any, node: Any) -> None:
    """aten::embedding_bag(weight, indices, offsets, scale_grad_by_freq, mode, sparse,
    per_sample_weights, include_last_offset, padding_idx) -> (output, offset2bag, bag_size, max_indices)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs

    inputs = _get_inputs(context, node, min_expected=3)
    inputs += [None] * (9 - len(inputs))
    weight, indices, offsets, _, mode, _, per_sample, include_last, padding = inputs[:9]
    mode, include_last, padding = int(_val(mode, _SUM)), bool(_val(include_last, False)), _val(padding, None)
    if mode not in (_SUM, _MEAN):
        raise NotImplementedError("embedding_bag mode 'max' has no Core ML translation in interop (sum and mean do)")
    indices = mb.cast(x=indices, dtype="int32")
    if indices.rank == 2:  # each row a bag of the same size
        rows = mb.gather(x=weight, indices=indices, axis=0)
        if _given(per_sample):
            rows = mb.mul(x=rows, y=mb.expand_dims(x=per_sample, axes=[-1]))
        reduce = mb.reduce_sum if mode == _SUM else mb.reduce_mean
        context.add(reduce(x=rows, axes=[1], keep_dims=False, name=node.name), torch_name=node.outputs[0])
        _placeholders(context, node)
        return
    rows = mb.gather(x=weight, indices=indices, axis=0)  # (N, D)
    member = _membership(indices, mb.cast(x=offsets, dtype="int32"), include_last, padding)  # (B, N) fp32
    if _given(per_sample):
        member = mb.mul(x=member, y=mb.expand_dims(x=per_sample, axes=[0]))
    out = mb.matmul(x=member, y=rows, name=node.name if mode == _SUM else f"{node.name}_sum")
    if mode == _MEAN:
        count = mb.maximum(x=mb.reduce_sum(x=member, axes=[1], keep_dims=True), y=1.0)
        out = mb.real_div(x=out, y=count, name=node.name)
    context.add(out, torch_name=node.outputs[0])
    _placeholders(context, node)


def _membership(indices: Any, offsets: Any, include_last: bool, padding: Any) -> Any:
    """``member[b, i] = start[b] <= i < end[b]`` (and ``indices[i] != padding_idx``), as fp32."""
    from coremltools.converters.mil import Builder as mb

    count = mb.slice_by_index(x=mb.shape(x=indices), begin=[0], end=[1])
    if include_last:  # offsets has one more entry: the end of the last bag
        starts = mb.slice_by_index(x=offsets, begin=[0], end=[-1], end_mask=[False])
        ends = mb.slice_by_index(x=offsets, begin=[1], end=[0], end_mask=[True])
    else:
        starts = offsets
        ends = mb.concat(values=[mb.slice_by_index(x=offsets, begin=[1], end=[0], end_mask=[True]), count], axis=0)
    position = mb.expand_dims(x=mb.range_1d(start=0, end=mb.squeeze(x=count), step=1), axes=[0])  # (1, N)
    inside = mb.logical_and(x=mb.greater_equal(x=position, y=mb.expand_dims(x=starts, axes=[1])),
                            y=mb.less(x=position, y=mb.expand_dims(x=ends, axes=[1])))
    if padding is not None and int(padding) >= 0:
        kept = mb.not_equal(x=indices, y=int(padding))
        inside = mb.logical_and(x=inside, y=mb.expand_dims(x=kept, axes=[0]))
    return mb.cast(x=inside, dtype="fp32")


def _placeholders(context: Any, node: Any) -> None:
    """embedding_bag's other outputs (offset2bag, bag_size, max_indices): models use the first;
    the others are given so a graph that names them still converts (they are not computed)."""
    from coremltools.converters.mil import Builder as mb
    import numpy as np

    for i, name in enumerate(node.outputs[1:4], start=1):
        context.add(mb.const(val=np.zeros((1,), np.int32), name=f"{node.name}_unused{i}"), torch_name=name)


def _index_add(context: Any, node: Any) -> None:
    """aten::index_add(self, dim, index, source, *, alpha=1): ``self`` with ``source``'s slices
    added at ``index`` along ``dim`` (repeated indices accumulate)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs, _get_kwinputs

    inputs = _get_inputs(context, node, min_expected=4)
    data, dim, index, source = inputs[:4]
    alpha = inputs[4] if len(inputs) > 4 else _get_kwinputs(context, node, "alpha", default=[None])[0]
    alpha = _val(alpha, 1)  # positional in a trace, a keyword in torch.export
    if source.dtype != data.dtype:  # e.g. a float arange that coremltools made int32
        source = mb.cast(x=source, dtype=_dtype_name(data))
    if alpha != 1:
        source = mb.mul(x=source, y=mb.cast(x=mb.const(val=alpha), dtype=_dtype_name(source)))
    out = mb.scatter(data=data, indices=mb.cast(x=index, dtype="int32"), updates=source,
                     axis=int(_val(dim, 0)), mode="add", name=node.name)
    context.add(out)


def _dtype_name(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(var.dtype)
