"""The kernel registry of the Core ML reference runtime: one function per MIL op type.

A kernel is registered with ``@kernel("op_type", ...)`` and called as ``fn(ctx, **inputs)``:

* ``inputs`` are the op's inputs by their MIL names (defaults already filled in by coremltools'
  op definitions), each resolved to a value: ``np.ndarray`` for tensors (dtype as declared in
  the program: fp16 tensors arrive as ``np.float16``), numpy scalars / 0-d arrays for scalars,
  ``str`` for string params, ``list`` for tuple inputs such as ``concat``'s ``values``.
* ``ctx`` is a :class:`KernelContext`: ``ctx.op`` is the pymil ``Operation`` (for
  ``ctx.op.opset_version``, output types, nested blocks), ``ctx.run_block(block, values)`` runs a
  nested block (control flow).

A kernel returns one value, or a tuple with one value per op output. The interpreter then casts
each output to the dtype the program declares for it, so an op typed fp16 is rounded to fp16
even when its kernel computes in fp32.
"""

from __future__ import annotations

from typing import Any, Callable

KERNELS: dict[str, Callable[..., Any]] = {}


def kernel(*op_types: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the kernel of every op type in ``op_types``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for op_type in op_types:
            if op_type in KERNELS and KERNELS[op_type] is not fn:
                raise RuntimeError(f"MIL op {op_type!r} registered twice")
            KERNELS[op_type] = fn
        return fn

    return register


def implemented_ops() -> list[str]:
    """Sorted names of every op type the runtime can execute."""
    _load_kernels()
    return sorted(KERNELS)


def get_kernel(op_type: str) -> Callable[..., Any] | None:
    _load_kernels()
    return KERNELS.get(op_type)


_LOADED = False


def _load_kernels() -> None:
    """Import every module of ``kernels/`` once, so their ``@kernel`` decorators run."""
    global _LOADED
    if _LOADED:
        return
    import importlib
    import pkgutil

    from . import kernels

    for info in pkgutil.iter_modules(kernels.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{kernels.__name__}.{info.name}")
    _LOADED = True


class KernelContext:
    """What a kernel may need beyond its input values."""

    def __init__(self, op: Any, run_block: Callable[..., list[Any]]):
        self.op = op
        self._run_block = run_block

    @property
    def opset(self) -> str:
        """The op's opset, e.g. ``"iOS17"`` (coremltools calls it ``opset_version``)."""
        version = self.op.opset_version
        return getattr(version, "name", str(version))

    def output_dtype(self, index: int = 0):
        """The numpy dtype the program declares for output ``index``."""
        from .values import numpy_dtype

        return numpy_dtype(self.op.outputs[index])

    def run_block(self, block: Any, values: list[Any]) -> list[Any]:
        """Run a nested block with ``values`` bound to its inputs; returns its outputs."""
        return self._run_block(block, values)
