"""Interpret a pymil ``Function`` op by op with the kernels of ``registry``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import UnsupportedOpError
from .registry import KernelContext, get_kernel, implemented_ops
from .values import conform, const_value, is_state, zero_state


class Interpreter:
    """Runs one MIL function; optionally records every op output by name."""

    def __init__(self, function: Any, record: bool = False, promote_fp16: bool = False):
        self.function = function
        self.record = record
        self.promote = promote_fp16  # run fp16-typed ops in fp32 (a shadow run; see values.conform)
        self.trace: dict[str, np.ndarray] = {}

    def run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        env: dict[str, Any] = {}
        for name, var in self.function.inputs.items():
            if is_state(var):
                env[var.name] = zero_state(var)
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

    def _run_ops(self, block: Any, env: dict[str, Any]) -> list[Any]:
        for op in block.operations:
            self._run_op(op, env)
        return [self._value(var, env) for var in block.outputs]

    def _run_op(self, op: Any, env: dict[str, Any]) -> None:
        if op.op_type == "const":
            env[op.outputs[0].name] = const_value(op.outputs[0])
            return
        fn = get_kernel(op.op_type)
        if fn is None:
            raise UnsupportedOpError(
                f"the Core ML reference runtime has no kernel for MIL op {op.op_type!r} "
                f"(opset {_opset_name(op)}, op {op.name!r})",
                hint="implemented: " + ", ".join(implemented_ops()),
            )
        kwargs = {name: self._input_value(v, env) for name, v in op.inputs.items()}
        ctx = KernelContext(op, lambda blk, vals: self.run_block(blk, vals, env))
        result = fn(ctx, **kwargs)
        results = result if len(op.outputs) > 1 else (result,)
        if len(results) != len(op.outputs):
            raise RuntimeError(f"kernel {op.op_type} returned {len(results)} outputs, expected {len(op.outputs)}")
        for var, value in zip(op.outputs, results):
            env[var.name] = conform(value, var, self.promote)
            if self.record:
                self.trace[var.name] = env[var.name]

    def _input_value(self, v: Any, env: dict[str, Any]) -> Any:
        if isinstance(v, (list, tuple)):
            return [self._value(x, env) for x in v]
        return self._value(v, env)

    @staticmethod
    def _value(var: Any, env: dict[str, Any]) -> Any:
        if var.name in env:
            return env[var.name]
        if var.val is not None:
            return const_value(var)
        raise KeyError(f"MIL var {var.name!r} used before it was computed")


def _opset_name(op: Any) -> str:
    version = op.opset_version
    return getattr(version, "name", str(version))
