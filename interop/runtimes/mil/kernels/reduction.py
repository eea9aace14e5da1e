"""Reduction MIL ops (``mil/ops/defs/iOS15/reduction.py``; iOS17 adds ``output_dtype`` to
``reduce_argmax``/``reduce_argmin``).

``axes=None`` reduces every axis; ``keep_dims`` keeps reduced axes with length 1. fp16 inputs
accumulate in fp32; int32 results are truncated back to int32 by the interpreter (as the defs'
``value_inference`` does with ``astype``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.special

from ..registry import kernel
from .elementwise import upcast


def _l1_norm(x, axis, keepdims):
    return np.sum(np.abs(x), axis=axis, keepdims=keepdims)


def _l2_norm(x, axis, keepdims):
    return np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims))


def _log_sum(x, axis, keepdims):
    return np.log(np.sum(x, axis=axis, keepdims=keepdims))


def _sum_square(x, axis, keepdims):
    return np.sum(np.square(x), axis=axis, keepdims=keepdims)


_REDUCE: dict[str, Callable[..., np.ndarray]] = {
    "reduce_l1_norm": _l1_norm,
    "reduce_l2_norm": _l2_norm,
    "reduce_log_sum": _log_sum,
    "reduce_log_sum_exp": scipy.special.logsumexp,
    "reduce_max": np.max,
    "reduce_mean": np.mean,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_sum": np.sum,
    "reduce_sum_square": _sum_square,
}


def _axes(axes: Any) -> tuple[int, ...] | None:
    return None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))


@kernel(*_REDUCE)
def reduce(ctx, x, keep_dims, axes=None):
    """Reduce ``x`` over ``axes`` (all axes when None) with the op's reduction."""
    fn = _REDUCE[ctx.op.op_type]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return fn(upcast(x), axis=_axes(axes), keepdims=bool(keep_dims))


@kernel("reduce_argmax", "reduce_argmin")
def reduce_arg(ctx, x, axis, keep_dims, output_dtype="int32"):
    """Index of the max/min along ``axis`` (first one on ties), in the op's declared output
    dtype: int32, or the iOS17 ``output_dtype`` (``int32``/``uint16``) it was typed with."""
    fn = np.argmax if ctx.op.op_type == "reduce_argmax" else np.argmin
    index = fn(upcast(x), axis=int(axis), keepdims=bool(keep_dims))
    return index.astype(ctx.output_dtype())
