"""MIL types <-> numpy values."""

from __future__ import annotations

from typing import Any

import numpy as np


def numpy_dtype(var: Any) -> np.dtype | None:
    """The numpy dtype of a pymil ``Var`` (tensor or scalar), or None for non-numeric vars."""
    from coremltools.converters.mil.mil import types

    dtype = var.dtype
    if dtype is None or types.is_str(dtype):
        return None
    try:
        return np.dtype(types.nptype_from_builtin(dtype))
    except Exception:
        return None


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


def conform(value: Any, var: Any) -> Any:
    """Cast a kernel result to the dtype the program declares for ``var``.

    This is where precision is modelled: an op whose output is typed fp16 is rounded to fp16
    here, whatever precision its kernel computed in.
    """
    if isinstance(value, (str, list, tuple, dict, State)) or value is None:
        return value
    dtype = numpy_dtype(var)
    arr = np.asarray(value)
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr
