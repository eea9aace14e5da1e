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
from interop.stages.preflight import Hazard, fail_on_hazards, trace_consistency, trace_with_warnings
from interop.stages.preprocess import PROBS, ImageInput, image_input, looks_like_probabilities, wrap
from interop.support.quiet import Noise, captured
from interop.runtimes.torch_ref import run_torch
from interop.stages.samples import draw
from interop.stages.kinds import load_sampler
from interop.stages.spec import Case, InputSpec, case_shape, cases, example_size, make_sample, other_size
from interop.targets import output_keys


@dataclass
class Reference:
    """Seeded samples per case and the PyTorch outputs for each."""

    samples: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    outputs: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)
    sampler: Any = None  # the --sampler (stages/kinds.Sampler), also used for the export sample
    user: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)  # --samples, per case


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
    if not config.allow_trace_warnings:
        fail_on_hazards(prep.hazards)
    return prep


def _check_labels(labels: list[str], ref: "Reference") -> None:
    first = ref.outputs["example"][0][0]
    if first.ndim != 2 or first.shape[-1] != len(labels):
        raise SpecError(f"{len(labels)} labels but the model's first output has shape {first.shape}",
                        hint="a classifier's first output is (batch, classes) with one label per class")
    if len(set(labels)) != len(labels):
        raise SpecError("the labels file repeats a label", hint="labels must be unique")


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
    at each case's sizes; the user's --samples first where given) and PyTorch's outputs."""
    ref = Reference()
    if getattr(config, "sampler", None):
        ref.sampler = load_sampler(config.sampler)
        _mark_sampled(spec, ref.sampler, config.seed)
    ref.user = load_user_samples(config.samples, spec, all_cases) if config.samples else {}
    names = spec.names()
    for case in all_cases:
        samples = draw(spec, case, config.seed, config.num_samples, pixels, ref.sampler)
        user = ref.user.get(case.name, [])
        if user:
            samples = user + samples[: max(0, config.num_samples - len(user))]
        ref.samples[case.name] = samples
        ref.outputs[case.name] = [run_torch(module, s, names) for s in samples]
    return ref


def _mark_sampled(spec: InputSpec, sampler: Any, seed: int) -> None:
    """Record on each input the sampler draws (the report's inputs[] show it)."""
    example = cases(spec)[0]
    drawn = sampler(spec, {t.name: case_shape(t, example) for t in spec.inputs}, seed)
    for t in spec.inputs:
        t.sampler = sampler.text if t.name in drawn else None


def load_user_samples(path: str, spec: InputSpec, all_cases: list[Case] | None = None
                      ) -> dict[str, list[dict[str, np.ndarray]]]:
    """``--samples file.npz``, per shape case: arrays named ``<input>`` (the example case) or
    ``<input>@<case>`` (the case as the report's cases[] name it, e.g. ``x@batch=3``); each one
    sample, or a leading axis of samples when every array of the case has the input's rank + 1."""
    arrays = _read_npz(path)
    groups = _group_by_case(arrays, spec, [c.name for c in all_cases or [Case("example")]], path)
    by_name = {c.name: c for c in all_cases or [Case("example")]}
    return {case: _case_samples(spec, by_name[case], group, path) for case, group in groups.items()}


def _read_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError as exc:
        raise SpecError(f"samples file {path} does not exist", hint="check the --samples path") from exc
    except Exception as exc:
        raise SpecError(f"samples file {path} is not a readable .npz ({type(exc).__name__})",
                        hint="write it with numpy.savez(path, x=array, ...)") from exc


def _group_by_case(arrays: dict[str, np.ndarray], spec: InputSpec, case_names: list[str], path: str
                   ) -> dict[str, dict[str, np.ndarray]]:
    """``{case: {input: array}}``; every case the file names has an array for every input."""
    names = spec.names()
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in arrays.items():
        name, at, case = key.partition("@")
        if not at and name not in names:
            continue  # extra arrays without a case are ignored, as always
        case = case if at else "example"
        if name not in names or case not in case_names:
            raise SpecError(f"samples file {path} has an array {key!r}: no input {name!r} or no case {case!r} "
                            f"(inputs: {', '.join(names)}; cases: {', '.join(case_names)})",
                            hint="name arrays <input> for the example case or <input>@<case>")
        if name in groups.setdefault(case, {}):
            raise SpecError(f"samples file {path} holds {name!r} for the example case twice ({name} and "
                            f"{name}@example)", hint="keep one of them")
        groups[case][name] = arr
    if not groups:
        raise SpecError(f"samples file {path} has no array for input(s) {', '.join(names)} "
                        f"(it has {', '.join(arrays) or 'none'})", hint="name the arrays after the inputs")
    for case, group in groups.items():
        missing = [n for n in names if n not in group]
        if missing:
            label = "" if case == "example" else f" at case {case}"
            raise SpecError(f"samples file {path} has no array for input(s) {', '.join(missing)}{label} "
                            f"(it has {', '.join(arrays)})", hint="give every input of a case an array")
    return groups


def _case_samples(spec: InputSpec, case: Case, arrays: dict[str, np.ndarray], path: str
                  ) -> list[dict[str, np.ndarray]]:
    stacked = all(arrays[t.name].ndim == len(t.shape) + 1 for t in spec.inputs)
    count = len(arrays[spec.inputs[0].name]) if stacked else 1
    out = []
    for i in range(count):
        sample = {}
        for t in spec.inputs:
            arr = arrays[t.name][i] if stacked else arrays[t.name]
            _check_sample_shape(t, arr, path, None if case.name == "example" else case_shape(t, case))
            sample[t.name] = np.ascontiguousarray(arr.astype(t.dtype))
        out.append(sample)
    return out


def _check_sample_shape(t: Any, arr: np.ndarray, path: str, exact: tuple[int, ...] | None = None) -> None:
    if exact is not None:
        if tuple(arr.shape) != exact:
            raise SpecError(f"sample {t.name!r} in {path} has shape {arr.shape}, its case needs {exact}",
                            hint="give each case's arrays that case's shapes (the report lists the cases)")
        return
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

        from interop.runtimes.torch_ref import to_torch

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
        sizes[name] = other_size(example, dim.min, dim.max) if example == 1 else example
    case = Case("export", tuple((k, v) for k, v in sizes.items() if v is not None))
    shapes = {t.name: case_shape(t, case) for t in spec.inputs}
    given = [s for samples in ref.user.values() for s in samples
             if all(s[n].shape == shape for n, shape in shapes.items())]
    sample = given[0] if given else make_sample(spec, case, seed=12345, sampler=ref.sampler)
    return tuple(torch.from_numpy(np.ascontiguousarray(sample[t.name])) for t in spec.inputs)


def read_labels(path: str) -> list[str]:
    try:
        labels = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read labels file {path}: {exc}", hint="one label per line, UTF-8") from exc
    if not labels:
        raise SpecError(f"labels file {path} is empty", hint="one label per line")
    return labels


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
