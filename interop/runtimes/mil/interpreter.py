"""Interpret a pymil ``Function`` op by op with the kernels of ``registry``.

A block (a function's body, a ``cond`` branch, a ``while_loop`` body) is compiled once into a
:class:`_Plan` -- its ``const`` ops decoded, each other op's kernel looked up, its inputs sorted
into constants and names to read from the environment, its outputs' declared dtypes resolved --
and the plan is kept for later runs (a :class:`~.loader.LoadedModel` keeps its plans for every
``predict``). Running a plan is then a tight loop: gather inputs, call the kernel, conform the
outputs to their declared dtypes (where fp16 rounding happens, see ``values.conform``). Clamps that
follow their producer run fused with it when nothing is recorded (``fusion.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import UnsupportedOpError
from .fusion import fuse
from .registry import KernelContext, get_kernel, implemented_ops
from .values import conform, conform_dtype, const_value, is_state, numpy_dtype, register_constant, zero_state

_F16, _F32 = np.dtype(np.float16), np.dtype(np.float32)


class _Step:
    """One non-const op, ready to run."""

    __slots__ = ("op", "op_type", "fn", "const_args", "env_args", "list_args", "outs", "ctx", "has_blocks",
                 "promoted_args")

    def __init__(self, op: Any, fn: Any, constants: dict[str, Any]):
        self.op = op
        self.op_type = op.op_type
        self.fn = fn
        self.const_args: dict[str, Any] = {}
        self.env_args: list[tuple[str, str]] = []
        self.list_args: list[tuple[str, list[tuple[bool, Any]]]] = []
        for name, v in op.inputs.items():
            if isinstance(v, (list, tuple)):
                self.list_args.append((name, [_source(x, constants) for x in v]))
                continue
            is_const, source = _source(v, constants)
            if is_const:
                self.const_args[name] = source
            else:
                self.env_args.append((name, source))
        # (name, declared dtype, dtype in a promote_fp16 shadow run)
        self.outs = [(var.name, numpy_dtype(var), _promoted(numpy_dtype(var))) for var in op.outputs]
        self.ctx = KernelContext(op, _no_blocks)
        self.has_blocks = bool(getattr(op, "blocks", None))
        # a cast to fp16 stays fp32 in the shadow run (the whole program as if it were fp32)
        self.promoted_args = ({"dtype": "fp32"} if op.op_type == "cast" and
                              str(self.const_args.get("dtype")) == "fp16" else None)


class _Plan:
    """A compiled block: its decoded constants, its steps and the names of its outputs."""

    def __init__(self, block: Any):
        self.constants: dict[str, Any] = {}
        self.steps: list[_Step] = []
        for op in block.operations:
            if op.op_type == "const":
                value = const_value(op.outputs[0])
                register_constant(value)
                self.constants[op.outputs[0].name] = value
                continue
            fn = get_kernel(op.op_type)
            if fn is None:
                raise UnsupportedOpError(
                    f"the Core ML reference runtime has no kernel for MIL op {op.op_type!r} "
                    f"(opset {_opset_name(op)}, op {op.name!r})",
                    hint="implemented: " + ", ".join(implemented_ops()),
                )
            self.steps.append(_Step(op, fn, self.constants))
        self.outputs = list(block.outputs)
        self.fused_steps = fuse(self.steps, self.outputs)


class Interpreter:
    """Runs one MIL function; optionally records every op output by name.

    ``plans`` (block id -> compiled plan) may be shared between interpreters of the same program
    so that it is compiled once; by default each interpreter compiles what it runs.
    """

    def __init__(self, function: Any, record: bool = False, promote_fp16: bool = False,
                 plans: dict[int, _Plan] | None = None):
        self.function = function
        self.record = record
        self.promote = promote_fp16  # run fp16-typed ops in fp32 (a shadow run; see values.conform)
        self.trace: dict[str, np.ndarray] = {}
        self.plans = {} if plans is None else plans

    def run(self, inputs: dict[str, Any], states: dict[str, Any] | None = None) -> dict[str, Any]:
        """``states`` (state input name -> ``values.State``) persist across runs; a state input
        not in it starts at zero."""
        env: dict[str, Any] = {}
        for name, var in self.function.inputs.items():
            if is_state(var):
                env[var.name] = states[name] if states and name in states else zero_state(var)
                continue
            if name not in inputs:
                raise KeyError(f"missing input {name!r}")
            env[var.name] = conform(np.asarray(inputs[name]), var, self.promote)
        outputs = self._run_ops(self.function, env)
        return {var.name: value for var, value in zip(self.function.outputs, outputs)}

    def run_block(self, block: Any, values: list[Any], outer: dict[str, Any]) -> list[Any]:
        env = dict(outer)
        for var, value in zip(block.inputs, values):
            env[var.name] = conform(value, var, self.promote)
        return self._run_ops(block, env)

    def _plan(self, block: Any) -> _Plan:
        plan = self.plans.get(id(block))
        if plan is None:
            plan = self.plans[id(block)] = _Plan(block)
        return plan

    def _run_ops(self, block: Any, env: dict[str, Any]) -> list[Any]:
        plan = self._plan(block)
        env.update(plan.constants)
        run_op = self._run_op
        for step in plan.steps if self.record else plan.fused_steps:
            run_op(step, env)
        return [self._value(var, env) for var in plan.outputs]

    def _run_op(self, step: _Step, env: dict[str, Any]) -> None:
        kwargs = dict(step.const_args)
        for name, key in step.env_args:
            kwargs[name] = env[key] if key in env else _missing(key)
        for name, sources in step.list_args:
            kwargs[name] = [value if is_const else (env[value] if value in env else _missing(value))
                            for is_const, value in sources]
        if self.promote and step.promoted_args:
            kwargs.update(step.promoted_args)
        if step.has_blocks:
            step.ctx = KernelContext(step.op, lambda blk, vals: self.run_block(blk, vals, env))
        result = step.fn(step.ctx, **kwargs)
        outs = step.outs
        if len(outs) == 1:
            name, dtype, promoted = outs[0]
            if self.promote:
                dtype = promoted
            if type(result) is np.ndarray and result.dtype == dtype:
                env[name] = result
            else:
                env[name] = conform_dtype(result, dtype)
            if self.record:
                self.trace[name] = env[name]
            return
        if not isinstance(result, (tuple, list)) or len(result) != len(outs):
            count = len(result) if isinstance(result, (tuple, list)) else 1
            raise RuntimeError(f"kernel {step.op_type} returned {count} outputs, expected {len(outs)}")
        for (name, dtype, promoted), value in zip(outs, result):
            env[name] = conform_dtype(value, promoted if self.promote else dtype)
            if self.record:
                self.trace[name] = env[name]

    @staticmethod
    def _value(var: Any, env: dict[str, Any]) -> Any:
        if var.name in env:
            return env[var.name]
        if var.val is not None:
            return const_value(var)
        return _missing(var.name)


def _source(var: Any, constants: dict[str, Any]) -> tuple[bool, Any]:
    """(True, value) for an input known at compile time, else (False, the name to read)."""
    if var.name in constants:
        return True, constants[var.name]
    producer = getattr(var, "op", None)
    if producer is None and var.val is not None:  # a literal with no op (not a block input)
        return True, const_value(var)
    return False, var.name


def _missing(name: str) -> Any:
    raise KeyError(f"MIL var {name!r} used before it was computed")


def _promoted(dtype: np.dtype | None) -> np.dtype | None:
    return _F32 if dtype == _F16 else dtype


def _no_blocks(block: Any, values: list[Any]) -> list[Any]:
    raise RuntimeError("this op has no nested blocks to run")


def _opset_name(op: Any) -> str:
    version = op.opset_version
    return getattr(version, "name", str(version))
