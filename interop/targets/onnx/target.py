"""ONNX target: export (TorchScript or dynamo exporter), name dims as the user named them,
check, simplify only when numerics are unchanged, and write metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from interop.errors import ExportError, first_line
from interop.support.memory import release
from interop.support.quiet import Noise, captured
from interop.stages.spec import InputSpec
from interop.targets.onnx import weights as onnx_weights

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
    model: Any = None  # the artifact's weightless ModelProto (its tensors external, in the work folder)


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
                opset: int, noise: Noise, traced: Callable[[], Any], capture: Any = None) -> None:
    """Run one exporter; the file at ``path`` is the raw export, its tensors over 4 KB as external
    data in ``<path>.data`` beside it (``onnx.load(path)`` reads them back). The TorchScript
    exporter takes the pipeline's one trace (``traced()``), shared with the Core ML target, and
    never serializes the weights: they go from the exporter's parameters straight to the data file
    (onnx_weights.weights_apart). The dynamo exporter takes the pipeline's one torch.export
    (``capture.program()``, stages/export_capture.py), shared with the Core ML target; when that
    capture fails, torch.onnx's own capture strategies are tried (torch.export too, never a trace)."""
    import onnx
    import torch

    inputs = spec.names()
    with captured(noise), torch.no_grad():
        if name == "torchscript":
            module = traced()
            axes = {t.name: {a: d.name for a, d in t.dynamic.items()} for t in spec.inputs if t.dynamic}
            with onnx_weights.weights_apart() as held:
                torch.onnx.export(module, args, str(path), dynamo=False, input_names=inputs,
                                  output_names=output_names, dynamic_axes=axes or None, opset_version=opset,
                                  do_constant_folding=True)
            if held.params:
                model = onnx.load(str(path))  # the exporter's graph; held parameters are still inputs
                onnx_weights.attach(model, held, onnx_weights.DataFile(path.with_name(path.name + ".data")))
                onnx.save_model(model, str(path))
                del held, model
                release()  # the exporter's folded copies of the weights
        else:
            from interop.stages.spec import export_dim

            dims: dict[str, Any] = {}
            # one entry for the flattening wrapper's *args, holding one spec per input
            shapes = tuple({a: export_dim(d, dims) for a, d in t.dynamic.items()} or None for t in spec.inputs)
            exported = _shared_program(capture)
            program = torch.onnx.export(module if exported is None else exported, args, None, dynamo=True,
                                        input_names=inputs, output_names=output_names,
                                        dynamic_shapes=(shapes,) if any(shapes) and exported is None else None,
                                        opset_version=opset, verbose=False, report=False)
            program.save(str(path), external_data=True)
            del program
            release()


def _shared_program(capture: Any) -> Any:
    """The build's shared ExportedProgram, or None (no capture given, or it failed)."""
    if capture is None:
        return None
    try:
        return capture.program()
    except ExportError:
        return None


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
    exporter declared a symbol; {} when inference fails. Inference runs on the weightless view
    (onnx_weights.lifted: tensors over 4 KB as typed graph inputs, smaller ones kept for data
    propagation), never on a copy of the weights. A wrong constant would still be caught:
    verification checks declared shapes at every case."""
    import onnx

    try:
        view = onnx_weights.lifted(model)
        if view.ByteSize() > EXTERNAL_DATA_BYTES:
            return {}
        inferred = onnx.shape_inference.infer_shapes(view, data_prop=True)
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
    """onnxsim a model held in memory with its weights; (None, why) when it fails."""
    try:
        import onnxsim

        with captured(noise):
            simplified, ok = onnxsim.simplify(model)
    except Exception as exc:
        return None, _onnxsim_failed(exc)
    if not ok:
        return None, "onnxsim could not validate its own result"
    return simplified, ""


def _onnxsim_failed(exc: Exception) -> str:
    return f"onnxsim failed ({first_line(exc)})"


def simplify_stored(model: Any, workdir: Path, stem: str, noise: Noise) -> tuple[Any | None, str]:
    """onnxsim a weightless model (its tensors external data in ``workdir``); returns the result,
    weightless too (its tensors in ``<stem>.simplified.weights``), or (None, why). onnxsim reads
    the model from a file and loads the tensors itself, except the passive ones
    (onnx_weights.passive: embedding tables indexed by input values, which it can only pass
    through), which it is shown as typed graph inputs and which are given back afterwards: the
    same result for a smaller peak."""
    import onnx

    passive = onnx_weights.passive(model, workdir)
    source, result = workdir / f"{stem}.onnxsim-in.onnx", workdir / f"{stem}.onnxsim-out.onnx"
    onnx.save_model(onnx_weights.shown_as_inputs(model, passive), str(source))
    try:
        import onnxsim

        with captured(noise):
            simplified, ok = onnxsim.simplify(str(source), output_path=str(result))
        if not ok:
            return None, "onnxsim could not validate its own result"
        light = onnx_weights.store_weights(simplified, onnx_weights.DataFile(workdir / f"{stem}.simplified.weights"))
        del simplified
        release()
    except Exception as exc:
        return None, _onnxsim_failed(exc)
    finally:
        for leftover in (source, result, result.with_name(result.name + ".data")):
            leftover.unlink(missing_ok=True)
    onnx_weights.restore(light, model, passive)
    return light, ""


def full_check(model: Any, scratch: Path) -> None:
    """onnx.checker's full check of the artifact's structure: the weightless model is written to
    ``scratch`` (beside its data files) and checked from there, external tensors and all; a model
    held with its weights is checked in memory."""
    import onnx

    try:
        if onnx_weights.externals(model):
            onnx.save_model(model, str(scratch))
            onnx.checker.check_model(str(scratch), full_check=True)
        else:
            onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the model: {first_line(exc, typed=False)}",
                          hint="try the other --exporter") from exc


def set_metadata(model: Any, meta: dict[str, str]) -> None:
    from interop._version import __version__

    model.producer_name = "interop"
    model.producer_version = __version__
    del model.metadata_props[:]
    for key, value in meta.items():
        if value is None:
            continue
        prop = model.metadata_props.add()
        prop.key = key
        prop.value = value if isinstance(value, str) else json.dumps(value)


def save(model: Any, path: Path, data_name: str, base: Path | None = None) -> bool:
    """Save, with external data beside the file when the model exceeds protobuf's 2 GB. The data
    file is named for the artifact's *final* name (``<stem>.onnx.data``): the .onnx refers to it
    by that name, and the output folder moves it there with the .onnx. A weightless model (its
    tensors external data under ``base``, default: beside ``path``) is written by streaming the
    tensors' bytes (onnx_weights.write); returns whether external data was used."""
    import onnx

    if onnx_weights.externals(model):
        return onnx_weights.write(model, path, base or path.parent, data_name, EXTERNAL_DATA_BYTES)
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


# verify(path, model) -> (problem or None, outputs per case); supplied by the pipeline. ``model`` is
# the weightless ModelProto written to ``path`` (for its declared shapes, without reading the file).
Verify = Callable[[Path, Any], tuple[str | None, Any]]
SIMPLIFY_TOLERANCE = {"rel_l2": 1e-6, "max_rel": 1e-5}


def build_onnx(module: Any, args: tuple, spec: InputSpec, output_names: list[str], output_dims: list[dict[int, str]],
               workdir: Path, stem: str, opset: int, exporter: str, verify: Verify, meta: dict[str, Any],
               noise: Noise, traced: Callable[[], Any], capture: Any = None) -> tuple[OnnxResult, Any]:
    """Export with each exporter in turn until one verifies; simplify if numerics hold. Every model
    is held weightless (onnx_weights): the weights are in data files in ``workdir``."""
    rejected: list[dict[str, str]] = []
    for name in exporter_order(exporter, opset):
        raw = workdir / f"{stem}.{name}.raw.onnx"
        try:
            export_once(name, module, args, spec, output_names, raw, opset, noise, traced, capture)
            model = onnx_weights.load(raw)
        except Exception as exc:
            rejected.append({"exporter": name, "reason": f"export failed: {first_line(exc)}"})
            continue
        notes = name_dims(model, spec, output_dims)
        set_metadata(model, meta)
        candidate = workdir / f"{stem}.{name}.onnx"
        external = save(model, candidate, f"{stem}.onnx.data", workdir)
        problem, outputs = verify(candidate, model)
        if problem:
            rejected.append({"exporter": name, "reason": problem})
            continue
        result = OnnxResult(candidate, name, opset, node_count(model), node_count(model), False, rejected, notes,
                            external, model)
        return _simplified(result, model, spec, output_dims, workdir, stem, verify, outputs, meta, noise)
    reasons = "; ".join(f"{r['exporter']}: {r['reason']}" for r in rejected)
    raise ExportError(f"no exporter produced a verified ONNX model ({reasons})",
                      hint="see the report; `interop check` lists unsupported ops")


def _simplified(result: OnnxResult, model: Any, spec: InputSpec, output_dims: list[dict[int, str]], workdir: Path,
                stem: str, verify: Verify, outputs: Any, meta: dict[str, Any], noise: Noise) -> tuple[OnnxResult, Any]:
    from interop.compare import metrics

    if result.external_data:
        result.notes.append("onnxsim skipped: the model is over 2 GB (external data)")
        return result, outputs
    simp, why = simplify_stored(model, workdir, stem, noise)
    if simp is None:
        result.notes.append(f"kept the unsimplified model: {why}")
        return result, outputs
    name_dims(simp, spec, output_dims)
    set_metadata(simp, meta)
    path = workdir / f"{stem}.simplified.onnx"
    save(simp, path, f"{stem}.onnx.data", workdir)
    problem, simp_outputs = verify(path, simp)
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
    result.path, result.nodes_after, result.simplified, result.model = path, node_count(simp), True, simp
    return result, simp_outputs
