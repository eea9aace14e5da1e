"""The ONNX target's ``interop bench``: ONNX Runtime (CPU) latency of the built model next to the
unsimplified export, re-made from the report's source (see interop/commands/bench.py's doc)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from interop.errors import LoadError, first_line
from interop.support.timing import measure


def onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise LoadError(f"{path} is not a readable ONNX model ({type(exc).__name__})", hint="rebuild it") from exc
    return {p.key: p.value for p in model.metadata_props}


def bench_onnx(path: Path, sample: dict[str, Any], warmup: int, runs: int, threads: int | None) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    started = time.perf_counter()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - started) * 1000
    feeds = {i.name: sample[i.name] for i in sess.get_inputs()}
    latency = measure(lambda: sess.run(None, feeds), warmup, runs)
    nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
    return {"path": str(path), "nodes": nodes, "session_ms": round(load_ms, 2), **latency.to_json()}


def unsimplified(subject: Any, workdir: Path) -> tuple[Path | None, str, Any]:
    """(path of the unsimplified export or None, a note, the prepared build state or None)."""
    entry = (subject.report or {}).get("targets", {}).get("onnx") or {}
    if subject.report is None:
        return None, "not available: no report beside the artifact (the source model is unknown)", None
    if entry.get("status") != "ok":
        return None, "not available: the build has no ONNX model", None
    if not entry.get("simplified", True):
        return subject.artifacts.get("onnx"), "the build kept the unsimplified export (see the report's notes): same model", None
    from interop.settings import from_report

    from_report(subject.report, subject.trust, "bench")  # exit 2 when the source runs code and --trust is missing
    try:
        path, prep = _reexport(subject.report, entry, workdir, subject.trust)
    except Exception as exc:  # best effort: reported, never a crash of the benchmark
        return None, f"not available: re-exporting the source failed ({first_line(exc)})", None
    import onnx

    nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
    want = entry.get("nodes_before")
    note = f"re-exported from {subject.report['model']['source']} with {entry['exporter']}, opset {entry['opset']}"
    if want is not None and nodes != want:
        note += f"; WARNING: {nodes} nodes, the build's export had {want}"
    return path, note, prep


def _reexport(report: dict[str, Any], entry: dict[str, Any], workdir: Path, trust: bool = False) -> tuple[Path, Any]:
    from interop.stages.front import reload
    from interop.settings import from_report
    from interop.stages.prepare import output_dims
    from interop.support.quiet import Noise, captured
    from interop.targets.onnx.target import export_once, name_dims, save

    config = from_report(report, trust, "bench")
    config.num_samples = 1  # only the example sample is timed
    noise = Noise()
    with captured(noise):
        source, spec, prep = reload(report, config)
    raw = workdir / "unsimplified.raw.onnx"
    export_once(entry["exporter"], prep.module, prep.export_args, spec, prep.names, raw, entry["opset"], noise,
                prep.trace)
    import onnx

    model = onnx.load(str(raw))
    name_dims(model, spec, output_dims(spec, prep.ref, prep.cases))
    path = workdir / "unsimplified.onnx"
    save(model, path, "unsimplified.onnx.data")
    return path, prep


def bench_onnx_target(path: Path, spec: Any, sample: dict[str, Any], warmup: int, runs: int, threads: int | None,
                      subject: Any, compare_unsimplified: bool) -> dict[str, Any]:
    """The built ONNX model next to the unsimplified export (see the module doc)."""
    onnx_out: dict[str, Any] = {"built": bench_onnx(path, sample, warmup, runs, threads)}
    with tempfile.TemporaryDirectory(prefix="interop-bench-") as tmp:
        unsimp, note, prep = unsimplified(subject, Path(tmp)) if compare_unsimplified else (None, "not requested", None)
        onnx_out["unsimplified"] = {"note": note}
        if unsimp == path:  # the build kept the unsimplified export: nothing else to time
            onnx_out["unsimplified"].update({k: v for k, v in onnx_out["built"].items() if k != "path"})
        elif unsimp is not None:
            onnx_out["unsimplified"].update(bench_onnx(unsimp, sample, warmup, runs, threads), path=None)
        if unsimp is not None:
            onnx_out["speedup_p50"] = round(onnx_out["unsimplified"]["p50_ms"] / onnx_out["built"]["p50_ms"], 3)
    if prep is not None:
        onnx_out["_prep"] = prep
    return onnx_out
