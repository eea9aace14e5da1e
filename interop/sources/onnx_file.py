"""An ``.onnx`` file as the source: the ONNX-only pipeline (full check, simplification kept only
when numerics hold, ONNX Runtime at every shape case). Core ML is skipped: coremltools removed
its ONNX converter (coremltools 6), so a Core ML package has to come from the PyTorch source."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from interop.settings import BuildConfig
from interop.errors import LoadError, SpecError
from interop.sources.torch_files import Source, file_sha256
from interop.stages.outdir import OutputFolder
from interop.support.quiet import Noise
from interop.report import Report
from interop.stages.spec import DEFAULT_MAX, DynamicAxis, InputSpec, TensorSpec, apply_dynamic, cases, make_sample, parse_dynamic, parse_input, validate

COREML_NOTE = ("Core ML skipped: coremltools no longer converts ONNX (its ONNX converter was removed in "
               "coremltools 6); build from the PyTorch model to get a Core ML package")
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
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise LoadError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {first})",
                        hint="re-export it, or build from the PyTorch model") from exc
    return model


def spec_from_graph(model: Any, config: BuildConfig) -> InputSpec:
    """Flags win; otherwise the graph's inputs, symbolic dims becoming dynamic axes (example 1)."""
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if config.inputs:
        spec = InputSpec([parse_input(t) for t in config.inputs])
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


def build_from_onnx(config: BuildConfig) -> Report:
    from interop.compare import diffs as _diffs
    from interop.stages.prepare import Reference
    from interop.stages.samples import draw
    from interop.runtimes.onnxruntime import run_onnx, session
    from interop.support.limits import check_request
    from interop.targets.onnx import node_count, simplify

    path = Path(config.model)
    model = load_onnx(path)
    spec = spec_from_graph(model, config)
    check_request(spec, config.num_samples)  # absurd sizes refused before any work
    source = Source(None, "onnx", str(path), file_sha256(path))
    all_cases = cases(spec)
    original = session(str(path))
    ref = Reference()
    for case in all_cases:
        ref.samples[case.name] = draw(spec, case, config.seed, config.num_samples)
        try:
            ref.outputs[case.name] = [run_onnx(original, s) for s in ref.samples[case.name]]
        except Exception as exc:
            raise SpecError(f"the ONNX model fails on case {case.name}: {type(exc).__name__}",
                            hint="fix --input / --dynamic to shapes the model accepts") from exc
    names = [o.name for o in original.get_outputs()]
    folder = OutputFolder(Path(config.out) if config.out else path.parent, path.stem + ".interop")
    with folder.session() as work:
        report = Report.start(config, source, spec, names, ref, all_cases)
        report.data["model"]["parameters"] = int(sum(np.prod(i.dims) for i in model.graph.initializer))
        noise = Noise()
        simplified, why = simplify(model, noise)
        candidate = work / f"{folder.stem}.onnx"
        kept = "the input model"
        if simplified is not None:
            import onnx

            onnx.save(simplified, str(candidate))
            sess = session(str(candidate))
            got = {c: [run_onnx(sess, s) for s in ref.samples[c]] for c in ref.samples}
            diffs = _diffs("onnx", "onnxruntime", ref, got, names, "fp32", config.tolerance)
            if all(d.passed for d in diffs):
                kept = "simplified"
            else:
                why = "onnxsim changed numerics"
        if kept != "simplified":
            shutil.copy(path, candidate)
            sess = session(str(candidate))
            got = {c: [run_onnx(sess, s) for s in ref.samples[c]] for c in ref.samples}
            diffs = _diffs("onnx", "onnxruntime", ref, got, names, "fp32", config.tolerance)
        report.artifacts["onnx"] = candidate
        report.data["targets"]["onnx"] = {
            "status": "ok", "path": None, "exporter": "none (ONNX input)",
            "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
            "nodes_before": node_count(model), "nodes_after": node_count(simplified) if kept == "simplified" else node_count(model),
            "simplified": kept == "simplified", "seconds": None, "error": None,
            "notes": ["reference: the input ONNX model in ONNX Runtime"] + ([f"kept the input model: {why}"] if why else []),
            "verified_cases": [c.name for c in all_cases]}
        report.data["targets"]["coreml"] = {"status": "skipped", "path": None, "error": None, "note": COREML_NOTE}
        report.data["warnings"].append(COREML_NOTE)
        report.add_agreement(diffs)
        report.add_noise(noise)
        report.finish()
        folder.commit(work, report, keep_failed=config.keep_failed)
    return report
