"""The build, as one flat sequence: load -> spec -> reference -> ONNX -> Core ML -> agreement
-> report, assembled in a temporary folder inside ``--out`` and moved into place at the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .compare import OutputDiff, compare_output, parse_tolerance, tolerance_for
from .config import BuildConfig, read_config_file
from .errors import ExportError, InteropError, SpecError, first_line
from .loading import Source, load_source
from .localise import first_coreml_departure, first_onnx_departure
from .memory import release
from .onnx_input import build_from_onnx, is_onnx
from .outdir import OutputFolder
from .prepare import Prepared, Reference, Trace, output_dims, prepare, single_image_cases
from .preprocess import probs_from_dict
from .progress import stage
from .quiet import Noise
from .report import Report
from .resolve import resolve_spec
from .spec import Case, InputSpec
from .targets import TARGETS


def build(config: BuildConfig) -> Report:
    """Run the whole job; returns the report (``report.passed`` decides the exit code)."""
    settings = read_config_file(None, Path(config.model).parent if Path(config.model).exists() else None)
    config = _with_file_defaults(config, settings)
    _check_choices(config)
    if is_onnx(config.model):
        return build_from_onnx(config)
    folder = OutputFolder.for_model(config.model, config.out)
    stage("loading the model")
    source = load_source(config.model, factory=config.factory, trust=config.trust)
    spec = resolve_spec(config, source)
    stage("running PyTorch on the sample inputs and tracing")
    prep = prepare(config, source, spec)
    with folder.session() as work:
        return _build_in(config, source, spec, folder, work, prep)


def _with_file_defaults(config: BuildConfig, settings: dict[str, Any]) -> BuildConfig:
    """Settings from an interop.toml beside the model fill what the caller left at its default."""
    defaults = BuildConfig()
    for key, value in settings.items():
        if getattr(config, key) == getattr(defaults, key):
            setattr(config, key, value)
    return config


def _check_choices(config: BuildConfig) -> None:
    unknown = [t for t in config.targets if t not in TARGETS]
    if unknown or not config.targets:
        raise SpecError(f"unknown target(s) {', '.join(unknown) or '(none)'}", hint="use --targets onnx,coreml")
    if config.precision not in ("fp16", "fp32"):
        raise SpecError(f"unknown precision {config.precision!r}", hint="use --precision fp16 or fp32")
    choices = (("exporter", config.exporter, ("auto", "torchscript", "dynamo")),
               ("coreml-shapes", config.coreml_shapes, ("range", "enumerated")),
               ("coreml-capture", config.coreml_capture, ("auto", "trace", "export")))
    for flag, value, allowed in choices:
        if value not in allowed:
            raise SpecError(f"unknown --{flag} {value!r}", hint=f"use one of {', '.join(allowed)}")
    if config.opset is not None and not 7 <= config.opset <= 23:
        raise SpecError(f"--opset {config.opset} is outside what the exporters support", hint="use 7..23 (default 20)")
    if config.num_samples < 1:
        raise SpecError("--num-samples must be at least 1", hint="e.g. --num-samples 2")
    for text in config.tolerance:
        parse_tolerance(text)


def _build_in(config: BuildConfig, source: Source, spec: InputSpec, folder: "OutputFolder", work: Path,
              prep: Prepared) -> Report:
    noise = prep.noise
    flat, all_cases, ref, names = prep.module, prep.cases, prep.ref, prep.names
    report = Report.start(config, source, spec, names, ref, all_cases)
    meta = metadata(config, source, spec, prep)
    export_args, traced = prep.export_args, prep.trace
    for hazard in prep.hazards:  # blocking ones only get here with --allow-trace-warnings
        kind = "trace hazard (allowed)" if hazard.blocking else "trace warning in library code (the trace agreed " \
                                                                "with the model on every case)"
        report.data["warnings"].append(f"{kind}: {hazard.line()}")
    stem = folder.stem
    if "onnx" in config.targets:
        stage("exporting and verifying ONNX")
        _run_onnx(report, flat, export_args, spec, names, ref, all_cases, work, stem, config, meta, noise, traced)
        release()
    if "coreml" in config.targets:
        stage("converting to Core ML")
        _run_coreml(report, prep, export_args, spec, work, stem, config, meta, noise, traced)
    report.add_noise(noise)
    report.finish()
    folder.commit(work, report, keep_failed=config.keep_failed)
    return report


def metadata(config: BuildConfig, source: Source, spec: InputSpec, prep: Prepared) -> dict[str, Any]:
    return {"author": config.author, "license": config.license, "description": config.description,
            "version": config.version, "interop.version": __version__, "interop.source_sha256": source.sha256,
            "interop.source": Path(source.path).name, "interop.spec": spec.to_json(), "interop.labels": prep.labels,
            "interop.image": prep.image.to_json() if prep.image else None}


def _diffs(target: str, runtime: str, ref: Reference, got: dict[str, list[list[np.ndarray]]], names: list[str],
           precision: str, config: BuildConfig) -> list[OutputDiff]:
    overrides = dict(parse_tolerance(t) for t in config.tolerance)
    out = []
    for case, runs in got.items():
        for i, outputs in enumerate(runs):
            for name, r, g in zip(names, ref.outputs[case][i], outputs):
                tol = tolerance_for(precision, name, overrides)
                out.append(compare_output(r, g, tol, target=target, runtime=runtime, case=case, output=name, sample=i))
    return out


def _run_onnx(report: Report, flat: Any, args: tuple, spec: InputSpec, names: list[str], ref: Reference,
              all_cases: list[Case], work: Path, stem: str, config: BuildConfig, meta: dict[str, Any],
              noise: Noise, traced: Trace) -> None:
    from .runtimes.onnxruntime import run_onnx, session
    from .targets.onnx import DEFAULT_OPSET, build_onnx, check_declared_shapes, full_check

    started = time.perf_counter()
    dims = output_dims(spec, ref, all_cases)

    def verify(path: Path, model: Any):
        """Run the file at ``path`` in ONNX Runtime on every case; ``model`` is its weightless
        ModelProto, for the declared shapes (the file is never parsed here)."""
        try:
            got = _run_file(path)
            for c in got:
                check_declared_shapes(model, [o.shape for o in got[c][0]])
        except Exception as exc:
            return f"ONNX Runtime failed: {first_line(exc)}", None
        bad = [d for d in _diffs("onnx", "onnxruntime", ref, got, names, "fp32", config) if not d.passed]
        if bad:
            where = _localise(lambda: first_onnx_departure(path, flat, ref.samples[bad[0].case][bad[0].sample],
                                                           spec.names()))
            return f"disagrees with PyTorch at case {bad[0].case}, output {bad[0].output}: {bad[0].note}{where}", None
        return None, got

    def _run_file(path: Path) -> dict[str, list[list[np.ndarray]]]:
        sess = session(str(path))  # holds its own copy of the weights: released before returning
        got = {c: [run_onnx(sess, s) for s in ref.samples[c]] for c in ref.samples}
        del sess
        release()
        return got

    try:
        result, got = build_onnx(flat, args, spec, names, dims, work, stem, config.opset or DEFAULT_OPSET,
                                 config.exporter, verify, meta, noise, traced)
        full_check(result.model, work / f"{stem}.checked.onnx")
    except ExportError as exc:
        report.target_failed("onnx", str(exc), time.perf_counter() - started)
        return
    report.onnx_ok(result, time.perf_counter() - started, work)
    report.add_agreement(_diffs("onnx", "onnxruntime", ref, got, names, "fp32", config))


COLLECT_BYTES = 32 * 1024**2


def _run_coreml(report: Report, prep: Prepared, args: tuple, spec: InputSpec, work: Path, stem: str,
                config: BuildConfig, meta: dict[str, Any], noise: Noise, traced: Trace) -> None:
    from .targets.coreml import CoremlOptions, build_coreml

    started = time.perf_counter()
    opts = CoremlOptions(config.precision, config.deployment_target, config.coreml_shapes, config.coreml_capture,
                         prep.image, prep.labels)
    try:
        result = build_coreml(prep.module, args, spec, prep.cases, prep.names, work, stem, opts, meta, noise, traced)
    except ExportError as exc:
        report.target_failed("coreml", str(exc), time.perf_counter() - started)
        return
    report.coreml_ok(result, time.perf_counter() - started, work)
    # coremltools' MIL program (reference cycles: only the cycle collector frees it) holds its fp16
    # copy of the weights; collecting costs ~0.2 s, worth it only where that copy is large
    release(collect=(report.data["model"].get("parameters") or 0) * 2 > COLLECT_BYTES)
    ref = single_image_cases(prep, spec) if prep.image is not None else prep.ref
    stage("executing the Core ML package")
    for runtime, got, problem in coreml_runs(result.path, spec, ref, prep.names, prep.labels):
        if problem:
            report.not_executed("coreml", runtime, problem)
            continue
        diffs = _diffs("coreml", runtime, ref, got, prep.names, config.precision, config)
        bad = next((d for d in diffs if not d.passed), None)
        if bad is not None and runtime == "interop-mil":
            from .targets.coreml import coreml_feed

            sample = ref.samples[bad.case][bad.sample]
            where = _localise(lambda: first_coreml_departure(result.path, coreml_feed(spec, sample), prep.module,
                                                             sample, spec.names()))
            if where:
                report.data["targets"]["coreml"]["departure"] = where.removeprefix("; ")
                bad.note = f"{bad.note}{where}"
        report.add_agreement(diffs)


def _localise(find: Any) -> str:
    """``; <where it departs>`` or "" — localisation is best effort and never fails a build."""
    try:
        where = find()
    except Exception:
        return ""
    return f"; {where}" if where else ""


def coreml_runs(path: Path, spec: InputSpec, ref: Reference, names: list[str], labels: list[str] | None = None):
    """(runtime, outputs per case, problem) for the reference runtime and, on macOS, Core ML."""
    from .runtimes.coreml import native_available, run_native
    from .targets.coreml import coreml_feed

    def value(out: dict[str, Any], name: str) -> np.ndarray:
        v = out[name]
        return probs_from_dict(v, labels) if isinstance(v, dict) and labels else np.asarray(v)

    def collect(run):
        return {c: [[value(run(coreml_feed(spec, s)), n) for n in names] for s in ref.samples[c]]
                for c in ref.samples}

    try:
        from .runtimes import mil

        loaded = mil.load_model(path)
        yield "interop-mil", collect(lambda feed: loaded.predict(feed)), None
    except Exception as exc:  # a missing kernel or a damaged package: reported, never a pass
        yield "interop-mil", None, str(exc) if isinstance(exc, InteropError) else first_line(exc)
    if native_available():
        try:
            yield "coreml", collect(lambda feed: run_native(str(path), feed)), None
        except Exception as exc:
            yield "coreml", None, first_line(exc)
