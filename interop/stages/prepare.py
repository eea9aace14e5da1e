"""Everything that runs the PyTorch model, before anything is exported or written: seeded
samples per shape case and PyTorch's outputs for them, output names, the module as exported
(preprocessing folded in), and the one trace both targets share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interop.settings import BuildConfig
from interop.errors import SpecError
from interop.sources.torch_files import Source
from interop.stages.preflight import (Hazard, fail_on_hazards, name_unrolled, settle_shape_hazards,
                                      trace_consistency, trace_with_warnings)
from interop.stages.preprocess import PROBS, ImageInput, image_input, looks_like_probabilities, wrap
from interop.support.quiet import Noise, captured
from interop.runtimes.torch_ref import run_torch
from interop.stages.value_kinds import load_sampler
from interop.stages.samples import draw, read_samples
from interop.stages.spec import Case, InputSpec, case_shape, cases, example_size, fallback_sizes, make_sample, other_size
from interop.stages.outputs import output_keys


@dataclass
class Reference:
    """Seeded samples per case and the PyTorch outputs for each."""

    samples: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    outputs: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)
    sampler: Any = None  # the --sampler (stages/value_kinds.Sampler), also used for the export sample
    user: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)  # --samples, per case
    compare_where: dict[str, tuple[str, bool]] = field(default_factory=dict)  # --compare-where: output -> mask


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
    capture: Any = None  # stages/export_capture.ExportCapture: the one torch.export, shared by the targets
    noise: Noise = field(default_factory=Noise)
    hazards: list[Hazard] = field(default_factory=list)
    conversion: dict[str, Any] | None = None  # a converted source's check against its reference
    softmax: bool = False  # interop appended a softmax (a classifier whose first output was logits)
    static: "Prepared | None" = None  # the same at fixed example shapes, for targets built from a module
    static_spec: Any = None
    static_reason: str = ""

    @property
    def conversion_problem(self) -> str | None:
        return self.conversion.get("problem") if self.conversion and not self.conversion.get("passed") else None
    notes: list[str] = field(default_factory=list)  # report warnings (renamed outputs, ...)


def prepare(config: BuildConfig, source: Source, spec: InputSpec) -> Prepared:
    """Everything that runs the PyTorch model, before anything is written: a model that fails on
    the spec is a spec error."""
    image = image_input(config.image, config.mean, config.std, config.pixel_scale, spec, source.hints.get("image"))
    labels = read_labels(config.labels) if config.labels else source.hints.get("labels")
    all_cases = cases(spec)
    pixels = {image.input} if image else set()
    # the reference: the model itself, or for a converted source (an ONNX file) the original in its runtime
    base = getattr(source, "reference_module", None) or source.module
    converted = base is not source.module
    softmax = False
    noise = Noise()  # torch's own warnings while running the model go to the report, not the console
    with captured(noise):
        ref = reference(wrap(base, spec.names(), image, softmax=False), spec, all_cases, config, pixels)
    if labels:
        _check_labels(labels, ref)
        if not looks_like_probabilities(ref.outputs["example"][0][:1]):
            softmax = True
            with captured(noise):
                ref = reference(wrap(base, spec.names(), image, softmax=True), spec, all_cases, config, pixels)
    module = wrap(source.module, spec.names(), image, softmax=softmax) if source.module is not None else None
    notes: list[str] = []
    with captured(noise):
        names = output_names(base, spec, ref, config, notes)
    if labels:
        names[0] = PROBS
    ref.compare_where = compare_where(config, spec, names, ref)
    prep = Prepared(module, all_cases, ref, names, image, labels, _export_args(spec, ref, all_cases), noise=noise,
                    notes=notes)
    prep.softmax = softmax
    if converted:
        prep.conversion = check_conversion(source, module, spec, ref, config, names)
    if module is None:
        return prep
    prep.trace, prep.capture = captures(module, prep.export_args, spec, prep.noise, config)
    if prep.trace.traced is not None and prep.trace.traced is not module:
        with captured(noise):
            departures = trace_consistency(prep.trace.traced, ref, spec.names(), names)
            name_unrolled(departures, module, prep.trace.traced, ref, spec.names())
            prep.hazards = settle_shape_hazards(prep.trace.hazards, departures)
    if converted:  # the trace of a converted graph only feeds targets built from it; their checks judge it
        departs = [h for h in prep.hazards if h.blocking]
        for hazard in prep.hazards:
            hazard.blocking = False
        if departs or prep.trace.error is not None:
            prep.static = static_conversion(source, spec, prep, config, departs[0].line() if departs else
                                            str(prep.trace.error))
    if not config.allow_trace_warnings:
        fail_on_hazards(prep.hazards)
    return prep


def _quantized(source: Source) -> bool:
    """Whether an ONNX source graph quantizes activations (its float conversion then departs from
    ONNX Runtime's integer kernels by whole quantization steps)."""
    model = getattr(source, "model_proto", None)
    return model is not None and any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear")
                                     for n in model.graph.node)


def static_conversion(source: Source, spec: InputSpec, prep: Prepared, config: BuildConfig, why: str
                      ) -> "Prepared | None":
    """A converted graph that computes shapes at run time (ONNX Shape -> Gather -> Concat -> Reshape)
    cannot be captured with flexible shapes: torch.jit.trace bakes the sizes, torch.export stops at
    the data-dependent values. Targets built from the module then get the graph at the example
    shapes (onnxsim folds the shape arithmetic), checked at the example case only."""
    import copy

    import onnxsim

    from interop.sources import onnx_convert

    example = prep.ref.samples["example"][0]
    shapes = {t.name: list(example[t.name].shape) for t in spec.inputs}
    try:
        with captured(prep.noise):
            fixed, ok = onnxsim.simplify(copy.deepcopy(source.model_proto), overwrite_input_shapes=shapes)
            module = onnx_convert.convert(fixed) if ok else None
    except Exception:
        return None
    if module is None:
        return None
    fixed_spec = InputSpec.from_json(spec.to_json())
    for t in fixed_spec.inputs:
        t.dynamic = {}
        t.shape = tuple(shapes[t.name])
    import torch

    wrapped = wrap(module, spec.names(), prep.image, softmax=prep.softmax)
    ref = Reference({"example": prep.ref.samples["example"]}, {"example": prep.ref.outputs["example"]},
                    compare_where=prep.ref.compare_where)
    args = tuple(torch.from_numpy(example[t.name]) for t in spec.inputs)
    static = Prepared(wrapped, cases(fixed_spec), ref, prep.names, prep.image, prep.labels, args, noise=prep.noise)
    static.trace, static.capture = captures(wrapped, args, fixed_spec, prep.noise, config)
    prep.static_spec, prep.static_reason = fixed_spec, why
    return static


def compare_where(config: BuildConfig, spec: InputSpec, names: list[str], ref: "Reference"
                  ) -> dict[str, tuple[str, bool]]:
    """``--compare-where`` checked against the model: a named output, a named input whose shape is
    a leading part of that output's (at the example case)."""
    from interop.compare import parse_compare_where

    where = parse_compare_where(list(getattr(config, "compare_where", []) or []))
    example = ref.samples["example"][0]
    for output, (mask, _) in where.items():
        if output not in names or mask not in spec.names():
            raise SpecError(f"--compare-where {output}:{mask}: the model has no output {output!r} or no input {mask!r}",
                            hint=f"outputs: {', '.join(names)}; inputs: {', '.join(spec.names())}")
        out_shape = ref.outputs["example"][0][names.index(output)].shape
        if tuple(out_shape[: example[mask].ndim]) != tuple(example[mask].shape):
            raise SpecError(f"--compare-where {output}:{mask}: {mask}'s shape {tuple(example[mask].shape)} is not a "
                            f"leading part of {output}'s {tuple(out_shape)}",
                            hint="the mask must index the output's leading axes, e.g. (batch, seq) for (batch, seq, dim)")
    return where


def check_conversion(source: Source, module: Any, spec: InputSpec, ref: "Reference", config: BuildConfig,
                     names: list[str]) -> dict[str, Any]:
    """A converted source (ONNX -> PyTorch): the converted module against the reference at every
    case, so that a converter fault is reported as the converter's, never as a target's."""
    from interop.compare import diffs
    from interop.stages.agreement import run_cases

    info = dict(getattr(source, "converter", {}) or {})
    if module is None:
        info["passed"], info["problem"] = False, info.get("error") or "the source could not be converted"
        return info
    try:
        got = run_cases(lambda s: run_torch(module, s, spec.names()), ref)
    except Exception as exc:
        info["passed"] = False
        info["problem"] = f"the {info.get('name', 'converted')} module fails to run: {type(exc).__name__}: {exc}"[:400]
        return info
    precision = "quantized" if _quantized(source) else "fp32"
    info["tolerance_class"] = precision
    rows = diffs("converter", info.get("name", "converter"), ref, got, names, precision, config.tolerance)
    bad = next((d for d in rows if not d.passed), None)
    info["passed"] = bad is None
    info["worst_rel_l2"] = max((float(d.rel_l2) for d in rows), default=0.0)
    info["problem"] = None if bad is None else (
        f"the ONNX -> PyTorch converter ({info.get('name')}) disagrees with ONNX Runtime on the source at case "
        f"{bad.case}, output {bad.output}: {bad.note}")
    return info


def _check_labels(labels: list[str], ref: "Reference") -> None:
    first = ref.outputs["example"][0][0]
    if first.ndim != 2 or first.shape[-1] != len(labels):
        raise SpecError(f"{len(labels)} labels but the model's first output has shape {first.shape}",
                        hint="a classifier's first output is (batch, classes) with one label per class")
    if len(set(labels)) != len(labels):
        raise SpecError("the labels file repeats a label", hint="labels must be unique")


def captures(module: Any, args: tuple, spec: InputSpec, noise: Noise, config: BuildConfig) -> tuple[Any, Any]:
    """The shared trace (none with --no-torchscript) and the shared, lazily made torch.export."""
    from interop.stages import export_capture

    trace = export_capture.NoTrace() if export_capture.enabled(config) else Trace(module, args, noise)
    return trace, export_capture.ExportCapture(module, args, spec, noise)


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
    """Seeded samples per case (image inputs as whole-number pixels; value kinds and the sampler
    at each case's sizes; the user's --samples first where given) and PyTorch's outputs. A case
    the model fails at, on a dim given without a step, is moved to another legal size
    (``fallback_sizes``); ``all_cases`` is updated in place, the case records the sizes tried."""
    ref = Reference()
    if getattr(config, "sampler", None):
        ref.sampler = load_sampler(config.sampler)
        _mark_sampled(spec, ref.sampler, config.seed)
    ref.user = load_user_samples(config.samples, spec, all_cases) if config.samples else {}
    names = spec.names()
    for i, case in enumerate(all_cases):
        samples = draw(spec, case, config.seed, config.num_samples, pixels, ref.sampler)
        user = ref.user.get(case.name, [])
        if user:
            samples = user + samples[: max(0, config.num_samples - len(user))]
        try:
            outputs = [run_torch(module, s, names) for s in samples]
        except SpecError as exc:
            if case.name == "example":
                raise
            case, samples, outputs = _fallback_case(module, spec, case, config, pixels, exc, ref.sampler)
            all_cases[i] = case
        ref.samples[case.name] = samples
        ref.outputs[case.name] = outputs
    return ref


def _fallback_case(module: Any, spec: InputSpec, case: Case, config: BuildConfig, pixels: set[str],
                   error: SpecError, sampler: Any = None) -> tuple[Case, list, list]:
    """The model failed at ``case``'s size: try even sizes and multiples of 8, 16, 32 before
    blaming the spec (U-Nets with skip concatenations fail at odd sizes)."""
    (dim_name, size), = case.sizes
    dim = spec.dims()[dim_name]
    tried = [size]
    if dim.step == 1:
        for candidate in fallback_sizes(example_size(spec, dim_name), dim.min, dim.max, size):
            trial = Case(f"{dim_name}={candidate}", ((dim_name, candidate),), tuple(tried))
            samples = draw(spec, trial, config.seed, config.num_samples, pixels, sampler)
            try:
                return trial, samples, [run_torch(module, s, spec.names()) for s in samples]
            except SpecError:
                tried.append(candidate)
    sizes = ", ".join(str(t) for t in tried)
    where = next(f"{t.name}:{a}" for t in spec.inputs for a, d in t.dynamic.items() if d.name == dim_name)
    steps = [m for m in (32, 16, 8) if m > dim.step and dim.max // m * m > -(-dim.min // m) * m]
    hint = (f"declare the sizes it accepts with a step, e.g. --dynamic {where}={dim_name}:"
            f"{-(-dim.min // steps[0]) * steps[0]}..{dim.max // steps[0] * steps[0]}/{steps[0]}, or narrow the range"
            if steps else f"narrow the range of {dim_name} to sizes the model accepts")
    raise SpecError(f"{error.message} (the model fails at {dim_name} = {sizes})", hint=hint) from error


def _mark_sampled(spec: InputSpec, sampler: Any, seed: int) -> None:
    """Record on each input the sampler draws (the report's inputs[] show it)."""
    example = cases(spec)[0]
    drawn = sampler(spec, {t.name: case_shape(t, example) for t in spec.inputs}, seed)
    for t in spec.inputs:
        t.sampler = sampler.text if t.name in drawn else None


def load_user_samples(path: str, spec: InputSpec, all_cases: list[Case] | None = None
                      ) -> dict[str, list[dict[str, np.ndarray]]]:
    """``--samples file.npz``, per shape case (key scheme: stages/samples.read_samples)."""
    return read_samples(path, spec, all_cases or [Case("example")])


def output_names(module: Any, spec: InputSpec, ref: Reference, config: BuildConfig,
                 notes: list[str] | None = None) -> list[str]:
    """The user's --output-name list, else the model's own (dict keys, ModelOutput fields,
    namedtuple fields), else output / output_<i>. A derived name equal to an input's (diffusers'
    ``sample``) is renamed ``<name>_out``, with a note."""
    count = len(ref.outputs["example"][0])
    names = list(spec.output_names)
    given = bool(names)
    if not names:
        import torch

        from interop.runtimes.torch_ref import to_torch

        with torch.no_grad():
            raw = module(*to_torch(ref.samples["example"][0], spec.names()))
        names = output_keys(raw) or _field_names(raw) or (["output"] if count == 1 else
                                                          [f"output_{i}" for i in range(count)])
    if len(names) != count:
        raise SpecError(f"{len(names)} output name(s) given ({', '.join(names)}) but the model returns {count} tensors",
                        hint="give one --output-name per output tensor")
    if not given:
        names = _renamed_clashes(names, spec.names(), notes if notes is not None else [])
    clash = set(names) & set(spec.names())
    if clash or len(set(names)) != len(names):
        raise SpecError(f"output names {names} repeat or clash with input names", hint="give distinct names")
    return names


def _field_names(out: Any) -> list[str] | None:
    """A namedtuple of tensors keeps its field names."""
    fields = getattr(out, "_fields", None)
    if isinstance(out, tuple) and fields and all(hasattr(v, "shape") for v in out):
        return [str(f) for f in fields]
    return None


def _renamed_clashes(names: list[str], inputs: list[str], notes: list[str]) -> list[str]:
    out = []
    for name in names:
        new = name
        while new in inputs or new in out or (new != name and new in names):
            new = f"{new}_out"
        if new != name:
            notes.append(f"output {name!r} has the name of an input: it is called {new!r} in both artifacts "
                         f"(--output-name sets other names)")
        out.append(new)
    return out


def output_dims(spec: InputSpec, ref: Reference, all_cases: list[Case]) -> list[dict[int, str]]:
    """For each output, the axes that follow a named dynamic dim across the cases."""
    example_shapes = [o.shape for o in ref.outputs["example"][0]]
    dims: list[dict[int, str]] = [{} for _ in example_shapes]
    example_sizes = {name: example_size(spec, name) for name in spec.dims()}
    for case in all_cases[1:]:
        (dim, size), = case.sizes
        for i, out in enumerate(ref.outputs[case.name][0]):
            for axis, (before, after) in enumerate(zip(example_shapes[i], out.shape)):
                if before == example_sizes[dim] and after == size and before != after:
                    dims[i].setdefault(axis, dim)
    return dims


def _export_args(spec: InputSpec, ref: Reference, all_cases: list[Case]) -> tuple:
    """Export/trace at sizes != 1 where a dynamic dim allows it: exporters specialise size-1 axes.
    The values: the user's --samples at those sizes if any, else drawn (value kinds, sampler)."""
    import torch

    sizes = {}
    for name, dim in spec.dims().items():
        example = example_size(spec, name)
        sizes[name] = other_size(example, dim.min, dim.max, dim.step) if example == 1 else example
    case = Case("export", tuple((k, v) for k, v in sizes.items() if v is not None))
    shapes = {t.name: case_shape(t, case) for t in spec.inputs}
    given = [s for samples in ref.user.values() for s in samples
             if all(s[n].shape == shape for n, shape in shapes.items())]
    sample = given[0] if given else make_sample(spec, case, seed=12345, sampler=ref.sampler)
    return tuple(torch.from_numpy(np.ascontiguousarray(sample[t.name])) for t in spec.inputs)


def read_labels(path: str) -> list[str]:
    from interop.errors import LoadError
    from interop.trust import regular_file

    try:
        regular_file(path, "labels file")  # a FIFO or device (a report may name one) is never read
    except LoadError as exc:
        raise SpecError(exc.message, hint="one label per line, UTF-8") from exc
    try:
        labels = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read labels file {path}: {exc}", hint="one label per line, UTF-8") from exc
    if not labels:
        raise SpecError(f"labels file {path} is empty", hint="one label per line")
    return labels


def single_image_cases(prep: Prepared, spec: InputSpec) -> Reference:
    """A Core ML image input takes one picture, and a Core ML classifier labels one sample: every
    case at batch 1 (inputs sharing the image's -- or the first input's -- batch dim sliced to their
    first item), with PyTorch's outputs for exactly those inputs."""
    anchor = prep.image.input if prep.image is not None else spec.inputs[0].name
    batch = spec.by_name(anchor).dynamic.get(0)
    sharing = [t.name for t in spec.inputs if batch and t.dynamic.get(0) and t.dynamic[0].name == batch.name]
    sharing = sharing or [anchor]
    out = Reference(compare_where=prep.ref.compare_where)
    for case, samples in prep.ref.samples.items():
        if samples[0][anchor].shape[0] == 1:
            out.samples[case], out.outputs[case] = samples, prep.ref.outputs[case]
            continue
        name = f"{case}, one image" if prep.image is not None else f"{case}, one sample"
        sliced = [{k: (v[:1] if k in sharing else v) for k, v in s.items()} for s in samples]
        out.samples[name] = sliced
        out.outputs[name] = [run_torch(prep.module, s, spec.names()) for s in sliced]
    return out
