"""Linear-algebra MIL ops: ``linear``, ``matmul``, ``einsum`` (``mil/ops/defs/iOS15/linear.py``;
iOS17 lets ``weight``/``bias`` of ``linear`` and the const operand of ``matmul`` have another
dtype than the other operand, which changes nothing here).

Float operands are multiplied in float32 (fp16 widened); int32 operands in int64. The interpreter
casts the result to the declared output dtype.
"""

from __future__ import annotations

import numpy as np

from ..registry import kernel
from ..values import torch_tensor, widen

_TORCH_MIN_MACS = 1 << 16  # products at least this large go to torch (its BLAS obeys torch's thread count)


def _operands(*arrays):
    """The arrays in a common compute dtype: int64 when all are integers, float32 otherwise."""
    arrays = [np.asarray(a) for a in arrays]
    if all(np.issubdtype(a.dtype, np.integer) for a in arrays):
        return [a.astype(np.int64) for a in arrays]
    return [widen(a).astype(np.float32, copy=False) for a in arrays]


@kernel("linear")
def linear(ctx, x, weight, bias=None):
    """``linear``: ``x @ weight.T + bias`` with ``weight [D_out, D_in]``."""
    x, weight = _operands(x, weight)
    if x.dtype == np.float32 and x.size * weight.shape[0] >= _TORCH_MIN_MACS:
        import torch.nn.functional as F

        b = None if bias is None else torch_tensor(_operands(bias, weight)[0])
        return F.linear(torch_tensor(x), torch_tensor(weight), b).numpy()
    y = np.matmul(x, weight.T)
    if bias is not None:
        y = y + _operands(bias, weight)[0]
    return y


@kernel("matmul")
def matmul(ctx, x, y, transpose_x=False, transpose_y=False):
    """``matmul``: numpy ``matmul`` (batch broadcasting, rank-1 promotion), after optionally
    swapping the last two axes of ``x`` / ``y`` (ignored for rank-1 operands)."""
    x, y = _operands(x, y)
    if bool(transpose_x) and x.ndim > 1:
        x = np.swapaxes(x, -1, -2)
    if bool(transpose_y) and y.ndim > 1:
        y = np.swapaxes(y, -1, -2)
    if x.dtype == np.float32 and x.ndim >= 2 and y.ndim >= 2 and x.size * y.shape[-1] >= _TORCH_MIN_MACS:
        import torch

        return torch.matmul(torch_tensor(x), torch_tensor(y)).numpy()
    return np.matmul(x, y)


@kernel("einsum")
def einsum(ctx, values, equation):
    """``einsum`` for the two supported layouts (``nchw,nwhu->nchu`` and ``chw,whr->chr``, in any
    lettering): the size-1 batch (``-4``) and ``H`` (``-2``) dims broadcast, as in the def's
    ``value_inference``."""
    a, b = _operands(*values)
    shape_a, shape_b = list(a.shape), list(b.shape)
    for axis in ([-2, -4] if a.ndim == 4 else [-2]):
        size = max(shape_a[axis], shape_b[axis])
        shape_a[axis] = shape_b[axis] = size
    return np.einsum(str(equation), np.broadcast_to(a, shape_a), np.broadcast_to(b, shape_b), optimize=True)
