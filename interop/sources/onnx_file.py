"""An ``.onnx`` file as the source.

The reference is ONNX Runtime on the source file itself. Targets that build from a PyTorch module
(Core ML, Core AI) build from the graph converted to PyTorch by onnx2torch
(``sources/onnx_convert.py``; coremltools removed its own ONNX frontend in coremltools 6); that
converted module is checked against ONNX Runtime at every shape case first, so a converter fault
is reported as the converter's, not the target's. The ONNX target ships the checked source graph
(simplified only when numerics hold)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interop.errors import LoadError, SpecError, first_line
from interop.settings import BuildConfig
from interop.sources.torch_files import Source, file_sha256
from interop.stages.spec import DEFAULT_MAX, DynamicAxis, InputSpec, TensorSpec, apply_dynamic, parse_dynamic, parse_input, validate

_DTYPES = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 5: "int16", 3: "int8", 2: "uint8", 9: "bool"}


def is_onnx(model: str) -> bool:
    return Path(model).suffix.lower() == ".onnx"


def load_onnx(path: Path) -> Any:
    import onnx

    from interop.trust import check_onnx

    if not path.is_file():
        raise LoadError(f"model file {path} does not exist", hint="check the path")
    check_onnx(path)  # a regular file, its external data inside its folder
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise LoadError(f"{path} is not a valid ONNX model ({first_line(exc)})",
                        hint="re-export it, or build from the PyTorch model") from exc
    check_ops_known(model, path)
    return model


RUNTIME_DOMAINS = ("com.microsoft",)  # ONNX Runtime's contrib ops: defined by the reference runtime


def check_ops_known(model: Any, path: Path) -> None:
    """Every opset the model imports exists (the default domain at most the opset this onnx
    defines) and every op is defined by ONNX, by ONNX Runtime or by a function the model carries:
    a custom-domain op or opset 99 is one line here, not an ONNX Runtime load failure later."""
    from onnx import defs

    from interop.trust import shown

    hint = "export with a standard opset (e.g. 17) and standard ops, or build from the PyTorch model"
    newest = defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not 1 <= imp.version <= newest:
            raise LoadError(f"{shown(path)} imports ONNX opset {imp.version}; this onnx defines 1..{newest}", hint=hint)
    local = {(f.domain, f.name) for f in model.functions}
    stack = list(model.graph.node)
    while stack:
        node = stack.pop()
        stack += [n for a in node.attribute for g in [*([a.g] if a.HasField("g") else []), *a.graphs] for n in g.node]
        domain = node.domain or ""
        if (domain, node.op_type) in local or domain in RUNTIME_DOMAINS:
            continue
        if domain not in ("", "ai.onnx", "ai.onnx.ml") or not defs.has(node.op_type, domain):
            raise LoadError(f"{shown(path)} uses op {shown(domain or 'ai.onnx')}:{shown(node.op_type)}, which neither ONNX "
                            "nor ONNX Runtime defines (a custom op needs its own library)", hint=hint)


def spec_from_graph(model: Any, config: BuildConfig) -> InputSpec:
    """Flags win; otherwise the graph's inputs, symbolic dims becoming dynamic axes (example 1)."""
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    carried = _carried_spec(model)
    if config.inputs:
        spec = InputSpec([parse_input(t) for t in config.inputs])
    elif carried is not None:  # an ONNX file interop wrote carries its spec (examples and ranges)
        spec = carried
    else:
        tensors = []
        for inp in graph_inputs:
            tt = inp.type.tensor_type
            shape, dyn = [], {}
            for axis, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    shape.append(d.dim_value)
                else:
                    shape.append(1)
                    dyn[axis] = DynamicAxis(axis, d.dim_param or f"{inp.name}_dim{axis}", 1, DEFAULT_MAX)
            tensors.append(TensorSpec(inp.name, tuple(shape), _DTYPES.get(tt.elem_type, "float32"), dynamic=dyn))
        spec = InputSpec(tensors)
    for text in config.dynamic:
        name, dyn = parse_dynamic(text)
        apply_dynamic(spec, name, dyn)
    names = [i.name for i in graph_inputs]
    if sorted(spec.names()) != sorted(names):
        raise SpecError(f"inputs {spec.names()} do not match the ONNX model's inputs {names}",
                        hint="name each --input after a graph input")
    validate(spec)
    return spec


@dataclass
class OnnxSource(Source):
    """An ONNX file: ``module`` is the graph converted to PyTorch (None when the converter failed:
    ``converter['error']`` says why), ``reference_module`` runs the file in ONNX Runtime."""

    reference_module: Any = None
    model_proto: Any = None
    converter: dict[str, Any] = field(default_factory=dict)
    onnx_parameters: int = 0

    @property
    def parameters(self) -> int:
        return self.onnx_parameters


def load_onnx_file(path: Path) -> OnnxSource:
    """Load and check the file and convert its graph to PyTorch (a converter failure is recorded,
    not raised: the ONNX target does not need the conversion)."""
    from interop.sources import onnx_convert
    from interop.support.quiet import Noise, captured

    model = load_onnx(path)
    outputs = [o.name for o in model.graph.output]
    converter: dict[str, Any] = {"name": onnx_convert.CONVERTER, "version": onnx_convert.version(), "error": None,
                                 "unsupported": []}
    module = None
    from interop.sources.onnx_normalise import normalise_for_conversion

    normalised, converter["normalisation"] = normalise_for_conversion(model)
    try:
        with captured(Noise()):
            module = _convert_first(onnx_convert, [normalised, model] if normalised is not model else [model],
                                    converter["normalisation"])
    except Exception as exc:
        converter["unsupported"] = onnx_convert.unsupported_ops(normalised)
        ops = "; ".join(f"{u['op']} x{u['count']} ({', '.join(u['nodes'][:3])})" for u in converter["unsupported"])
        converter["error"] = (f"{onnx_convert.CONVERTER} cannot convert the graph: "
                              + (f"no converter for ONNX op(s) {ops}" if ops else first_line(exc))
                              + "; the ONNX target does not depend on it (--targets onnx ships ONNX alone)")
    for key in ("_probes", "_reference"):
        converter["normalisation"].pop(key, None)
    inputs = [i.name for i in _graph_inputs(model)]
    return OnnxSource(module, "onnx", str(path), file_sha256(path), hints={}, forward_names=inputs,
                      reference_module=ort_module(path, inputs, outputs), model_proto=model, converter=converter,
                      onnx_parameters=int(sum(int(np.prod(i.dims)) for i in model.graph.initializer)))


def _convert_first(onnx_convert: Any, graphs: list[Any], info: dict[str, Any]) -> Any:
    """The first of ``graphs`` (the normalised graph, then the source) whose conversion computes
    what ONNX Runtime computes on the probes; else the last one's conversion (the build's own
    check then reports how it departs)."""
    from interop.sources.onnx_normalise import converted_agrees

    info["converted"] = "source"
    for graph in graphs[:-1]:
        try:
            module = onnx_convert.convert(graph)
        except Exception as exc:
            info["converted_why_not"] = f"{type(exc).__name__}: {str(exc)[:160]}"
            continue
        why = converted_agrees(module, graph, info)
        if why is None:
            info["converted"] = "normalised"
            return module
        info["converted_why_not"] = why
    return onnx_convert.convert(graphs[-1])


def onnx_spec(config: BuildConfig, source: OnnxSource) -> InputSpec:
    """The spec from the graph (flags win; the spec an interop-written file carries next)."""
    spec = spec_from_graph(source.model_proto, config)
    if not config.output_names:
        spec.output_names = [o.name for o in source.model_proto.graph.output]
    source.forward_names = spec.names()
    return spec


def load_onnx_source(config: BuildConfig) -> tuple[OnnxSource, InputSpec]:
    source = load_onnx_file(Path(config.model))
    return source, onnx_spec(config, source)


def _graph_inputs(model: Any) -> list[Any]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def ort_module(path: Path, inputs: list[str], outputs: list[str]) -> Any:
    """A torch module whose forward runs the ONNX file in ONNX Runtime: the reference, composable
    with interop's preprocessing and softmax wrappers like any PyTorch model."""
    import torch

    from interop.runtimes.onnxruntime import session

    class OnnxRuntimeReference(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.session = session(str(path))

        def forward(self, *args: Any) -> tuple:
            feeds = {n: a.detach().cpu().numpy() for n, a in zip(inputs, args)}
            try:
                got = self.session.run(outputs, feeds)
            except Exception as exc:
                raise SpecError(f"ONNX Runtime fails on the source model with inputs "
                                f"{ {n: list(v.shape) for n, v in feeds.items()} }: {first_line(exc)}",
                                hint="fix --input / --dynamic to shapes the model accepts") from exc
            return tuple(torch.from_numpy(np.asarray(g)) for g in got)

    return OnnxRuntimeReference().eval()


def _carried_spec(model: Any) -> InputSpec | None:
    import json

    meta = {p.key: p.value for p in model.metadata_props}
    if "interop.spec" not in meta:
        return None
    try:
        return InputSpec.from_json(json.loads(meta["interop.spec"]))
    except Exception:  # a damaged or foreign value: fall back to the graph's own shapes
        return None
