"""MIL types <-> numpy values."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32))
_TORCH_CAST_MIN_SIZE = 512


def numpy_dtype(var: Any) -> np.dtype | None:
    """The numpy dtype of a pymil ``Var`` (tensor or scalar), or None for non-numeric vars."""
    return _numpy_dtype_of(var.sym_type)


@lru_cache(maxsize=None)
def _numpy_dtype_of(sym_type: Any) -> np.dtype | None:
    """Cached per pymil type: coremltools' ``Var.dtype`` machinery is slow on the hot path."""
    from coremltools.converters.mil.mil import types

    if sym_type is None:
        return None
    if types.is_tensor(sym_type):
        dtype = sym_type.get_primitive()
    elif types.is_state(sym_type):
        dtype = sym_type.wrapped_type().get_primitive()
    else:
        dtype = sym_type
    if types.is_str(dtype):
        return None
    try:
        return np.dtype(types.nptype_from_builtin(dtype))
    except Exception:
        return None


def cast(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``arr.astype(dtype)``; fp16 <-> fp32 of non-tiny arrays goes through torch, whose casts are
    bit-identical to numpy's (round to nearest even; only NaN payloads may differ) and ~10x faster."""
    if arr.dtype in _FLOATS and dtype in _FLOATS and arr.size >= _TORCH_CAST_MIN_SIZE:
        import torch

        target = torch.float16 if dtype == np.float16 else torch.float32
        return torch.from_numpy(np.ascontiguousarray(arr)).to(target).numpy()
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is what fp16 does
        return arr.astype(dtype)


def widen(a: Any) -> np.ndarray:
    """``a`` as an array, fp16 widened to fp32 with the fast :func:`cast` (for kernels, which
    compute half precision in single)."""
    arr = np.asarray(a)
    return cast(arr, _FLOATS[1]) if arr.dtype == np.float16 else arr


def const_value(var: Any) -> Any:
    """The value of a const ``Var`` as the runtime passes it to kernels."""
    val = var.val
    if isinstance(val, str):
        return val
    if isinstance(val, (list, tuple)):
        return list(val)
    dtype = numpy_dtype(var)
    arr = np.asarray(val)
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr


class State:
    """The content of an iOS18 MIL state, which ``coreml_update_state`` replaces in place."""

    def __init__(self, value: np.ndarray):
        self.value = value


def is_state(var: Any) -> bool:
    """Whether a pymil ``Var`` is an iOS18 state (a stateful model's state input)."""
    from coremltools.converters.mil.mil import types

    return bool(types.is_state(var.sym_type))


def zero_state(var: Any) -> State:
    """A state input as a new Core ML state holds it: zeros of the wrapped tensor type."""
    return State(np.zeros(tuple(var.shape), dtype=numpy_dtype(var)))


def conform(value: Any, var: Any, promote: bool = False) -> Any:
    """Cast a kernel result to the dtype the program declares for ``var``.

    This is where precision is modelled: an op whose output is typed fp16 is rounded to fp16
    here, whatever precision its kernel computed in. ``promote`` keeps fp16-typed values in fp32
    (the "what if this program ran in fp32" shadow run used to localise precision problems).
    """
    if isinstance(value, (str, list, tuple, dict, State)) or value is None:
        return value
    dtype = numpy_dtype(var)
    if promote and dtype == np.float16:
        dtype = np.dtype(np.float32)
    arr = np.asarray(value)
    if dtype is not None and arr.dtype != dtype:
        arr = cast(arr, dtype)
    return arr
