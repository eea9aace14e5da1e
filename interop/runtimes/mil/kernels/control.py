"""Control-flow MIL ops: ``cond``, ``while_loop``, ``select`` and the tensor-list ops.

Semantics of coremltools' iOS15 ``control_flow.py`` op definitions:

* ``cond`` runs ``blocks[0]`` when ``pred`` is true, ``blocks[1]`` otherwise; ``while_loop`` runs
  its cond block (``blocks[0]``) on the loop vars and, while it yields true, its body block
  (``blocks[1]``). Nested blocks see the enclosing scope (``ctx.run_block``).
* A tensor list is a Python ``list`` whose slots hold arrays, or ``None`` for a slot never
  written. Unwritten slots read as zeros (Core ML initialises lists to zeros), and a dynamic list
  grows when written past its end, as coremltools' ``TestList`` pins.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import kernel


def _single_or_tuple(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else tuple(values)


@kernel("cond")
def cond(ctx, pred):
    """MIL ``cond``: the outputs of the true (``blocks[0]``) or false (``blocks[1]``) block."""
    branch = ctx.op.blocks[0] if bool(np.asarray(pred)) else ctx.op.blocks[1]
    return _single_or_tuple(ctx.run_block(branch, []))


@kernel("while_loop")
def while_loop(ctx, loop_vars):
    """MIL ``while_loop``: ``while cond(*vars): vars = body(*vars)``; returns the final vars."""
    cond_block, body_block = ctx.op.blocks
    values = list(loop_vars)
    while bool(np.asarray(ctx.run_block(cond_block, values)[0])):
        values = ctx.run_block(body_block, values)
    return _single_or_tuple(values)


@kernel("select")
def select(ctx, cond, a, b):
    """MIL ``select``: ``np.where(cond, a, b)`` with broadcasting."""
    return np.where(np.asarray(cond, dtype=bool), a, b)


# ---------------------------------------------------------------------------------- tensor lists


def _concrete_shape(var: Any) -> tuple[int, ...] | None:
    """The shape of a pymil var if every dimension is known, else None."""
    shape = getattr(var, "shape", None)
    if shape is None or not all(isinstance(d, (int, np.integer)) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _element_shape(ls: list, declared: tuple[int, ...] | None) -> tuple[int, ...]:
    """Shape of one list element: the declared one, else that of any written element."""
    if declared is not None:
        return declared
    for elem in ls:
        if elem is not None:
            return np.shape(elem)
    raise RuntimeError("cannot read an element of a tensor list that was never written and has no static shape")


def _read(ls: list, index: int, shape: tuple[int, ...] | None, dtype) -> np.ndarray:
    if not 0 <= index < len(ls):
        raise IndexError(f"tensor list index {index} is out of range for a list of length {len(ls)}")
    elem = ls[index]
    return np.zeros(_element_shape(ls, shape), dtype) if elem is None else elem


def _write(ls: list, index: int, value: np.ndarray, dynamic: bool) -> None:
    if index < 0 or (index >= len(ls) and not dynamic):
        raise IndexError(f"tensor list index {index} is out of range for a fixed list of length {len(ls)}")
    ls.extend([None] * (index + 1 - len(ls)))
    ls[index] = np.asarray(value)


def _is_dynamic(ctx) -> bool:
    return bool(getattr(ctx.op.inputs["ls"], "dynamic_length", True))


@kernel("make_list")
def make_list(ctx, elem_shape, init_length=1, dynamic_length=True, dtype="fp32"):
    """MIL ``make_list``: ``init_length`` unwritten (zero) slots."""
    return [None] * int(init_length)


@kernel("list_length")
def list_length(ctx, ls):
    """MIL ``list_length``."""
    return np.int32(len(ls))


@kernel("list_write")
def list_write(ctx, ls, index, value):
    """MIL ``list_write``: a new list with slot ``index`` set (a dynamic list grows)."""
    out = list(ls)
    _write(out, int(index), value, _is_dynamic(ctx))
    return out


@kernel("list_read")
def list_read(ctx, ls, index):
    """MIL ``list_read``."""
    return _read(ls, int(index), _concrete_shape(ctx.op.outputs[0]), ctx.output_dtype())


@kernel("list_gather")
def list_gather(ctx, ls, indices):
    """MIL ``list_gather``: the selected elements stacked along a new axis 0."""
    shape = _concrete_shape(ctx.op.outputs[0])
    elem_shape = None if shape is None else shape[1:]
    elems = [_read(ls, int(i), elem_shape, ctx.output_dtype()) for i in np.ravel(indices)]
    if not elems:
        return np.zeros((0,) + _element_shape(ls, elem_shape), ctx.output_dtype())
    return np.stack(elems)


@kernel("list_scatter")
def list_scatter(ctx, ls, indices, value):
    """MIL ``list_scatter``: ``value[i]`` written to slot ``indices[i]``."""
    out = list(ls)
    for i, index in enumerate(np.ravel(indices)):
        _write(out, int(index), np.asarray(value)[i], _is_dynamic(ctx))
    return out
