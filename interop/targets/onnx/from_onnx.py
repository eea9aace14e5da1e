"""The ONNX target for an ONNX source (``interop build model.onnx``): the checked source graph,
simplified only when numerics hold, rather than an export of the converted module."""

from __future__ import annotations

import shutil
from typing import Any


def build_onnx_file(ctx: Any) -> Any:
    """The ONNX target for an ONNX source: the checked source graph, simplified when numerics hold,
    run in ONNX Runtime at every case against the reference (ONNX Runtime on the source file)."""
    import onnx

    from interop.compare import diffs
    from interop.errors import ExportError
    from interop.runtimes.onnxruntime import run_onnx, session
    from interop.stages.agreement import run_cases
    from interop.targets.base import TargetResult
    from interop.targets.onnx.target import node_count, simplify

    source, prep, config = ctx.source, ctx.prep, ctx.config
    model = source.model_proto
    simplified, why = simplify(model, ctx.noise)
    candidate = ctx.work / f"{ctx.stem}.onnx"
    kept, rows = "the input model", []
    if simplified is not None:
        onnx.save(simplified, str(candidate))
        sess = session(str(candidate))
        rows = diffs("onnx", "onnxruntime", prep.ref, run_cases(lambda s: run_onnx(sess, s), prep.ref), prep.names,
                     "fp32", config.tolerance)
        if all(d.passed for d in rows):
            kept = "simplified"
        else:
            why = "onnxsim changed numerics"
    if kept != "simplified":
        shutil.copy(source.path, candidate)
        sess = session(str(candidate))
        rows = diffs("onnx", "onnxruntime", prep.ref, run_cases(lambda s: run_onnx(sess, s), prep.ref), prep.names,
                     "fp32", config.tolerance)
    if not rows:
        raise ExportError("the ONNX model could not be checked", hint="see the report")
    entry = {"exporter": "none (ONNX input)",
             "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
             "nodes_before": node_count(model),
             "nodes_after": node_count(simplified) if kept == "simplified" else node_count(model),
             "simplified": kept == "simplified", "external_data": False,
             "notes": ["reference: the input ONNX model in ONNX Runtime"] + ([f"kept the input model: {why}"] if why else []),
             "verified_cases": [c.name for c in prep.cases]}
    return TargetResult(candidate, entry, rows)
