"""Clamp fusion: a plan's steps with each clamp (``relu``, ``relu6``, ``clip``) that alone consumes
the output of the step before it merged into that step.

The clamp runs on the producer's unrounded result and only its own output is rounded. That is
exact: rounding to the declared dtype is monotonic and the clamp's bounds are representable in it
(checked; ``0`` and ``6`` always are), so ``round(clamp(r)) == clamp(round(r))`` (up to the sign of
a zero). The interpreter uses the fused steps when the intermediate values are not recorded -- the
producer's own output is never materialised (see ``interpreter._Plan.fused_steps``).

A step here is an ``interpreter._Step`` (duck-typed: this module does not import the interpreter,
which imports it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .values import numpy_dtype

CLAMPS = {"relu": (), "relu6": (), "clip": ("alpha", "beta")}
"""Clamp op -> the names of its bound arguments (each must be representable in the dtype)."""


def fuse(steps: list[Any], block_outputs: list[Any]) -> list[Any]:
    """``steps`` with every fusable (producer, clamp) pair replaced by one merged step."""
    fused: list[Any] = []
    i = 0
    while i < len(steps):
        step, nxt = steps[i], steps[i + 1] if i + 1 < len(steps) else None
        if nxt is not None and fusable(step, nxt, block_outputs):
            fused.append(merged(step, nxt))
            i += 2
        else:
            fused.append(step)
            i += 1
    return fused


def merged(first: Any, clamp: Any) -> Any:
    """``first`` followed by ``clamp`` applied to its raw result, as one step."""
    cls = type(first)
    step = cls.__new__(cls)
    for slot in cls.__slots__:
        setattr(step, slot, getattr(first, slot))
    step.op_type = f"{first.op_type}+{clamp.op_type}"
    step.outs = clamp.outs
    produce, clamp_fn, clamp_ctx, clamp_args = first.fn, clamp.fn, clamp.ctx, clamp.const_args
    step.fn = lambda ctx, **kwargs: clamp_fn(clamp_ctx, x=produce(ctx, **kwargs), **clamp_args)
    return step


def fusable(step: Any, clamp: Any, block_outputs: list[Any]) -> bool:
    """Whether ``clamp`` alone consumes ``step``'s single float output (not a block output), in the
    same dtype, with bounds that dtype represents exactly."""
    if clamp.op_type not in CLAMPS or step.has_blocks or len(step.op.outputs) != 1 or step.list_args:
        return False
    var = step.op.outputs[0]
    if clamp.env_args != [("x", var.name)] or any(v is var for v in block_outputs):
        return False
    if [op is clamp.op for op in getattr(var, "child_ops", ())] != [True]:
        return False
    dtype = numpy_dtype(var)
    if dtype is None or dtype.kind != "f" or numpy_dtype(clamp.op.outputs[0]) != dtype:
        return False
    for name in CLAMPS[clamp.op_type]:
        bound = np.asarray(clamp.const_args.get(name), dtype=np.float64)
        if bound.size != 1 or bound.astype(dtype).astype(np.float64) != bound:
            return False
    return True
