"""Elementwise binary and unary MIL ops (iOS15 defs, with the iOS17 ``cast``/epsilon changes).

Semantics follow the ``value_inference`` of coremltools' op definitions
(``mil/ops/defs/iOS15/elementwise_binary.py``, ``elementwise_unary.py`` and
``iOS17/elementwise_unary.py``): numpy broadcasting, ``floor_div``/``mod`` with floor (Python)
semantics, ``round`` half to even. fp16 operands are computed in fp32; the interpreter rounds
each result to the dtype the program declares.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.special

from ..registry import kernel
from .. import values
from ..values import widen

upcast = widen  # ``a`` as an array, fp16 widened to fp32 (kernels compute half precision in single)


def _is_int(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.integer)


# --- binary ops ------------------------------------------------------------------------------

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


@kernel(*_BINARY)
def binary(ctx, x, y):
    """The binary ops whose MIL semantics are exactly numpy's ufunc of the same meaning."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _BINARY[ctx.op.op_type](upcast(x), upcast(y))


@kernel("real_div")
def real_div(ctx, x, y):
    """``x / y``; on int32 operands the quotient is truncated toward zero and stays int32."""
    x, y = upcast(x), upcast(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = np.true_divide(x, y)
        if _is_int(x):
            return np.trunc(quotient).astype(x.dtype)
        return quotient


@kernel("pow")
def power(ctx, x, y):
    """``x ** y``; int32 operands are raised in float64 (negative exponents allowed) and truncated."""
    x, y = upcast(x), upcast(y)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if _is_int(x):
            return np.trunc(np.power(x.astype(np.float64), y.astype(np.float64))).astype(x.dtype)
        return np.power(x, y)


# --- unary ops -------------------------------------------------------------------------------

_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "erf": scipy.special.erf,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "logical_not": np.logical_not,
    "round": np.round,  # half to even, as the def's value_inference ("0.5 is rounded to 0")
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
}


@kernel(*_UNARY)
def unary(ctx, x):
    """The unary ops without parameters (``exp2`` of int32 is truncated back to int32)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _UNARY[ctx.op.op_type](upcast(x))


def _epsilon(x: np.ndarray, epsilon: Any) -> np.ndarray:
    """``epsilon`` in ``x``'s dtype (iOS17 lets it differ), then widened like ``x``."""
    return upcast(np.asarray(epsilon).astype(np.asarray(x).dtype))


@kernel("inverse")
def inverse(ctx, x, epsilon):
    """``1 / (x + epsilon)``."""
    with np.errstate(divide="ignore"):
        return np.reciprocal(upcast(x) + _epsilon(x, epsilon))


@kernel("log")
def log(ctx, x, epsilon):
    """``log(x + epsilon)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(upcast(x) + _epsilon(x, epsilon))


@kernel("rsqrt")
def rsqrt(ctx, x, epsilon):
    """``1 / sqrt(x + epsilon)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(upcast(x) + _epsilon(x, epsilon))


@kernel("clip")
def clip(ctx, x, alpha, beta):
    """``min(max(x, alpha), beta)`` (``np.clip`` computes exactly that, also when alpha > beta)."""
    x = upcast(x)
    if x.size >= 4096 and x.dtype == np.float32 and np.size(alpha) == np.size(beta) == 1:
        # torch.clamp computes the same (NaN kept; alpha > beta gives beta), ~3x faster
        return values.torch_tensor(x).clamp(float(upcast(alpha)), float(upcast(beta))).numpy()
    return np.clip(x, upcast(alpha).astype(x.dtype), upcast(beta).astype(x.dtype))


@kernel("threshold")
def threshold(ctx, x, alpha):
    """``max(x, alpha)``."""
    return np.maximum(upcast(x), upcast(alpha))


@kernel("cast")
def cast(ctx, x, dtype):
    """Cast to ``dtype`` (iOS15: fp16/fp32/int32/bool; iOS17 adds int8/uint8/int16/uint16).

    Floats become integers by truncation toward zero (as the iOS14 cast test expects); values
    beyond the target range saturate (Core ML leaves overflow unspecified; saturating avoids
    numpy's platform-dependent garbage). Numbers become bool as ``x != 0``.
    """
    from coremltools.converters.mil.mil.types.type_mapping import string_to_nptype

    target = np.dtype(string_to_nptype(dtype))
    arr = np.asarray(x)
    if np.issubdtype(target, np.integer) and np.issubdtype(arr.dtype, np.floating):
        info = np.iinfo(target)
        with np.errstate(invalid="ignore"):
            return np.clip(np.trunc(arr.astype(np.float64)), info.min, info.max).astype(target)
    if arr.dtype.kind == "f" and target.kind == "f":
        return values.cast(arr, target)  # fp16 <-> fp32 through torch: identical rounding, ~10x faster
    return arr.astype(target)
