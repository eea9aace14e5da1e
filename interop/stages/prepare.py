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
from interop.stages.samples import draw, read_samples
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
    """``--samples file.npz``, per shape case (key scheme: stages/samples.read_samples)."""
    return read_samples(path, spec, all_cases or [Case("example")])


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
