"""Build tiny MIL programs, save them as real .mlpackages, run them with the reference runtime."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def save_program(prog: Any, folder: Path, precision: str = "fp32", target: Any = None) -> Path:
    """Convert a pymil program (``@mb.program``) to an ML program package on disk."""
    import coremltools as ct

    kwargs: dict[str, Any] = {}
    if target is not None:
        kwargs["minimum_deployment_target"] = target
    mlmodel = ct.convert(
        prog,
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        **kwargs,
    )
    path = Path(folder) / "model.mlpackage"
    mlmodel.save(str(path))
    return path


def run_program(prog: Any, inputs: dict[str, np.ndarray], precision: str = "fp32", target: Any = None,
                intermediate: bool = False) -> Any:
    """Save ``prog`` to a temporary package and execute it from disk."""
    from interop.runtimes import mil

    with tempfile.TemporaryDirectory() as tmp:
        path = save_program(prog, Path(tmp), precision=precision, target=target)
        return mil.predict(path, inputs, intermediate=intermediate)


def run_builder(build: Callable[..., Any], input_specs: list[Any], inputs: dict[str, np.ndarray], **kw: Any) -> Any:
    """``build`` is the body of an ``@mb.program(input_specs=...)`` function. A program built at an
    ``opset_version`` is also converted for that deployment target unless ``target`` says otherwise
    (ops of newer opsets do not convert for an older target)."""
    from coremltools.converters.mil import Builder as mb

    opset = kw.pop("opset_version", None)
    if opset is not None:
        kw.setdefault("target", opset)
    prog = mb.program(input_specs=input_specs, opset_version=opset)(build)
    return run_program(prog, inputs, **kw)


def run_ios17(build: Callable[..., Any], input_specs: list[Any], inputs: dict[str, np.ndarray],
              opset_version: Any = None, **kw: Any) -> Any:
    """:func:`run_builder` at ``opset_version``, by default iOS17 (what most kernel tests target)."""
    import coremltools as ct

    return run_builder(build, input_specs, inputs, opset_version=opset_version or ct.target.iOS17, **kw)


def run_outputs(build: Callable[..., Any], input_specs: list[Any], inputs: dict[str, np.ndarray],
                opset: Any = None, **kw: Any) -> list[Any]:
    """The outputs of :func:`run_ios17` in the order ``build`` returns them."""
    return list(run_ios17(build, input_specs, inputs, opset_version=opset, **kw).values())


def run_x(build: Callable[..., Any], x: np.ndarray, **kw: Any) -> Any:
    """:func:`run_ios17` of a program with one fp32 input ``x`` shaped like ``x``."""
    return run_ios17(build, [spec(x.shape)], {"x": x}, **kw)


def spec(shape: Any, dtype: Any = None) -> Any:
    """A pymil input spec, fp32 unless ``dtype`` says otherwise."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    return mb.TensorSpec(shape=shape, dtype=dtype or types.fp32)
