"""`interop check MODEL`: what would fail, where and why — before any conversion."""

from __future__ import annotations

import time
from typing import Any

from interop.settings import BuildConfig
from interop.sources.torch_files import load_source
from interop.stages.resolve import resolve_spec


def check_model(config: BuildConfig) -> dict[str, Any]:
    """Load, resolve the spec, run the model once per case, trace once; list the ops each target
    lacks (with module paths and whether interop patches them) and the trace hazards."""
    from interop.stages.prepare import prepare
    from interop.stages.preflight import op_report
    from interop import targets
    from interop.targets.onnx import DEFAULT_OPSET

    started = time.perf_counter()
    chosen = targets.selected(config.targets)
    config.allow_trace_warnings = True  # report hazards instead of stopping at them
    source = load_source(config.model, factory=config.factory, trust=config.trust)
    spec = resolve_spec(config, source)
    prep = prepare(config, source, spec)
    result: dict[str, Any] = {"model": source.path, "format": source.format, "inputs": [t.to_json() for t in spec.inputs],
                              "outputs": prep.names, "ops": [], "targets": [t.name for t in chosen], "hazards": [h.line() for h in prep.hazards if h.blocking],
                              "trace_warnings": [h.line() for h in prep.hazards if not h.blocking]}
    result["cases"] = [{"name": c.name, "sizes": dict(c.sizes)} for c in prep.cases]  # --samples keys <input>@<case>
    if prep.trace.error is not None:
        result["trace_error"] = f"{type(prep.trace.error).__name__}: {str(prep.trace.error).splitlines()[0][:300]}"
    else:
        from interop.support.quiet import captured

        with captured(prep.noise):
            ops = op_report(prep.trace.traced.inlined_graph, config.opset or DEFAULT_OPSET, chosen)
        result["ops"] = [u.to_json() for u in ops]
        result["blocked_targets"] = sorted({t for u in ops for t in u.blocking()})
    blocking = result.get("blocked_targets")
    result["would_fail"] = bool(blocking or result["hazards"])
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result
