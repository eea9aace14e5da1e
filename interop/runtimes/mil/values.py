"""MIL types <-> numpy values."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Callable

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
    once and the fp32 copy kept in :data:`CONSTANT_CACHE`. The returned array may therefore be
    shared: kernels must not modify their inputs in place.
    """
    arr = np.asarray(a)
    if arr.dtype != _FLOATS[0]:
        return arr
    if id(arr) in _REGISTERED:
        return CONSTANT_CACHE.get("fp32", (arr,), _widened)
    return cast(arr, _FLOATS[1])


def _widened(arr: np.ndarray) -> np.ndarray:
    return cast(arr, _FLOATS[1])


def torch_tensor(a: Any):
    """``widen(a)`` as a CPU torch tensor sharing its memory when it can (a read-only or
    negatively strided array is copied: ``torch.from_numpy`` refuses or warns on those)."""
    import torch

    arr = np.asarray(a)
    if arr.dtype == _FLOATS[0] and id(arr) not in _REGISTERED:
        # an activation: widen in torch directly (half the cost of widen() + from_numpy)
        if not arr.flags.writeable or any(s < 0 for s in arr.strides):
            arr = np.array(arr)
        return torch.from_numpy(arr).float()
    arr = widen(arr)
    if not arr.flags.writeable or any(s < 0 for s in arr.strides):
        arr = np.array(arr)
    return torch.from_numpy(arr)


class ConstantCache:
    """Forms of program constants a kernel computes with (fp32 copies, reordered or transposed
    weights), made once per constant.

    Keyed on a layout name and the identity of the arrays the kernel received (the program's
    constants, which the interpreter decodes once and keeps). An entry holds only weak references
    to those arrays and goes when one of them is garbage collected; a lookup checks that the
    referenced arrays are the very ones passed, so an array reusing a dead one's ``id`` never gets
    its entry. Prepared values must not reference the keys (they would never die). At most
    ``max_bytes`` of prepared data are kept, least recently used out first.
    """

    def __init__(self, max_bytes: int = 64 * 1024**2):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: OrderedDict[tuple, tuple[tuple, Any, int]] = OrderedDict()

    def get(self, layout: str, arrays: tuple, build: Callable[..., Any]) -> Any:
        key = (layout,) + tuple(id(a) for a in arrays)
        entry = self._entries.get(key)
        if entry is not None and all(ref is None or ref() is a for ref, a in zip(entry[0], arrays)):
            self._entries.move_to_end(key)
            return entry[1]
        value = build(*arrays)
        nbytes = _nbytes(value)
        if nbytes > self.max_bytes:
            return value
        try:
            refs = tuple(None if a is None else weakref.ref(a, lambda _, k=key: self._drop(k)) for a in arrays)
        except TypeError:  # not weakly referenceable: not cached
            return value
        self._drop(key)
        self._entries[key] = (refs, value, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return value

    def _drop(self, key: tuple) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.nbytes -= entry[2]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # a torch tensor
        return value.element_size() * value.nelement()
    return 0


CONSTANT_CACHE = ConstantCache(64 * 1024**2)
"""The derived forms of constants, over all loaded programs: up to 64 MB, enough for the weights
of a small model, so that a large one does not double its weights in memory."""

_REGISTERED: set[int] = set()  # ids of the fp16 constants widen() may cache


def register_constant(arr: Any) -> None:
    """Let :func:`widen` cache the fp32 copy of ``arr``, an fp16 program constant that stays
    alive and unchanged while it is used (the registration goes when ``arr`` is collected)."""
    if not isinstance(arr, np.ndarray) or arr.dtype != _FLOATS[0] or arr.size < _TORCH_CAST_MIN_SIZE:
        return
    key = id(arr)
    if key in _REGISTERED:
        return
    _REGISTERED.add(key)
    weakref.finalize(arr, _REGISTERED.discard, key)


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
