"""Core AI target (opt-in: ``--targets onnx,coreml,coreai``): Apple's successor to Core ML (iOS 27 /
macOS 27). The prepared module is captured with ``torch.export`` (interop's dynamic dims as
``torch.export.Dim``s), decomposed with ``coreai_torch.get_decomp_table()``, converted by
``coreai_torch.TorchConverter`` and saved as a ``<stem>.aimodel`` folder carrying interop's
metadata. Verification reads the folder back from disk and runs it in coreai-core's bundled
runtime (``interop.runtimes.coreai``) at every case and sample.

What Core AI does not have, and what interop builds instead (said in the report's notes):
* precision: coreai-torch has no precision switch; ``--precision fp16`` converts an fp16 copy of the
  model behind fp32 inputs and outputs.
* dynamic dims are ``?`` in the program, without ranges; interop records the declared ranges in the
  metadata (``interop.dynamic_ranges``) and checks every case's shapes against them.
* image inputs and classifier outputs: coreai-torch converts tensors only (and the runtime has no
  image inputs off Apple platforms), so an image input is a float tensor of raw pixels (the
  normalisation folded in, as for ONNX) and a classifier returns its probabilities tensor.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from interop.errors import ExportError, InteropError, LoadError, SpecError, first_line
from interop.runtimes import coreai as runtime
from interop.support.quiet import Noise, captured
from interop.stages.spec import InputSpec

RANGES_KEY = "interop.dynamic_ranges"


def dynamic_ranges(spec: InputSpec) -> dict[str, dict[str, dict[str, Any]]]:
    """{input: {axis: {name, min, max}}}: what the asset's metadata records for its ``?`` dims."""
    return {t.name: {str(a): {"name": d.name, "min": d.min, "max": d.max} for a, d in sorted(t.dynamic.items())}
            for t in spec.inputs if t.dynamic}


def capture(module: Any, args: tuple, spec: InputSpec, fp16: bool, noise: Noise) -> Any:
    """torch.export with the spec's dims (a TorchScript model first goes through torch's
    TorchScript -> ExportedProgram converter), then coreai-torch's decompositions."""
    import torch
    from torch.export import Dim

    with captured(noise):  # its import warns that torch 2.13.0+cpu is newer than 2.13.0
        import coreai_torch
    module = _without_torchscript(module, args, noise)
    if fp16:
        module = _fp16_copy(module)
    dims: dict[str, Any] = {}
    dyn = tuple({a: dims.setdefault(d.name, Dim(d.name, min=d.min, max=d.max)) for a, d in t.dynamic.items()} or None
                for t in spec.inputs)
    try:
        with captured(noise), torch.no_grad():
            program = torch.export.export(module, args, dynamic_shapes=(dyn,) if any(dyn) else None)
    except Exception as exc:
        raise ExportError(f"torch.export failed: {_export_failure(exc)}",
                          hint="Core AI needs a torch.export-able model; `interop check` lists what blocks it") from exc
    try:
        with captured(noise):
            return program.run_decompositions(coreai_torch.get_decomp_table())
    except Exception as exc:
        raise ExportError(f"coreai-torch's decompositions failed: {first_line(exc)}", hint="report it") from exc


def _without_torchscript(module: Any, args: tuple, noise: Noise) -> Any:
    """A TorchScript model, alone or as the ``inner`` model of interop's preprocessing wrapper
    (elementwise image normalisation, softmax: the inner model sees the outer shapes), replaced
    by its converted program; the prepared module itself is left untouched (a shallow copy)."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return from_torchscript(module, args, noise)
    inner = getattr(module, "inner", None)
    if not isinstance(inner, torch.jit.ScriptModule):
        return module
    outer = copy.copy(module)
    outer._modules = dict(module._modules)  # noqa: SLF001 - the copy's own children, not the original's
    outer.inner = from_torchscript(inner, args, noise)
    return outer


def from_torchscript(module: Any, args: tuple, noise: Noise) -> Any:
    """A TorchScript model as an nn.Module torch.export takes: torch's own converter
    (``torch._export.converter.TS2EPConverter``, experimental) at the export sizes; its graph
    module, outputs flattened, is then exported again with the spec's dynamic dims."""
    import torch
    from torch._export.converter import TS2EPConverter

    from interop.stages.outputs import flatten_outputs

    try:
        with captured(noise):
            program = TS2EPConverter(module, args).convert()
    except Exception as exc:
        raise ExportError(f"torch's TorchScript -> ExportedProgram converter failed: {first_line(exc)}",
                          hint="build from the nn.Module (a .pt2, a pickled module or MODULE:FN)") from exc

    class Flat(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> tuple:
            return tuple(flatten_outputs(self.inner(*args)))

    return _inference(Flat(program.module()))


def _inference(module: Any) -> Any:
    """``module`` in inference mode: ``.eval()`` without recursing (an ExportedProgram's graph
    module refuses ``train()``; it is inference-only already)."""
    module.training = False
    return module


def _export_failure(exc: Exception) -> str:
    """torch.export's first line and its first explanation (``- You marked seq as dynamic but ...``)."""
    why = next((ln.strip()[2:] for ln in str(exc).splitlines() if ln.strip().startswith("- ")), "")
    why = why.split(". ")[0].rstrip(".") + ("." if why else "")  # its first sentence, not torch's mark_dynamic advice
    text = first_line(exc).removesuffix(' For more information, run with TORCH_LOGS="+dynamic".')
    return f"{text} {why[:300]}".strip()


def _fp16_copy(module: Any) -> Any:
    """An fp16 copy of ``module`` behind fp32 inputs and outputs (integer tensors pass as they are)."""
    import torch

    class Fp16(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = copy.deepcopy(inner).half()

        def forward(self, *args: Any) -> tuple:
            args = tuple(a.half() if a.is_floating_point() else a for a in args)
            return tuple(o.float() if o.is_floating_point() else o for o in self.inner(*args))

    return _inference(Fp16(module))


def convert(program: Any, inputs: list[str], outputs: list[str], noise: Noise) -> Any:
    """coreai-torch's converter (release mode: operation ids, no stack traces in the asset)."""
    import coreai_torch

    converter = coreai_torch.TorchConverter(mode=coreai_torch.TorchConverter.Mode.RELEASE)
    try:
        with captured(noise):
            return converter.add_exported_program(program, input_names=inputs, output_names=outputs).to_coreai()
    except Exception as exc:
        raise ExportError(f"coreai-torch could not convert the model: {first_line(exc)}",
                          hint="see the report; try another --targets set while coreai-torch is beta") from exc


def save(program: Any, path: Path, meta: dict[str, Any], spec: InputSpec, noise: Noise) -> None:
    from coreai.runtime import AIModelAssetMetadata

    from interop._version import __version__

    info = AIModelAssetMetadata()
    info.author, info.license = str(meta.get("author") or ""), str(meta.get("license") or "")
    info.model_description = str(meta.get("description") or "")
    values = {"interop.producer": f"interop {__version__}", **meta, RANGES_KEY: dynamic_ranges(spec)}
    for key, value in values.items():
        if key.startswith("interop.") and value is not None:
            info.set_custom(key, value if isinstance(value, str) else json.dumps(value))
    with captured(noise):
        program.save_asset(path, metadata=info)


def metadata(path: Path) -> dict[str, str]:
    """The creator-defined metadata of an ``.aimodel`` (interop.spec and friends)."""
    data = runtime.read_metadata(path).get("creatorDefinedMetadata") or {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}


def feed(spec: InputSpec, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the runtime is fed: integer inputs as int32 (it refuses int64), the rest as they are."""
    return {t.name: sample[t.name].astype(np.int32) if t.dtype.startswith(("int", "uint")) else sample[t.name]
            for t in spec.inputs}


def check_shapes(session: Any, ranges: dict[str, Any], inputs: dict[str, np.ndarray],
                 outputs: dict[str, np.ndarray]) -> None:
    """Shapes against the program's declared types and the metadata's ranges: ``?`` dims must lie
    in their recorded range (the runtime does not enforce it), fixed dims must match."""
    for kind, declared, values in (("input", session.inputs, inputs), ("output", session.outputs, outputs)):
        for name, (_, dims) in declared.items():
            if dims is None:  # a type text interop does not parse: no claim to check
                continue
            shape = values[name].shape
            if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, shape)):
                raise ExportError(f"{kind} {name!r} is declared {_dims(dims)} but has shape {list(shape)}",
                                  hint="rebuild the .aimodel")
            for axis, size in enumerate(shape):
                r = (ranges.get(name) or {}).get(str(axis)) if kind == "input" else None
                if r is not None and not r["min"] <= size <= r["max"]:
                    raise ExportError(f"input {name!r} axis {axis} = {size} is outside the declared range "
                                      f"{r['name']} {r['min']}..{r['max']}", hint="keep inputs inside the spec's ranges")


def _dims(dims: list[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def run_all(path: Path, spec: InputSpec, ref: Any, names: list[str]) -> dict[str, list[list[np.ndarray]]]:
    """Every case and sample of ``ref`` through the bundled runtime, the asset read from disk."""
    from interop.stages.agreement import run_cases

    ranges = json.loads(metadata(path).get(RANGES_KEY) or "null")
    if ranges is not None and ranges != dynamic_ranges(spec):
        raise ExportError(f"the .aimodel records dynamic ranges {ranges}, the spec declares {dynamic_ranges(spec)}",
                          hint="it was not built for this spec: rebuild it")
    ranges = ranges or dynamic_ranges(spec)
    with runtime.Session(path) as session:
        missing = [n for n in names if n not in session.outputs] + [n for n in spec.names() if n not in session.inputs]
        if missing:
            raise ExportError(f"the .aimodel has no tensor named {', '.join(missing)}", hint="rebuild it")

        def run(sample: dict[str, np.ndarray]) -> list[np.ndarray]:
            given = feed(spec, sample)
            out = session.run(given)
            check_shapes(session, ranges, given, out)
            return [out[n] for n in names]

        return run_cases(run, ref)


def inspect_aimodel(path: Path) -> dict[str, Any]:
    """Inputs, outputs, the op histogram and storage types from the asset's summary; metadata."""
    why = runtime.unavailable(convert=False)
    if why:
        raise LoadError(f"cannot read {path}: {why}", hint=runtime.INSTALL_HINT)
    from coreai.authoring import AIModelAsset

    try:
        info = runtime.read_metadata(path)
        summary = AIModelAsset.load(str(path)).summary(include_statistics=True)
        ios = summary.function_inputs(runtime.FUNCTION)
        oos = summary.function_outputs(runtime.FUNCTION)
    except InteropError:
        raise
    except Exception as exc:
        raise LoadError(f"{path} is not a readable .aimodel ({first_line(exc)})", hint="rebuild it") from exc

    def tensor(name: str, text: str) -> dict[str, Any]:
        dtype, dims = runtime.declared(text)
        return {"name": name, "type": dtype, "shape": ["?" if d is None else d for d in dims or []]}

    meta = {k: v for k, v in info.items() if k in ("author", "license", "producer", "creationDate") and v}
    meta.update(metadata(path))
    return {"path": str(path), "format": "aimodel", "functions": list(summary.function_names),
            "compatibility_version": summary._compatibility_version,  # noqa: SLF001 (beta: no public name yet)
            "inputs": [tensor(*io) for io in ios], "outputs": [tensor(*io) for io in oos],
            "operations": dict(summary.operation_distribution), "storage_types": dict(summary.storage_types),
            "metadata": meta}


# --- the plugin ------------------------------------------------------------------------------------

from interop.targets import register_target  # noqa: E402  (the registry imports this module lazily)
from interop.targets.base import Target, TargetContext, TargetResult  # noqa: E402


@register_target
class CoreaiTarget(Target):
    name = "coreai"
    suffix = ".aimodel"
    default = False  # opt-in while coreai-torch / coreai-core are beta
    stage = "converting to Core AI"
    verify_stage = "executing the Core AI model"
    display_name = "Core AI"
    packages = runtime.PACKAGES

    def doctor(self, versions: dict[str, str | None]) -> dict[str, bool]:
        """Whether coreai-core's bundled runtime loads here (this optional target's verifier)."""
        runs = bool(versions.get("coreai-core")) and runtime.unavailable(convert=False, modules=("coreai.runtime",)) is None
        return {"coreai-runtime (coreai-core, .aimodel)": runs}

    def precision(self, config: Any) -> str:
        return "fp32" if config.precision == "fp32" else "fp16"  # --precision auto: fp16 here

    def ensure_available(self) -> None:
        why = runtime.unavailable(convert=True)
        if why:
            raise SpecError(f"the coreai target is not available here: {why}", hint=runtime.INSTALL_HINT)

    def build(self, ctx: TargetContext) -> TargetResult:
        from interop.compare import diffs
        from interop.support.progress import stage

        prep, spec, config = ctx.prep, ctx.spec, ctx.config
        why = runtime.unavailable(convert=True)
        if why:
            raise ExportError(f"the coreai target is not available here: {why}", hint=runtime.INSTALL_HINT)
        fp16 = self.precision(config) == "fp16"
        program = capture(prep.module, prep.export_args, spec, fp16, ctx.noise)
        converted = convert(program, spec.names(), prep.names, ctx.noise)
        del program
        path = ctx.work / f"{ctx.stem}{self.suffix}"
        try:
            save(converted, path, ctx.meta, spec, ctx.noise)
        except Exception as exc:
            raise ExportError(f"coreai-core could not save the asset: {first_line(exc)}", hint="report it") from exc
        del converted
        entry = {"precision": self.precision(config), "capture": self._capture(prep.module), "versions": runtime.versions(),
                 "minimum_os": "iOS 27 / macOS 27", "notes": self._notes(spec, prep, fp16),
                 "verified_cases": [c.name for c in prep.cases]}
        stage(self.verify_stage)
        out = TargetResult(path, entry)
        for name, got, problem in self.execute(path, spec, prep.ref, prep.names, prep.labels):
            if problem:
                out.not_executed.append((name, problem))
            else:
                out.diffs.extend(diffs(self.name, name, prep.ref, got, prep.names, self.precision(config), config.tolerance))
        return out

    @staticmethod
    def _capture(module: Any) -> str:
        import torch

        scripted = isinstance(module, torch.jit.ScriptModule) or isinstance(getattr(module, "inner", None),
                                                                            torch.jit.ScriptModule)
        return "TorchScript -> TS2EPConverter -> torch.export" if scripted else "torch.export"

    @staticmethod
    def _notes(spec: InputSpec, prep: Any, fp16: bool) -> list[str]:
        notes = [f"int64 input {t.name!r} is int32 in Core AI (the runtime refuses int64)"
                 for t in spec.inputs if t.dtype == "int64"]
        if CoreaiTarget._capture(prep.module) != "torch.export":
            notes.append("TorchScript source: converted to an ExportedProgram by torch's experimental TS2EPConverter "
                         "(torch._export.converter), then exported again with the spec's dynamic dims")
        if any(t.dynamic for t in spec.inputs):
            notes.append(f"dynamic dims are '?' in the program; their declared ranges are in the metadata "
                         f"({RANGES_KEY}) and checked at every case")
        if fp16:
            notes.append("fp16: an fp16 copy of the model was converted (coreai-torch has no precision switch); "
                         "inputs and outputs stay fp32; checked against fp16 tolerances")
        if prep.image is not None:
            notes.append(f"image input {prep.image.input!r}: tensor form (coreai-torch converts tensors only and the "
                         f"runtime has no image inputs off Apple platforms): float raw pixels, mean {prep.image.mean} / "
                         f"std {prep.image.std} applied inside the model, batch as declared")
        if prep.labels:
            notes.append("classifier: Core AI has no classifier outputs; classLabelProbs is a tensor of probabilities "
                         "in label order, the labels are in the metadata (interop.labels)")
        return notes

    def execute(self, path, spec, ref, names, labels=None, image=None):
        why = runtime.unavailable(convert=False)
        if why:
            yield runtime.RUNTIME, None, f"{why} ({runtime.INSTALL_HINT})"
            return
        try:
            got = run_all(Path(path), spec, ref, names)
        except Exception as exc:  # a damaged asset, a runtime error: reported, never a pass
            yield runtime.RUNTIME, None, str(exc) if isinstance(exc, InteropError) else first_line(exc)
            return
        yield runtime.RUNTIME, got, None

    def metadata(self, path: Path) -> dict[str, str]:
        try:
            return metadata(path)
        except Exception:
            return {}

    def inspect(self, path: Path) -> dict[str, Any]:
        return inspect_aimodel(path)

    def bench(self, path, spec, sample, warmup, runs, slow_runs, threads, report=None, compare_unsimplified=True):
        from interop.support.timing import measure

        out: dict[str, Any] = {"path": str(path)}
        why = runtime.unavailable(convert=False)
        if why:
            out[runtime.RUNTIME] = {"skipped": f"{why} ({runtime.INSTALL_HINT})"}
            return out
        given = feed(spec, sample)
        try:
            with runtime.Session(Path(path)) as session:
                out[runtime.RUNTIME] = measure(lambda: session.run(given), warmup, runs).to_json()
        except Exception as exc:
            out[runtime.RUNTIME] = {"skipped": f"cannot run: {first_line(exc)}"}
        return out
