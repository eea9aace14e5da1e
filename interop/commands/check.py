"""`interop check MODEL`: what would fail, where and why — before any conversion."""

from __future__ import annotations

import time
from typing import Any

from interop import sources
from interop.errors import first_line
from interop.settings import BuildConfig, resolve


def check_model(config: BuildConfig) -> dict[str, Any]:
    """Load, resolve the spec, run the model once per case, trace once; list the ops each target
    lacks (with module paths and whether interop patches them) and the trace hazards."""
    from interop.stages.front import front_end
    from interop.stages.preflight import op_report
    from interop import targets

    started = time.perf_counter()
    config = resolve(config)  # the same settings, resolved the same way, as `interop build`
    chosen = targets.selected(config.targets)
    config.allow_trace_warnings = True  # report hazards instead of stopping at them
    front = front_end(config, sources.for_model(config.model), single_shot=True)
    source, spec, prep = front.source, front.spec, front.prep
    result: dict[str, Any] = {"model": source.path, "format": source.format, "inputs": [t.to_json() for t in spec.inputs],
                              "outputs": prep.names, "ops": [], "targets": [t.name for t in chosen], "hazards": [h.line() for h in prep.hazards if h.blocking],
                              "trace_warnings": [h.line() for h in prep.hazards if not h.blocking]}
    result["cases"] = [{"name": c.name, "sizes": dict(c.sizes)} for c in prep.cases]  # --samples keys <input>@<case>
    if getattr(source, "model_proto", None) is not None:  # an ONNX source (a converted graph)
        chosen = _onnx_source_check(source, prep, chosen, result)
    result["no_torchscript"] = bool(getattr(config, "no_torchscript", False))
    if result["no_torchscript"]:
        _export_check(prep, result, chosen)
    elif prep.trace is None:
        pass
    elif prep.trace.error is not None:
        result["trace_error"] = first_line(prep.trace.error)
    else:
        from interop.support.quiet import captured

        with captured(prep.noise):
            ops = op_report(prep.trace.traced.inlined_graph, config.opset, chosen)
        result["ops"] = [u.to_json() for u in ops]
        result["blocked_targets"] = sorted({t for u in ops for t in u.blocking()})
    _target_checks(result, prep, spec, config, chosen)
    blocking = result.get("blocked_targets")
    if result.get("converter_blocked"):
        blocking = sorted(set(blocking or []) | set(result["converter_blocked"]))
        result["blocked_targets"] = blocking
    result["would_fail"] = bool(blocking or result["hazards"])
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _export_check(prep: Any, result: dict[str, Any], chosen: list[Any]) -> None:
    """--no-torchscript: no trace to read ops from; whether the one torch.export capture both
    targets share is made (its failure blocks every target built from the module)."""
    from interop.errors import ExportError

    capture = getattr(prep, "capture", None)
    if capture is None:
        return
    try:
        capture.program()
        result["captured_from"] = capture.source
    except ExportError as exc:
        result["export_error"] = first_line(exc)
        result["blocked_targets"] = sorted({t.name for t in chosen} | set(result.get("blocked_targets", [])))


def _onnx_source_check(source: Any, prep: Any, chosen: list[Any], result: dict[str, Any]) -> list[Any]:
    """An ONNX source: the ONNX op types the converter cannot handle (node names, counts), and the
    conversion's agreement with ONNX Runtime; the ONNX target ships the file itself, so only the
    targets built from the converted module are checked op by op."""
    from interop.sources import onnx_convert

    result["onnx_ops"] = onnx_convert.unsupported_ops(source.model_proto)
    result["conversion"] = prep.conversion
    module_targets = [t for t in chosen if not t.reads_source(source, prep)]
    if prep.conversion_problem:
        result["converter_blocked"] = [t.name for t in module_targets]
    return module_targets


def _target_checks(result: dict[str, Any], prep: Any, spec: Any, config: BuildConfig, chosen: list[Any]) -> None:
    """Each chosen target's own checks (``Target.check_model``): its op rows say ``ok`` for the
    other targets, and a target with a row naming a problem is blocked."""
    names = [t.name for t in chosen]
    for target in chosen:
        found = dict(target.check_model(prep, spec, config) or {})
        rows = found.pop("ops", [])
        hints = found.pop("hints", [])
        if hints:
            result.setdefault("hints", []).extend(hints)
        result.update(found)
        for row in rows:
            result["ops"].append({**{n: "ok" for n in names}, **row})
        if rows:
            result["blocked_targets"] = sorted(set(result.get("blocked_targets", [])) | {target.name})
