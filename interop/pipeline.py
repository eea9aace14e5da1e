"""The build, as one flat sequence: load -> spec -> reference -> ONNX -> Core ML -> agreement
-> report, assembled in a temporary folder inside ``--out`` and moved into place at the end."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .compare import OutputDiff, compare_output, parse_tolerance, tolerance_for
from .config import BuildConfig, read_config_file
from .errors import ExportError, InteropError, SpecError, first_line
from .loading import Source, load_source
from .onnx_input import build_from_onnx, is_onnx
from .outdir import OutputFolder
from .localise import first_coreml_departure, first_onnx_departure
from .progress import stage
from .preflight import Hazard, fail_on_hazards, trace_consistency, trace_with_warnings
from .preprocess import PROBS, ImageInput, image_input, looks_like_probabilities, probs_from_dict, wrap
from .quiet import Noise, captured
from .report import Report
from .resolve import resolve_spec
from .runtimes.torch_ref import run_torch
from .spec import Case, InputSpec, case_shape, cases, make_sample, other_size
from .targets import TARGETS, output_keys


@dataclass
class Reference:
    """Seeded samples per case and the PyTorch outputs for each."""

    samples: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    outputs: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)


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


@dataclass
class Prepared:
    """The module as exported (preprocessing folded in, outputs flat), its cases and reference."""

    module: Any
    cases: list[Case]
    ref: "Reference"
    names: list[str]
    image: ImageInput | None
    labels: list[str] | None
    export_args: tuple = ()
    trace: Any = None
    noise: Noise = field(default_factory=Noise)
    hazards: list[Hazard] = field(default_factory=list)


def prepare(config: BuildConfig, source: Source, spec: InputSpec) -> Prepared:
    """Everything that runs the PyTorch model, before anything is written: a model that fails on
    the spec is a spec error."""
    image = image_input(config.image, config.mean, config.std, config.pixel_scale, spec, source.hints.get("image"))
    labels = read_labels(config.labels) if config.labels else source.hints.get("labels")
    all_cases = cases(spec)
    pixels = {image.input} if image else set()
    module = wrap(source.module, spec.names(), image, softmax=False)
    ref = reference(module, spec, all_cases, config, pixels)
    if labels:
        _check_labels(labels, ref)
        if not looks_like_probabilities(ref.outputs["example"][0][:1]):
            module = wrap(source.module, spec.names(), image, softmax=True)
            ref = reference(module, spec, all_cases, config, pixels)
    names = output_names(source.module, spec, ref, config)
    if labels:
        names[0] = PROBS
    prep = Prepared(module, all_cases, ref, names, image, labels, _export_args(spec, ref, all_cases))
    prep.trace = Trace(module, prep.export_args, prep.noise)
    if prep.trace.traced is not None and prep.trace.traced is not module:
        prep.hazards = prep.trace.hazards + trace_consistency(prep.trace.traced, ref, spec.names())
    if prep.hazards and not config.allow_trace_warnings:
        fail_on_hazards(prep.hazards)
    return prep


def _check_labels(labels: list[str], ref: "Reference") -> None:
    first = ref.outputs["example"][0][0]
    if first.ndim != 2 or first.shape[-1] != len(labels):
        raise SpecError(f"{len(labels)} labels but the model's first output has shape {first.shape}",
                        hint="a classifier's first output is (batch, classes) with one label per class")
    if len(set(labels)) != len(labels):
        raise SpecError("the labels file repeats a label", hint="labels must be unique")


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
    for hazard in prep.hazards:  # only here with --allow-trace-warnings
        report.data["warnings"].append(f"trace hazard (allowed): {hazard.line()}")
    stem = folder.stem
    if "onnx" in config.targets:
        stage("exporting and verifying ONNX")
        _run_onnx(report, flat, export_args, spec, names, ref, all_cases, work, stem, config, meta, noise, traced)
    if "coreml" in config.targets:
        stage("converting to Core ML")
        _run_coreml(report, prep, export_args, spec, work, stem, config, meta, noise, traced)
    report.add_noise(noise)
    report.finish()
    folder.commit(work, report, keep_failed=config.keep_failed)
    return report


class Trace:
    """The one ``torch.jit.trace`` of the model, shared by the TorchScript ONNX exporter and the
    Core ML trace path (TorchScript sources are used as they are). Made once, up front, keeping its
    TracerWarnings; a model that cannot be traced keeps the error for those two routes to report,
    while the dynamo / torch.export routes still run."""

    def __init__(self, module: Any, args: tuple, noise: Noise):
        import torch

        self.hazards: list[Hazard] = []
        self.error: Exception | None = None
        self.traced: Any = None
        if isinstance(module, torch.jit.ScriptModule):
            self.traced = module
            return
        try:
            with captured(noise):
                self.traced, self.hazards = trace_with_warnings(module, args)
        except Exception as exc:  # reported by the routes that need the trace
            self.error = exc

    def __call__(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.traced


def reference(module: Any, spec: InputSpec, all_cases: list[Case], config: BuildConfig,
              pixels: set[str] = frozenset()) -> Reference:
    """Seeded samples per case (image inputs as whole-number pixels) and PyTorch's outputs."""
    ref = Reference()
    user = load_user_samples(config.samples, spec) if config.samples else []
    names = spec.names()
    for case in all_cases:
        samples = [make_sample(spec, case, config.seed + 1000 * i + zlib.crc32(case.name.encode()) % 997)
                   for i in range(config.num_samples)]
        for sample in samples:
            for name in pixels:
                sample[name] = np.round(sample[name])
        if case.name == "example" and user:
            samples = user + samples[: max(0, config.num_samples - len(user))]
        ref.samples[case.name] = samples
        ref.outputs[case.name] = [run_torch(module, s, names) for s in samples]
    return ref


def load_user_samples(path: str, spec: InputSpec) -> list[dict[str, np.ndarray]]:
    """``--samples file.npz``: arrays named after the inputs, one sample (or a leading axis of
    samples when every array has the input's rank + 1)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError as exc:
        raise SpecError(f"samples file {path} does not exist", hint="check the --samples path") from exc
    except Exception as exc:
        raise SpecError(f"samples file {path} is not a readable .npz ({type(exc).__name__})",
                        hint="write it with numpy.savez(path, x=array, ...)") from exc
    missing = [n for n in spec.names() if n not in arrays]
    if missing:
        raise SpecError(f"samples file {path} has no array for input(s) {', '.join(missing)} "
                        f"(it has {', '.join(arrays) or 'none'})", hint="name the arrays after the inputs")
    stacked = all(arrays[t.name].ndim == len(t.shape) + 1 for t in spec.inputs)
    count = len(arrays[spec.inputs[0].name]) if stacked else 1
    out = []
    for i in range(count):
        sample = {}
        for t in spec.inputs:
            arr = arrays[t.name][i] if stacked else arrays[t.name]
            _check_sample_shape(t, arr, path)
            sample[t.name] = np.ascontiguousarray(arr.astype(t.dtype))
        out.append(sample)
    return out


def _check_sample_shape(t: Any, arr: np.ndarray, path: str) -> None:
    ok = arr.ndim == len(t.shape) and all(
        (a in t.dynamic and t.dynamic[a].min <= s <= t.dynamic[a].max) or s == t.shape[a]
        for a, s in enumerate(arr.shape))
    if not ok:
        raise SpecError(f"sample {t.name!r} in {path} has shape {arr.shape}, the spec says {t.shape}",
                        hint="match the input spec (dynamic axes may vary inside their range)")


def output_names(module: Any, spec: InputSpec, ref: Reference, config: BuildConfig) -> list[str]:
    count = len(ref.outputs["example"][0])
    names = list(spec.output_names)
    if not names:
        import torch

        from .runtimes.torch_ref import to_torch

        with torch.no_grad():
            raw = module(*to_torch(ref.samples["example"][0], spec.names()))
        names = output_keys(raw) or (["output"] if count == 1 else [f"output_{i}" for i in range(count)])
    if len(names) != count:
        raise SpecError(f"{len(names)} output name(s) given ({', '.join(names)}) but the model returns {count} tensors",
                        hint="give one --output-name per output tensor")
    clash = set(names) & set(spec.names())
    if clash or len(set(names)) != len(names):
        raise SpecError(f"output names {names} repeat or clash with input names", hint="give distinct names")
    return names


def output_dims(spec: InputSpec, ref: Reference, all_cases: list[Case]) -> list[dict[int, str]]:
    """For each output, the axes that follow a named dynamic dim across the cases."""
    example_shapes = [o.shape for o in ref.outputs["example"][0]]
    dims: list[dict[int, str]] = [{} for _ in example_shapes]
    example_sizes = {name: _example_size(spec, name) for name in spec.dims()}
    for case in all_cases[1:]:
        (dim, size), = case.sizes
        for i, out in enumerate(ref.outputs[case.name][0]):
            for axis, (before, after) in enumerate(zip(example_shapes[i], out.shape)):
                if before == example_sizes[dim] and after == size and before != after:
                    dims[i].setdefault(axis, dim)
    return dims


def _example_size(spec: InputSpec, dim: str) -> int:
    for t in spec.inputs:
        for axis, d in t.dynamic.items():
            if d.name == dim:
                return t.shape[axis]
    raise KeyError(dim)


def _export_args(spec: InputSpec, ref: Reference, all_cases: list[Case]) -> tuple:
    """Export/trace at sizes != 1 where a dynamic dim allows it: exporters specialise size-1 axes."""
    import torch

    sizes = {}
    for name, dim in spec.dims().items():
        example = _example_size(spec, name)
        sizes[name] = other_size(example, dim.min, dim.max) if example == 1 else example
    case = Case("export", tuple((k, v) for k, v in sizes.items() if v is not None))
    sample = make_sample(spec, case, seed=12345)
    return tuple(torch.from_numpy(sample[t.name]) for t in spec.inputs)


def metadata(config: BuildConfig, source: Source, spec: InputSpec, prep: Prepared) -> dict[str, Any]:
    return {"author": config.author, "license": config.license, "description": config.description,
            "version": config.version, "interop.version": __version__, "interop.source_sha256": source.sha256,
            "interop.source": Path(source.path).name, "interop.spec": spec.to_json(), "interop.labels": prep.labels,
            "interop.image": prep.image.to_json() if prep.image else None}


def read_labels(path: str) -> list[str]:
    try:
        labels = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read labels file {path}: {exc}", hint="one label per line, UTF-8") from exc
    if not labels:
        raise SpecError(f"labels file {path} is empty", hint="one label per line")
    return labels


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

    def verify(path: Path):
        try:
            import onnx

            sess = session(str(path))
            got = {c: [run_onnx(sess, s) for s in ref.samples[c]] for c in ref.samples}
            declared = onnx.load(str(path), load_external_data=False)
            for c in got:
                check_declared_shapes(declared, [o.shape for o in got[c][0]])
        except Exception as exc:
            return f"ONNX Runtime failed: {first_line(exc)}", None
        bad = [d for d in _diffs("onnx", "onnxruntime", ref, got, names, "fp32", config) if not d.passed]
        if bad:
            where = _localise(lambda: first_onnx_departure(path, flat, ref.samples[bad[0].case][bad[0].sample],
                                                           spec.names()))
            return f"disagrees with PyTorch at case {bad[0].case}, output {bad[0].output}: {bad[0].note}{where}", None
        return None, got

    try:
        result, got = build_onnx(flat, args, spec, names, dims, work, stem, config.opset or DEFAULT_OPSET,
                                 config.exporter, verify, meta, noise, traced)
        full_check(result.path)
    except ExportError as exc:
        report.target_failed("onnx", str(exc), time.perf_counter() - started)
        return
    report.onnx_ok(result, time.perf_counter() - started, work)
    report.add_agreement(_diffs("onnx", "onnxruntime", ref, got, names, "fp32", config))


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


def single_image_cases(prep: Prepared, spec: InputSpec) -> Reference:
    """A Core ML image input takes one picture: every case at batch 1 (inputs sharing the image's
    batch dim sliced to their first item), with PyTorch's outputs for exactly those inputs."""
    batch = spec.by_name(prep.image.input).dynamic.get(0)
    sharing = [t.name for t in spec.inputs if batch and t.dynamic.get(0) and t.dynamic[0].name == batch.name]
    sharing = sharing or [prep.image.input]
    out = Reference()
    for case, samples in prep.ref.samples.items():
        if samples[0][prep.image.input].shape[0] == 1:
            out.samples[case], out.outputs[case] = samples, prep.ref.outputs[case]
            continue
        name = f"{case}, one image"
        sliced = [{k: (v[:1] if k in sharing else v) for k, v in s.items()} for s in samples]
        out.samples[name] = sliced
        out.outputs[name] = [run_torch(prep.module, s, spec.names()) for s in sliced]
    return out


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

