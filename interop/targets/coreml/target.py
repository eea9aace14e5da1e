"""Core ML target: re-trace the source model (jit.trace, or torch.export as the fallback), convert
with coremltools to an ML program with flexible shapes, name inputs/outputs as in the ONNX model,
write metadata, save as ``.mlpackage``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from interop import patches
from interop.errors import SpecError, first_line
from interop.support.quiet import Noise, captured
from interop.stages.spec import Case, InputSpec, case_shape
from interop.targets.coreml.hints import missing_ops

PATHS = ("auto", "trace", "export")
PRECISIONS = ("fp16", "fp32")
SHAPE_MODES = ("range", "enumerated")
DEFAULT_TARGET = "iOS16"


@dataclass
class CoremlOptions:
    precision: str = "fp16"
    deployment_target: str = DEFAULT_TARGET
    shapes: str = "range"
    capture: str = "auto"
    image: Any = None  # preprocess.ImageInput
    labels: list[str] | None = None
    fp32_ops: tuple[str, ...] = ()  # fp16 with these ops (fp16-pass names) kept in fp32 (coreml_precision.py)


@dataclass
class CoremlResult:
    path: Path
    capture: str
    precision: str
    deployment_target: str
    rejected: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shapes: dict[str, Any] = field(default_factory=dict)  # mode and the shape each input declares


def deployment_target(name: str) -> Any:
    import coremltools as ct

    target = getattr(ct.target, name, None)
    if target is None or not name.startswith(("iOS", "macOS")):
        known = [t for t in dir(ct.target) if t.startswith("iOS") and int(t[3:]) >= 15]
        raise SpecError(f"unknown deployment target {name!r}", hint=f"use one of {', '.join(known)} (ML programs need iOS15+)")
    return target


def _image_type(t: Any, fixed: bool = False) -> Any:
    """Core ML images are one picture: batch fixed at 1; dynamic H/W become ranges. Scale 1 and
    bias 0: the normalisation is folded into the model (see preprocess.py)."""
    import coremltools as ct

    dims = [1, t.shape[1]] + [ct.RangeDim(t.dynamic[a].min, t.dynamic[a].max, t.shape[a])
                              if a in t.dynamic and not fixed else t.shape[a] for a in (2, 3)]
    layout = ct.colorlayout.RGB if t.shape[1] == 3 else ct.colorlayout.GRAYSCALE
    return ct.ImageType(name=t.name, shape=ct.Shape(dims), scale=1.0, bias=[0.0] * t.shape[1], color_layout=layout)


def _input_types(spec: InputSpec, cases: list[Case], shapes_mode: str, image: Any = None) -> list[Any]:
    import coremltools as ct

    types = []
    # One RangeDim per dim name, shared by the inputs naming it, and no symbol: coremltools keeps
    # RangeDim symbols process-wide ("Symbol `batch` is used already" on a second input or build).
    ranges: dict[str, Any] = {}
    for t in spec.inputs:
        if image is not None and t.name == image.input:
            types.append(_image_type(t, fixed=shapes_mode == "fixed"))
            continue
        dtype = np.int32 if t.dtype.startswith(("int", "uint")) else (np.bool_ if t.dtype == "bool" else np.float32)
        if not t.dynamic or shapes_mode == "fixed":
            shape: Any = t.shape
        elif shapes_mode == "enumerated":
            shapes = sorted({case_shape(t, c) for c in cases})
            shape = ct.EnumeratedShapes(shapes=[list(s) for s in shapes], default=list(t.shape))
        else:
            shape = ct.Shape([ranges.setdefault(t.dynamic[a].name, ct.RangeDim(
                lower_bound=t.dynamic[a].min, upper_bound=t.dynamic[a].max, default=t.shape[a]))
                if a in t.dynamic else s for a, s in enumerate(t.shape)])
        types.append(ct.TensorType(name=t.name, shape=shape, dtype=dtype))
    return types


def _convert(capture: str, module: Any, args: tuple, spec: InputSpec, cases: list[Case], output_names: list[str],
             opts: CoremlOptions, target: Any, traced: Callable[[], Any], exported: Any = None) -> Any:
    import coremltools as ct

    from interop.targets.coreml.precision import coreml_compute_precision

    common: dict[str, Any] = dict(convert_to="mlprogram", minimum_deployment_target=target,
                                  compute_precision=coreml_compute_precision(opts.precision, opts.fp32_ops))
    if opts.labels:
        common["classifier_config"] = ct.ClassifierConfig(list(opts.labels))
    if capture == "trace":
        outputs = None if opts.labels else [ct.TensorType(name=n) for n in output_names]
        model = ct.convert(traced(), inputs=_input_types(spec, cases, opts.shapes, opts.image), outputs=outputs, **common)
        return _renamed(model, spec.names(), output_names, opts.labels)
    if exported is None:
        from interop.stages.export_capture import ExportCapture

        exported = ExportCapture(module, args, spec, Noise())
    program = exported.coreml_program(dynamic=opts.shapes != "fixed")  # the build's one torch.export, shared
    if opts.image is not None:
        common["inputs"] = _input_types(spec, cases, opts.shapes, opts.image)
    model = ct.convert(program, **common)
    return _renamed(model, spec.names(), output_names, opts.labels)


_FP16_MAX, _FINITE = 65504.0, 1e38
_CHUNK = 1 << 20  # elements per step of the fp16 range check


def _fp16_overflow(op: Any) -> bool:
    """coremltools' ``FP16ComputePrecision.fp16_overflow`` (the fp16 pass's test of every fp32
    constant), done a chunk at a time (installed by interop.patches for a conversion). Its own
    builds ``np.where(abs(value) < 1e38)`` over the whole constant: three int64 index arrays for a
    rank-2 constant, 560 MB for BERT-base's 30522x768 embedding table -- the peak of the whole
    build. The test is unchanged: is any input constant a finite-range (|x| < 1e38) value beyond
    fp16's 65504 (tests/test_coreml_target.py compares the two)."""
    for inputs in op.inputs.values():
        for var in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
            if (var.op is not None and var.op.op_type == "const" and var.is_tensor_or_scalar_of(dtype="fp32")
                    and beyond_fp16(var.op.val.val)):
                return True
    return False


def beyond_fp16(value: Any) -> bool:
    """Whether any |x| is in (65504, 1e38): too large for fp16 but not an infinity stand-in (NaN
    is neither)."""
    flat = np.asarray(value).reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        magnitude = np.abs(flat[start:start + _CHUNK])
        if np.any((magnitude > _FP16_MAX) & (magnitude < _FINITE)):
            return True
    return False


_FP16_OVERFLOW = staticmethod(_fp16_overflow)


def _renamed(model: Any, inputs: list[str], outputs: list[str], labels: list[str] | None) -> Any:
    """Give the package the ONNX model's feature names (a classifier: classLabel and
    classLabelProbs); returns a new MLModel built from the edited spec and the same weights."""
    import coremltools as ct

    from interop.stages.preprocess import LABEL, PROBS

    spec = model.get_spec()
    wanted_outputs = [LABEL, PROBS] if labels else outputs
    changed = False
    for features, names in ((spec.description.input, inputs), (spec.description.output, wanted_outputs)):
        for feature, name in zip(list(features), names):
            if feature.name != name:
                old = feature.name  # rename_feature renames the feature itself too
                ct.utils.rename_feature(spec, old, name)
                _rename_nested(spec, old, name)
                changed = True
    if labels:
        spec.description.predictedFeatureName = LABEL
        spec.description.predictedProbabilitiesName = PROBS
    if not changed:
        return model
    return ct.models.MLModel(spec, weights_dir=model.weights_dir, skip_model_load=True)


def _rename_nested(spec: Any, old: str, new: str) -> None:
    """Finish coremltools' ``rename_feature`` on an ML program: it renames the uses in each
    function's top-level block only, so an op nested in a ``while_loop`` / ``cond`` body (its GRU
    translation reads the input inside the loop when the input is time-major) keeps the old
    name and the saved program references a variable that no longer exists."""

    def walk(blocks: Any) -> None:
        for block in blocks:
            for i, name in enumerate(block.outputs):
                if name == old:
                    block.outputs[i] = new
            for op in block.operations:
                for argument in op.inputs.values():
                    for binding in argument.arguments:
                        if binding.HasField("name") and binding.name == old:
                            binding.name = new
                walk(op.blocks)

    if spec.HasField("mlProgram"):
        for function in spec.mlProgram.functions.values():
            for block in function.block_specializations.values():
                for op in block.operations:
                    walk(op.blocks)


def build_coreml(module: Any, args: tuple, spec: InputSpec, cases: list[Case], output_names: list[str],
                 workdir: Path, stem: str, opts: CoremlOptions, meta: dict[str, Any], noise: Noise,
                 traced: Callable[[], Any], capture: Any = None) -> CoremlResult:
    """Convert through jit.trace, falling back to torch.export (or the reverse); save the package."""
    precision, target_name, shapes_mode, capture_mode = opts.precision, opts.deployment_target, opts.shapes, opts.capture
    if precision not in PRECISIONS:
        raise SpecError(f"unknown precision {precision!r}", hint="use fp16 or fp32 (auto is resolved by the target)")
    if shapes_mode not in SHAPE_MODES:
        raise SpecError(f"unknown --coreml-shapes {shapes_mode!r}", hint="use range or enumerated")
    order = {"auto": ["trace", "export"], "trace": ["trace"], "export": ["export"]}.get(capture_mode)
    if order is None:
        raise SpecError(f"unknown Core ML capture path {capture_mode!r}", hint=f"use one of {', '.join(PATHS)}")
    with captured(noise):
        target = deployment_target(target_name)
    rejected: list[dict[str, str]] = []
    model = None
    for mode in _shape_modes(spec, shapes_mode):
        if mode != shapes_mode and missing_ops([r["reason"] for r in rejected]):
            break  # a missing op: other shapes cannot help
        mode_opts = replace(opts, shapes=mode)
        for path_name in order:
            try:
                with captured(noise), patches.applied(*patches.COREML_CONVERSION):
                    model = _convert(path_name, module, args, spec, cases, output_names, mode_opts, target, traced,
                                     capture)
                break
            except Exception as exc:
                label = _capture_label(path_name) + (f", {mode} shapes" if mode != shapes_mode else "")
                rejected.append({"path": label, "reason": first_line(exc)})
        if model is not None:
            break
    if model is not None:
        _set_metadata(model, meta)
        _describe(model, spec, opts)
        out = workdir / f"{stem}.mlpackage"
        with captured(noise):
            model.save(str(out))
        notes = [f"int64 input {t.name!r} is int32 in Core ML" for t in spec.inputs if t.dtype == "int64"]
        if opts.image is not None:
            notes.append(f"image input {opts.image.input!r}: one RGB picture (batch 1), raw pixels; "
                         f"mean {opts.image.mean} / std {opts.image.std} applied inside the model")
        if precision == "fp16":
            notes.append("fp16 compute precision (coremltools' ML-program default): checked against fp16 tolerances")
        shapes = declared_shapes(spec, cases, mode, opts.image)
        if mode != shapes_mode:
            notes.append(f"FALLBACK: coremltools could not express {shapes_mode} shapes "
                         f"({rejected[0]['reason']}); the package declares {mode} shapes {shapes['inputs']} "
                         f"(the ONNX model keeps its dynamic axes)")
        return CoremlResult(out, _capture_label(path_name), precision, target_name, rejected, notes, shapes)
    from interop.targets.coreml.hints import conversion_error

    raise conversion_error(rejected, traced, capture_mode, capture)


def _shape_modes(spec: InputSpec, asked: str) -> list[str]:
    """The asked shape mode, then the fallbacks: range -> enumerated -> fixed example shapes."""
    if not any(t.dynamic for t in spec.inputs):
        return [asked]
    return {"range": ["range", "enumerated", "fixed"], "enumerated": ["enumerated", "fixed"]}[asked]


def declared_shapes(spec: InputSpec, cases: list[Case], mode: str, image: Any = None) -> dict[str, Any]:
    """What the package declares per input: a range per axis ("1..64"), the enumerated shapes,
    or the fixed example shape."""
    inputs: dict[str, Any] = {}
    for t in spec.inputs:
        is_image = image is not None and t.name == image.input
        if not t.dynamic or mode == "fixed":
            inputs[t.name] = [1, *t.shape[1:]] if is_image else list(t.shape)
        elif mode == "enumerated" and not is_image:
            inputs[t.name] = [list(s) for s in sorted({case_shape(t, c) for c in cases})]
        else:
            inputs[t.name] = [f"{t.dynamic[a].min}..{t.dynamic[a].max}" if a in t.dynamic else s
                              for a, s in enumerate(t.shape)]
            if is_image:
                inputs[t.name][0] = 1
    return {"mode": mode, "inputs": inputs}


def _capture_label(name: str) -> str:
    return {"trace": "torch.jit.trace", "export": "torch.export"}[name]


def _set_metadata(model: Any, meta: dict[str, Any]) -> None:
    from interop._version import __version__

    for attr, key in (("author", "author"), ("license", "license"), ("short_description", "description"),
                      ("version", "version")):
        if meta.get(key):
            setattr(model, attr, str(meta[key]))
    user = model.user_defined_metadata
    user["interop.producer"] = f"interop {__version__}"
    for key, value in meta.items():
        if key.startswith("interop.") and value is not None:
            user[key] = value if isinstance(value, str) else json.dumps(value)


def _describe(model: Any, spec: InputSpec, opts: CoremlOptions) -> None:
    """Input/output descriptions Xcode shows."""
    for t in spec.inputs:
        if opts.image is not None and t.name == opts.image.input:
            text = (f"image, raw pixels 0..255; normalised inside the model (/{opts.image.pixel_scale:g}, "
                    f"mean {opts.image.mean}, std {opts.image.std})")
        else:
            dyn = ", ".join(f"axis {a} = {d.name} {d.min}..{d.max}" for a, d in sorted(t.dynamic.items()))
            text = f"{t.dtype} {list(t.shape)}" + (f"; {dyn}" if dyn else "")
        model.input_description[t.name] = text
    if opts.labels:
        from interop.stages.preprocess import LABEL, PROBS

        model.output_description[LABEL] = "most likely class label"
        model.output_description[PROBS] = "probability of each class label"


def _declared_cases(ref: Any, spec: InputSpec, shapes: dict[str, Any]) -> Any:
    """With fixed shapes declared (the fallback), only the cases at those shapes can run."""
    if shapes.get("mode") != "fixed":
        return ref
    from interop.stages.prepare import Reference

    out = Reference()
    for case, samples in ref.samples.items():
        if all(list(samples[0][t.name].shape) == shapes["inputs"][t.name] for t in spec.inputs):
            out.samples[case], out.outputs[case] = samples, ref.outputs[case]
    return out


def coreml_feed(spec: InputSpec, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What Core ML is fed for a sample: integer inputs as int32."""
    return {t.name: sample[t.name].astype(np.int32) if t.dtype.startswith(("int", "uint")) else sample[t.name]
            for t in spec.inputs}



# --- the plugin ------------------------------------------------------------------------------------

from interop.targets import register_target  # noqa: E402  (the registry imports this module lazily)
from interop.targets.base import Target, TargetContext, TargetResult  # noqa: E402

COLLECT_BYTES = 32 * 1024**2


@register_target
class CoremlTarget(Target):
    name = "coreml"
    suffix = ".mlpackage"
    default = True
    stage = "converting to Core ML"
    verify_stage = "executing the Core ML package"
    display_name = "Core ML"
    packages = ("coremltools",)
    variant_modules = ("interop.targets.coreml.variants",)
    not_applicable = {"fp16": "Core ML's default precision already is fp16 (the base package, --precision fp16): skipped"}
    RUNTIMES = ("coreml", "interop-mil")

    def precision(self, config: Any) -> str:
        from interop.targets.coreml.precision import compute_precision

        return compute_precision(config.precision)  # auto: fp16 (islands are held to fp16 tolerances)

    def build(self, ctx: TargetContext) -> TargetResult:
        from interop.support.memory import release
        from interop.targets.coreml.precision import compute_precision

        prep, spec, config = ctx.prep, ctx.spec, ctx.config
        capture = "export" if getattr(config, "no_torchscript", False) else config.coreml_capture
        opts = CoremlOptions(compute_precision(config.precision), config.deployment_target, config.coreml_shapes,
                             capture, prep.image, prep.labels)
        result = build_coreml(prep.module, prep.export_args, spec, prep.cases, prep.names, ctx.work, ctx.stem, opts,
                              ctx.meta, ctx.noise, prep.trace, getattr(prep, "capture", None))
        entry = {"precision": result.precision, "deployment_target": result.deployment_target,
                 "capture": result.capture, "rejected": result.rejected, "notes": result.notes,
                 "shapes": result.shapes, "precision_mode": config.precision}
        if result.capture == "torch.export" and getattr(prep, "capture", None) is not None:
            entry["captured_from"] = prep.capture.source  # torch.export, or TorchScript -> TS2EPConverter
        ctx.report.data["warnings"].extend(n for n in result.notes if n.startswith("FALLBACK"))
        # coremltools' MIL program (reference cycles: only the cycle collector frees it) holds its fp16
        # copy of the weights; collecting costs ~0.2 s, worth it only where that copy is large
        release(collect=(ctx.source.parameters or 0) * 2 > COLLECT_BYTES)
        out = self.verify_package(result, ctx, entry)
        if config.precision == "auto" and entry.get("cause") == "fp16-precision":
            from interop.targets.coreml.islands import repair

            out = repair(self, ctx, opts, result, entry, out, _declared_cases, build_coreml, coreml_feed)
        return out

    def verify_package(self, result: CoremlResult, ctx: TargetContext, entry: dict[str, Any],
                       diagnose: bool = True) -> TargetResult:
        """Execute the package in every runtime here and compare with PyTorch; on disagreement
        (``diagnose``) say why in ``entry`` and on the failed rows."""
        from interop.compare import diffs
        from interop.support.progress import stage
        from interop.targets.coreml.precision import compute_precision

        prep, spec, config = ctx.prep, ctx.spec, ctx.config
        ref = _declared_cases(self.reference_for(prep, spec), spec, result.shapes)
        stage(self.verify_stage)
        out = TargetResult(result.path, entry)
        for runtime, got, problem in self.execute(result.path, spec, ref, prep.names, prep.labels):
            if problem:
                out.not_executed.append((runtime, problem))
                continue
            rows = diffs("coreml", runtime, ref, got, prep.names, compute_precision(config.precision), config.tolerance)
            bad = next((d for d in rows if not d.passed), None)
            if bad is not None and diagnose:
                self._diagnose(bad, runtime, entry, result, ctx, ref)
            out.diffs.extend(rows)
        for row in out.diffs:
            if not row.passed and entry.get("cause"):
                row.cause = entry["cause"]
        return out

    def _diagnose(self, bad: Any, runtime: str, entry: dict[str, Any], result: CoremlResult, ctx: TargetContext,
                  ref: Any) -> None:
        """Say why Core ML disagrees: its cause (cause.py: the same program in fp32 agrees ->
        fp16-precision; else the capture differs from eager PyTorch -> capture; else conversion), the
        capture difference, or the first MIL op that departs (with the fp16 hint when a value overflows)."""
        from interop.targets.coreml.hints import capture_difference

        prep, spec = ctx.prep, ctx.spec
        capture = None
        if bad.case in prep.ref.samples:
            with captured(ctx.noise):
                capture = capture_difference(result.capture, prep, spec, bad.case, bad.sample)
        cause = self._cause(bad, entry, result, ctx, ref, capture is not None)
        if capture and (cause is None or cause.cause != "fp16-precision"):
            entry["capture_difference"] = capture
            bad.note = f"{bad.note}; {capture}"
            return
        if runtime != "interop-mil":
            return
        where = self._departure(result.path, spec, prep, ref.samples[bad.case][bad.sample])
        if where:
            entry["departure"] = where.removeprefix("; ")
            bad.note = f"{bad.note}{where}"
        if result.precision == "fp16" and ("beyond fp16" in where or "NaN/Inf" in bad.note):
            from interop.stages.preflight import overflow_hint

            op = (where.removeprefix("; ").split(":")[0].removeprefix("first departure at ")
                  if where else "an op beyond fp16's range (65504)")
            entry["hint"] = overflow_hint(op, "fp16")
            bad.note = f"{bad.note} — {entry['hint']}"
        elif cause is not None and cause.cause == "conversion" or (cause and cause.cause == "fp16-precision"
                                                                   and ctx.config.precision != "auto"):
            from interop.targets.coreml.cause import hint

            entry["hint"] = hint(cause)
            bad.note = f"{bad.note} — {entry['hint']}"

    def _cause(self, bad: Any, entry: dict[str, Any], result: CoremlResult, ctx: TargetContext, ref: Any,
               capture_differs: bool) -> Any:
        """The cause of the first disagreement (once per package; best effort, never fails a build)."""
        from interop.targets.coreml import cause as coreml_cause

        if "cause" in entry:
            return coreml_cause.Cause(entry["cause"], entry["fp32_rel_l2"], entry.get("cause_op"))
        prep, spec = ctx.prep, ctx.spec
        try:
            sample = ref.samples[bad.case][bad.sample]
            got = coreml_cause.fp32_outputs(result.path, coreml_feed(spec, sample), prep.names, prep.labels)
            ok, rel = coreml_cause.fp32_agrees(got, ref, bad.case, bad.sample, prep.names, result.precision,
                                               ctx.config.tolerance)
            cause = coreml_cause.classify(ok, rel, capture_differs)
            if cause.cause == "conversion":
                with captured(ctx.noise):
                    cause.op = coreml_cause.first_conversion_op(result.path, coreml_feed(spec, sample), prep.module,
                                                                sample, spec.names())
        except Exception:  # attribution is evidence, not a verdict
            return None
        entry["cause"], entry["fp32_rel_l2"] = cause.cause, round(cause.fp32_rel_l2, 6)
        if cause.op:
            entry["cause_op"] = cause.op
        bad.note = f"{bad.note}; {cause.note()}" if bad.note else cause.note()
        return cause

    @staticmethod
    def _departure(path: Path, spec: InputSpec, prep: Any, sample: dict[str, np.ndarray]) -> str:
        from interop.stages.localise import first_coreml_departure, localise

        return localise(lambda: first_coreml_departure(path, coreml_feed(spec, sample), prep.module, sample,
                                                       spec.names()))

    def reference_for(self, prep: Any, spec: InputSpec) -> Any:
        from interop.stages.prepare import single_image_cases

        return single_image_cases(prep, spec) if prep.image is not None or prep.labels else prep.ref

    def execute(self, path, spec, ref, names, labels=None, image=None):
        """The reference runtime everywhere and, on macOS, Core ML itself."""
        from interop.errors import InteropError
        from interop.runtimes.coreml import native_available, run_native
        from interop.stages.agreement import run_cases
        from interop.stages.preprocess import probs_from_dict

        def value(out: dict[str, Any], name: str) -> np.ndarray:
            v = out[name]
            return probs_from_dict(v, labels) if isinstance(v, dict) and labels else np.asarray(v)

        def collect(run):
            return run_cases(lambda s: [value(run(coreml_feed(spec, s)), n) for n in names], ref)

        try:
            from interop.runtimes import mil

            loaded = mil.load_model(path)
            yield "interop-mil", collect(lambda feed: loaded.predict(feed)), None
        except Exception as exc:  # a missing kernel or a damaged package: reported, never a pass
            yield "interop-mil", None, str(exc) if isinstance(exc, InteropError) else first_line(exc)
        if native_available():
            try:
                yield "coreml", collect(lambda feed: run_native(str(path), feed)), None
            except Exception as exc:
                yield "coreml", None, first_line(exc)

    def write_card(self, path: Path, card: dict[str, str]) -> None:
        import shutil

        import coremltools as ct

        from interop.support.quiet import captured

        fresh = path.with_name(path.name + ".meta")
        with captured():
            package = ct.models.MLModel(str(path), skip_model_load=True)
            if "license" in card:
                package.license = card["license"]
            if "description" in card:
                package.short_description = card["description"]
            package.save(str(fresh))  # not over the package its weights are read from
        del package
        shutil.rmtree(path)
        fresh.rename(path)

    def metadata(self, path: Path) -> dict[str, str]:
        from interop.targets.coreml.bench import coreml_metadata

        return coreml_metadata(path)

    def inspect(self, path: Path) -> dict[str, Any]:
        from interop.targets.coreml.inspect import inspect_mlpackage

        return inspect_mlpackage(path)

    def bench(self, path, spec, sample, warmup, runs, slow_runs, threads, report=None, compare_unsimplified=True):
        from interop.targets.coreml.bench import bench_coreml

        return bench_coreml(path, spec, sample, warmup, runs, slow_runs)

    def feed(self, spec: Any, sample: dict[str, Any]) -> dict[str, Any]:
        return coreml_feed(spec, sample)

    def check_model(self, prep: Any, spec: Any, config: Any) -> dict[str, Any]:
        from interop.targets.coreml.support import fp16_overflow_check

        return fp16_overflow_check(self.name, prep, spec, config)

    def doctor(self, versions: dict[str, str | None]) -> dict[str, bool]:
        import platform

        return {"coreml (native)": platform.system() == "Darwin" and bool(versions.get("coremltools")),
                "interop-mil (Core ML reference runtime)": bool(versions.get("coremltools"))}

    def bench_rows(self, timed: dict[str, Any], label: str) -> list[tuple[str, str, dict[str, Any], str]]:
        built = label == "built"
        rows = [("coreml", label, timed["coreml"], "")] if "coreml" in timed else []
        if "interop-mil" in timed:
            mil = timed["interop-mil"]
            note = "Core ML reference runtime: a checker, not a deployment speed" if built and "skipped" not in mil else ""
            rows.append(("interop-mil", "built, per sample" if built else label, mil, note))
        return rows

    def locate_departure(self, base: Path, variant: Path, feed: dict[str, Any], gate: Any) -> str | None:
        from interop.targets.coreml.measures import coreml_where

        return coreml_where(base, variant, feed, gate)

    def outputs_by_name(self, path: Path, feed: dict[str, Any]) -> dict[str, Any]:
        from interop.runtimes import mil

        return mil.load_model(path).predict(feed)

    def weights(self, path: Path) -> dict[str, tuple[str, int]]:
        import coremltools as ct

        from interop.targets.coreml.measures import coreml_weights

        with captured():
            return coreml_weights(ct.models.MLModel(str(path), skip_model_load=True))

    def coverage(self, base: Path, variant: Path) -> dict[str, Any] | None:
        from interop.targets.coreml.measures import coreml_coverage

        return coreml_coverage(base, variant)

    def op_support(self, kind: str, opset: int | None) -> str:
        from interop.targets.coreml.support import coreml_support

        return coreml_support(kind)
