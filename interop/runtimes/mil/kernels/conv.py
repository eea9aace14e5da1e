"""Convolution MIL ops: ``conv`` and ``conv_transpose`` (``mil/ops/defs/iOS15/conv.py``; iOS17
only lets ``weight``/``bias`` have a dtype other than ``x``'s, which changes nothing here).

1-D, 2-D and 3-D convolutions run in float32 with torch-CPU on tensors that share the memory of
the fp32 arrays (fp16 operands are widened with ``values.widen``, which keeps the widened copy of a
constant such as a weight; the interpreter rounds the result to the declared type). Padding the
defs give as the same amount on both sides of a dim is handed to torch's convolution (no padded
copy of the input); asymmetric ``same`` / ``same_lower`` / ``custom`` pads are applied with
``F.pad`` first.

One fast path: a pointwise convolution (1x1 kernel, stride 1, no padding, one group, batch 1)
with at most :data:`POINTWISE_BLAS_MAX_POSITIONS` output positions is a single matrix product,
``weight[C_out, C_in] @ x[C_in, positions]``, which numpy's BLAS does faster than torch's
convolution at such sizes (and slower at larger ones, which stay on torch).

What the parameters imply (ints, pads, the widened bias, which path) is worked out once per op
(:func:`memo`), so a call costs little more than the widening of ``x`` and torch's convolution.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import kernel
from ..values import torch_tensor, widen

POINTWISE_BLAS_MAX_POSITIONS = 256
"""Largest number of output positions (product of the spatial sizes) for which a pointwise conv
is computed as a numpy matrix product; measured (1 thread): numpy wins for 6x6 .. 16x16 maps by
10-30%, torch's convolution for 24x24 and larger (by up to 25%)."""

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


_MEMO: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()


def memo(ctx, args: tuple, key: tuple, build: Callable[[], Any]) -> Any:
    """``build()``, remembered per op (per kernel context, which the interpreter keeps for the life
    of a loaded program) for as long as the op is called with the very same ``args`` objects (its
    constant inputs: bias, strides, pads...; the entry holds them, so no other object can take
    their ids) and an equal ``key`` (input and weight shapes, strings). ``build`` must depend on
    nothing else, so the result is right whatever the context; kernels must not modify inputs.

    What is kept is what can be worked out from the op's parameters once: parsed ints, paddings,
    widened biases; never a copy of a weight (``values.widen`` has its own budgeted cache). An op
    whose bias is computed at run time gets a new array each call and so just rebuilds. Without a
    context (a kernel called directly) nothing is remembered; entries go with their context.
    """
    try:
        entry = _MEMO.get(ctx)
    except TypeError:  # None, or a context that takes no weak reference
        return build()
    if entry is not None and entry[1] == key and all(a is b for a, b in zip(entry[0], args)):
        return entry[2]
    value = build()
    _MEMO[ctx] = (args, key, value)
    return value


def _ints(values, n: int) -> list[int]:
    """A per-spatial-dim int parameter (strides, dilations) as a list; all 1s when absent."""
    if values is None:
        return [1] * n
    return [int(v) for v in np.asarray(values).reshape(-1).tolist()]


def conv_pads(pad_type: str, pad, in_sizes, kernel_sizes, strides, dilations) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim, as the defs' ``aggregated_pad`` computes it.

    ``same`` puts the odd extra element after (bottom/right), ``same_lower`` before (top/left);
    ``custom`` reads ``pad = [before_0, after_0, before_1, after_1, ...]``; ``valid`` pads nothing.
    Shared with the pooling kernels.
    """
    pad_type = str(pad_type).lower()
    if pad_type == "custom":
        flat = [int(p) for p in np.asarray(pad).reshape(-1).tolist()]
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(in_sizes))]
    if pad_type == "valid":
        return [(0, 0)] * len(in_sizes)
    pads = []
    for size, k, s, d in zip(in_sizes, kernel_sizes, strides, dilations):
        effective = (k - 1) * d + 1
        total = max(0, s * -(-size // s) - size + effective - s)
        small, big = total // 2, total - total // 2
        pads.append((big, small) if pad_type == "same_lower" else (small, big))
    return pads


def _torch_pad(pads: list[tuple[int, int]]) -> list[int]:
    """``pads`` (first spatial dim first) in ``F.pad``'s order (last dim first)."""
    return [p for before_after in reversed(pads) for p in before_after]


def _conv_fn(rank: int, transpose: bool = False):
    """torch's 1-D / 2-D / 3-D (transposed) convolution."""
    fn = (_CONV_TRANSPOSE if transpose else _CONV).get(rank)
    if fn is None:
        raise ValueError(f"conv supports 1 to 3 spatial dims, got {rank}")
    return fn


def _conv_setup(x_shape, weight, bias, strides, pad_type, pad, dilations, groups) -> tuple:
    """What ``conv`` works out from its parameters: (pointwise BLAS?, bias, F.pad list or None,
    torch's ``padding``, strides, dilations, groups). The bias is a ``[C_out, 1]`` fp32 array for
    the BLAS path, else an fp32 tensor (or None)."""
    n = len(x_shape) - 2
    strides, dilations = _ints(strides, n), _ints(dilations, n)
    kernel_sizes = weight.shape[2:]
    pads = conv_pads(pad_type, pad, x_shape[2:], kernel_sizes, strides, dilations)
    groups = int(groups)
    pointwise = (
        groups == 1
        and x_shape[0] == 1
        and all(k == 1 for k in kernel_sizes)
        and all(s == 1 for s in strides)
        and not any(p for before_after in pads for p in before_after)
        and math.prod(x_shape[2:]) <= POINTWISE_BLAS_MAX_POSITIONS
    )
    if pointwise:
        b = None if bias is None else np.array(widen(bias), dtype=np.float32).reshape(-1, 1)
        return True, b, None, 0, strides, dilations, groups
    b = None if bias is None else torch.from_numpy(np.array(widen(bias), dtype=np.float32))
    if all(before == after for before, after in pads):  # torch pads both sides alike: no padded copy
        return False, b, None, [before for before, _ in pads], strides, dilations, groups
    return False, b, _torch_pad(pads), 0, strides, dilations, groups


@kernel("conv")
def conv(ctx, x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """``conv`` (iOS15/iOS17): ``x [n, C_in, *D]`` * ``weight [C_out, C_in/groups, *K]`` + ``bias``."""
    pointwise, b, f_pad, padding, strides, dilations, groups = memo(
        ctx, (bias, strides, pad, dilations, groups), (x.shape, weight.shape, pad_type),
        lambda: _conv_setup(x.shape, weight, bias, strides, pad_type, pad, dilations, groups),
    )
    if pointwise:  # weight[C_out, C_in] @ x[C_in, positions] with numpy's BLAS
        w = widen(weight)
        out = w.reshape(w.shape[0], w.shape[1]) @ widen(x).reshape(x.shape[1], -1)
        if b is not None:
            out += b
        return out.reshape((1, w.shape[0]) + x.shape[2:])
    xt = torch_tensor(x)
    if f_pad is not None:
        xt = F.pad(xt, f_pad)
    return _conv_fn(x.ndim - 2)(xt, torch_tensor(weight), b, strides, padding, dilations, groups).numpy()


def _transpose_crop(pad_type: str, pad, full: int, in_size: int, stride: int, out_size, dim: int) -> tuple[int, int]:
    """(start, length) of the output window in the unpadded transposed-conv result along ``dim``.

    Follows the def's ``type_inference``: ``valid`` keeps everything, ``custom`` drops
    ``pad[2*dim]`` before and ``pad[2*dim+1]`` after, ``same`` yields ``in_size * stride`` with the
    odd extra element cropped at the end; an explicit ``output_shape`` sets the length.
    """
    pad_type = str(pad_type).lower()
    if pad_type == "custom":
        flat = [int(p) for p in np.asarray(pad).reshape(-1).tolist()]
        start, length = flat[2 * dim], full - flat[2 * dim] - flat[2 * dim + 1]
    elif pad_type == "same":
        length = in_size * stride
        start = max(0, full - length) // 2
    else:
        start, length = 0, full
    if out_size is not None:
        length = int(out_size)
    return start, length


@kernel("conv_transpose")
def conv_transpose(ctx, x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None,
                   dilations=None, groups=1):
    """``conv_transpose`` (iOS15/iOS17): ``weight [C_in, C_out/groups, *K]``, output cropped per
    ``pad_type`` / ``pad`` or sized by ``output_shape``; the bias is added after cropping."""
    n = x.ndim - 2
    strides, dilations = _ints(strides, n), _ints(dilations, n)
    full = _conv_fn(n, transpose=True)(
        torch_tensor(x), torch_tensor(weight), None, strides, 0, 0, int(groups), dilations
    )
    out_sizes = [None] * n if output_shape is None else [int(s) for s in np.asarray(output_shape).tolist()[2:]]
    index: list[slice] = [slice(None), slice(None)]
    extend: list[tuple[int, int]] = []
    for dim in range(n):
        size = full.shape[2 + dim]
        start, length = _transpose_crop(pad_type, pad, size, x.shape[2 + dim], strides[dim], out_sizes[dim], dim)
        stop = min(start + length, size)
        index.append(slice(start, max(start, stop)))
        extend.append((0, max(0, length - max(0, stop - start))))  # zeros past the end of the result
    result = full[tuple(index)]
    if any(after for _, after in extend):
        result = F.pad(result, _torch_pad(extend))
    if bias is not None:
        return (result + torch_tensor(bias).reshape((1, -1) + (1,) * n)).numpy()
    return result.numpy()
