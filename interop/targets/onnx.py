"""ONNX target: export (TorchScript or dynamo exporter), name dims as the user named them,
check, simplify only when numerics are unchanged, and write metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ExportError, first_line
from ..quiet import Noise, captured
from ..spec import InputSpec

EXPORTERS = ("auto", "torchscript", "dynamo")
DEFAULT_OPSET = 20  # newest opset both exporters of torch 2.13 and onnxruntime 1.32 support
EXTERNAL_DATA_BYTES = 2 * 1024**3


@dataclass
class OnnxResult:
    path: Path
    exporter: str
    opset: int
    nodes_before: int
    nodes_after: int
    simplified: bool
    rejected: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    external_data: bool = False


def exporter_order(exporter: str, opset: int) -> list[str]:
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}", hint=f"use one of {', '.join(EXPORTERS)}")
    if exporter != "auto":
        return [exporter]
    # TorchScript first: 10-100x faster on small models; dynamo when it fails or does not verify.
    import torch.onnx._constants as consts

    if opset > consts.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET:
        return ["dynamo"]
    return ["torchscript", "dynamo"]


def export_once(name: str, module: Any, args: tuple, spec: InputSpec, output_names: list[str], path: Path,
                opset: int, noise: Noise, traced: Callable[[], Any]) -> None:
    """Run one exporter; the file at ``path`` is the raw export. The TorchScript exporter takes
    the pipeline's one trace (``traced()``), shared with the Core ML target."""
    import torch

    inputs = spec.names()
    with captured(noise), torch.no_grad():
        if name == "torchscript":
            module = traced()
            axes = {t.name: {a: d.name for a, d in t.dynamic.items()} for t in spec.inputs if t.dynamic}
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=inputs, output_names=output_names,
                              dynamic_axes=axes or None, opset_version=opset, do_constant_folding=True)
        else:
            from torch.export import Dim

            dims: dict[str, Any] = {}
            # one entry for the flattening wrapper's *args, holding one spec per input
            shapes = tuple({a: dims.setdefault(d.name, Dim(d.name, min=d.min, max=d.max)) for a, d in t.dynamic.items()}
                           or None for t in spec.inputs)
            program = torch.onnx.export(module, args, None, dynamo=True, input_names=inputs,
                                        output_names=output_names, dynamic_shapes=(shapes,) if any(shapes) else None,
                                        opset_version=opset, verbose=False, report=False)
            program.save(str(path), external_data=_param_bytes(module) > EXTERNAL_DATA_BYTES)


def _param_bytes(module: Any) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def name_dims(model: Any, spec: InputSpec, output_dims: list[dict[int, str]]) -> list[str]:
    """Give every symbolic dim the user's name (inputs, and outputs that carry the axis) or a
    meaningful ``<output>_dim<axis>``; returns notes on declared output shapes that were wrong."""
    notes = []
    graph = model.graph
    for inp in graph.input:
        tensor = next((t for t in spec.inputs if t.name == inp.name), None)
        if tensor is None:
            continue
        for axis, dim in enumerate(inp.type.tensor_type.shape.dim):
            if axis in tensor.dynamic:
                dim.dim_param = tensor.dynamic[axis].name
            elif dim.HasField("dim_param"):
                dim.dim_value = tensor.shape[axis]
    inferred = _inferred_output_dims(model)
    for out, dims in zip(graph.output, output_dims):
        for axis, dim in enumerate(out.type.tensor_type.shape.dim):
            if axis in dims:
                if dim.HasField("dim_value"):
                    notes.append(f"the exporter declared axis {axis} of output {out.name!r} as the constant "
                                 f"{dim.dim_value}; it varies with {dims[axis]!r} and is now declared so")
                dim.dim_param = dims[axis]
            elif dim.HasField("dim_param"):
                static = inferred.get((out.name, axis))
                if static is not None:  # e.g. Resize to sizes computed from static input dims
                    dim.dim_value = static
                else:
                    dim.dim_param = f"{out.name}_dim{axis}"
    del graph.value_info[:]  # intermediate shapes carry the exporter's generated names
    return notes


def _inferred_output_dims(model: Any) -> dict[tuple[str, int], int]:
    """Output axes ONNX shape inference (with data propagation) proves constant, where the
    exporter declared a symbol; {} when inference fails or the model is too large for it.
    A wrong constant would still be caught: verification checks declared shapes at every case."""
    import onnx

    try:
        if model.ByteSize() > EXTERNAL_DATA_BYTES:
            return {}
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return {}
    return {(out.name, axis): dim.dim_value for out in inferred.graph.output
            for axis, dim in enumerate(out.type.tensor_type.shape.dim) if dim.HasField("dim_value")}


def check_declared_shapes(model: Any, actual: list[tuple[int, ...]]) -> None:
    for out, shape in zip(model.graph.output, actual):
        dims = out.type.tensor_type.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
        if len(declared) != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(declared, shape)):
            raise ExportError(f"output {out.name!r} is declared {declared} but the model returned {list(shape)}",
                              hint="report this; try --exporter torchscript or dynamo")


def node_count(model: Any) -> int:
    return len(model.graph.node)


def simplify(model: Any, noise: Noise) -> tuple[Any | None, str]:
    """onnxsim the model; (None, why) when it fails."""
    try:
        import onnxsim

        with captured(noise):
            simplified, ok = onnxsim.simplify(model)
    except Exception as exc:
        return None, f"onnxsim failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
    if not ok:
        return None, "onnxsim could not validate its own result"
    return simplified, ""


def full_check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the model: {str(exc).splitlines()[0][:300]}",
                          hint="try the other --exporter") from exc


def set_metadata(model: Any, meta: dict[str, str]) -> None:
    from .. import __version__

    model.producer_name = "interop"
    model.producer_version = __version__
    del model.metadata_props[:]
    for key, value in meta.items():
        if value is None:
            continue
        prop = model.metadata_props.add()
        prop.key = key
        prop.value = value if isinstance(value, str) else json.dumps(value)


def save(model: Any, path: Path, data_name: str) -> bool:
    """Save, with external data beside the file when the model exceeds protobuf's 2 GB. The data
    file is named for the artifact's *final* name (``<stem>.onnx.data``): the .onnx refers to it
    by that name, and the output folder moves it there with the .onnx."""
    import onnx

    large = EXTERNAL_DATA_BYTES < (model.ByteSize() if _size_known(model) else EXTERNAL_DATA_BYTES + 1)
    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=0)
    return large


def _size_known(model: Any) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:
        return False


Verifier = Callable[[Path], list[tuple[int, ...]]]


# verify(path) -> (problem or None, outputs per case); supplied by the pipeline
Verify = Callable[[Path], tuple[str | None, Any]]
SIMPLIFY_TOLERANCE = {"rel_l2": 1e-6, "max_rel": 1e-5}


def build_onnx(module: Any, args: tuple, spec: InputSpec, output_names: list[str], output_dims: list[dict[int, str]],
               workdir: Path, stem: str, opset: int, exporter: str, verify: Verify, meta: dict[str, Any],
               noise: Noise, traced: Callable[[], Any]) -> tuple[OnnxResult, Any]:
    """Export with each exporter in turn until one verifies; simplify if numerics hold."""
    import onnx

    rejected: list[dict[str, str]] = []
    for name in exporter_order(exporter, opset):
        raw = workdir / f"{stem}.{name}.raw.onnx"
        try:
            export_once(name, module, args, spec, output_names, raw, opset, noise, traced)
            model = onnx.load(str(raw))
        except Exception as exc:
            rejected.append({"exporter": name, "reason": f"export failed: {first_line(exc)}"})
            continue
        notes = name_dims(model, spec, output_dims)
        set_metadata(model, meta)
        candidate = workdir / f"{stem}.{name}.onnx"
        external = save(model, candidate, f"{stem}.onnx.data")
        problem, outputs = verify(candidate)
        if problem:
            rejected.append({"exporter": name, "reason": problem})
            continue
        result = OnnxResult(candidate, name, opset, node_count(model), node_count(model), False, rejected, notes,
                            external)
        return _simplified(result, model, spec, output_dims, workdir, stem, verify, outputs, meta, noise)
    reasons = "; ".join(f"{r['exporter']}: {r['reason']}" for r in rejected)
    raise ExportError(f"no exporter produced a verified ONNX model ({reasons})",
                      hint="see the report; `interop check` lists unsupported ops")


def _simplified(result: OnnxResult, model: Any, spec: InputSpec, output_dims: list[dict[int, str]], workdir: Path,
                stem: str, verify: Verify, outputs: Any, meta: dict[str, Any], noise: Noise) -> tuple[OnnxResult, Any]:
    from ..compare import metrics

    if result.external_data:
        result.notes.append("onnxsim skipped: the model is over 2 GB (external data)")
        return result, outputs
    simp, why = simplify(model, noise)
    if simp is None:
        result.notes.append(f"kept the unsimplified model: {why}")
        return result, outputs
    name_dims(simp, spec, output_dims)
    set_metadata(simp, meta)
    path = workdir / f"{stem}.simplified.onnx"
    save(simp, path, f"{stem}.onnx.data")
    problem, simp_outputs = verify(path)
    if problem is None:
        for case, runs in outputs.items():
            for before, after in zip(runs, simp_outputs[case]):
                for a, b in zip(before, after):
                    m = metrics(a, b)
                    if m["rel_l2"] > SIMPLIFY_TOLERANCE["rel_l2"] or m["max_rel"] > SIMPLIFY_TOLERANCE["max_rel"]:
                        problem = f"onnxsim changed numerics (rel_l2 {m['rel_l2']:.1e} at case {case})"
                        break
    if problem:
        result.notes.append(f"kept the unsimplified model: {problem}")
        return result, outputs
    result.path, result.nodes_after, result.simplified = path, node_count(simp), True
    return result, simp_outputs

