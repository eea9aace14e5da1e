"""MIL types <-> numpy values."""

from __future__ import annotations

import weakref
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
    compute half precision in single).

    A program constant registered with :func:`register_constant` (weights, mostly) is widened
    once and the fp32 copy reused by every later call, within :data:`WIDE_CACHE_BYTES`. The
    returned array may therefore be shared: kernels must not modify their inputs in place.
    """
    arr = np.asarray(a)
    if arr.dtype != _FLOATS[0]:
        return arr
    entry = _WIDE.get(id(arr))
    if entry is None:
        return cast(arr, _FLOATS[1])
    if entry[0] is None:
        wide = cast(arr, _FLOATS[1])
        if not _WIDE_BYTES.fits(wide.nbytes):
            return wide
        entry[0] = wide
    return entry[0]


def torch_tensor(a: Any):
    """``widen(a)`` as a CPU torch tensor sharing its memory when it can (a read-only or
    negatively strided array is copied: ``torch.from_numpy`` refuses or warns on those)."""
    import torch

    arr = np.asarray(a)
    if arr.dtype == _FLOATS[0] and id(arr) not in _WIDE:
        # an activation: widen in torch directly (half the cost of widen() + from_numpy)
        if not arr.flags.writeable or any(s < 0 for s in arr.strides):
            arr = np.array(arr)
        return torch.from_numpy(arr).float()
    arr = widen(arr)
    if not arr.flags.writeable or any(s < 0 for s in arr.strides):
        arr = np.array(arr)
    return torch.from_numpy(arr)


WIDE_CACHE_BYTES = 64 * 1024**2
"""Most fp32 bytes kept for widened fp16 constants at once, over all loaded programs: enough for
the weights of a small model, so that a large one does not double its weights in memory."""


class _Budget:
    def __init__(self) -> None:
        self.used = 0

    def fits(self, nbytes: int) -> bool:
        if self.used + nbytes > WIDE_CACHE_BYTES:
            return False
        self.used += nbytes
        return True


_WIDE: dict[int, list] = {}  # id(fp16 constant) -> [its fp32 copy or None]
_WIDE_BYTES = _Budget()


def register_constant(arr: Any) -> None:
    """Let :func:`widen` cache the fp32 copy of ``arr``, an fp16 program constant that stays
    alive and unchanged while it is used (the entry goes when ``arr`` is garbage collected)."""
    if not isinstance(arr, np.ndarray) or arr.dtype != _FLOATS[0] or arr.size < _TORCH_CAST_MIN_SIZE:
        return
    key = id(arr)
    if key in _WIDE:
        return
    _WIDE[key] = [None]
    weakref.finalize(arr, _forget, key)


def _forget(key: int) -> None:
    entry = _WIDE.pop(key, None)
    if entry is not None and entry[0] is not None:
        _WIDE_BYTES.used -= entry[0].nbytes


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
    return conform_dtype(value, dtype)


def conform_dtype(value: Any, dtype: np.dtype | None) -> Any:
    """:func:`conform` with the target dtype already known (the interpreter's hot path)."""
    if isinstance(value, (str, list, tuple, dict, State)) or value is None:
        return value
    arr = np.asarray(value)
    if dtype is not None and arr.dtype != dtype:
        arr = cast(arr, dtype)
    return arr
