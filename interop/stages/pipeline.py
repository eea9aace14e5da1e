"""The build, as one flat sequence: load -> spec -> reference -> ONNX -> Core ML -> agreement
-> report, assembled in a temporary folder inside ``--out`` and moved into place at the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from interop import __version__
from interop.compare import parse_tolerance
from interop.settings import BuildConfig, read_config_file
from interop.errors import ExportError, SpecError
from interop.sources.torch_files import Source, load_source
from interop.support.memory import release
from interop.sources.onnx_file import build_from_onnx, is_onnx
from interop.stages.outdir import OutputFolder
from interop.stages.prepare import Prepared, prepare
from interop.support.progress import stage
from interop.report import Report
from interop.stages.resolve import resolve_spec
from interop.stages.spec import InputSpec
from interop.targets.base import TargetContext


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
    if _generation_task(config, source):
        from interop.generation.build import build_generation

        return build_generation(config, source)
    spec = resolve_spec(config, source)
    stage("running PyTorch on the sample inputs and tracing")
    prep = prepare(config, source, spec)
    with folder.session() as work:
        return _build_in(config, source, spec, folder, work, prep)


def _generation_task(config: BuildConfig, source: Source) -> bool:
    """--task text-generation, or auto-detected for a causal LM when --task is left at auto."""
    from interop.generation.build import TASK, is_causal_lm

    return config.task == TASK or (config.task == "auto" and is_causal_lm(source.module))


def _with_file_defaults(config: BuildConfig, settings: dict[str, Any]) -> BuildConfig:
    """Settings from an interop.toml beside the model fill what the caller left at its default."""
    defaults = BuildConfig()
    for key, value in settings.items():
        if getattr(config, key) == getattr(defaults, key):
            setattr(config, key, value)
    return config


def _check_choices(config: BuildConfig) -> None:
    from interop import targets

    targets.selected(config.targets)  # unknown names are exit 2
    if config.precision not in ("fp16", "fp32"):
        raise SpecError(f"unknown precision {config.precision!r}", hint="use --precision fp16 or fp32")
    choices = (("exporter", config.exporter, ("auto", "torchscript", "dynamo")),
               ("coreml-shapes", config.coreml_shapes, ("range", "enumerated")),
               ("coreml-capture", config.coreml_capture, ("auto", "trace", "export")),
               ("task", config.task, ("auto", "text-generation", "default")))
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
    from interop import targets

    chosen = targets.selected(config.targets)
    report = Report.start(config, source, spec, prep.names, prep.ref, prep.cases,
                          target_names=_report_targets(chosen))
    meta = metadata(config, source, spec, prep)
    for hazard in prep.hazards:  # blocking ones only get here with --allow-trace-warnings
        kind = "trace hazard (allowed)" if hazard.blocking else "trace warning in library code (the trace agreed " \
                                                                "with the model on every case)"
        report.data["warnings"].append(f"{kind}: {hazard.line()}")
    ctx = TargetContext(config, source, spec, prep, work, folder.stem, meta, report)
    for target in chosen:
        run_target(target, ctx, report)
        release()
    report.add_noise(prep.noise)
    report.finish()
    folder.commit(work, report, keep_failed=config.keep_failed, all_or_nothing=config.all_or_nothing)
    return report


def _report_targets(chosen: list[Any]) -> list[str]:
    """The report lists the default targets (as skipped when not asked for) and the chosen ones."""
    from interop import targets

    names = targets.default_names()
    return names + [t.name for t in chosen if t.name not in names]


def run_target(target: Any, ctx: TargetContext, report: Report) -> None:
    """Build one target's artifact and record its result; a target that cannot be built is
    recorded as failed and the others go on."""
    stage(target.stage or f"building {target.name}")
    started = time.perf_counter()
    try:
        result = target.build(ctx)
    except ExportError as exc:
        report.target_failed(target.name, str(exc), time.perf_counter() - started)
        return
    report.target_built(target.name, result, time.perf_counter() - started)


def metadata(config: BuildConfig, source: Source, spec: InputSpec, prep: Prepared) -> dict[str, Any]:
    return {"author": config.author, "license": config.license, "description": config.description,
            "version": config.version, "interop.version": __version__, "interop.source_sha256": source.sha256,
            "interop.source": Path(source.path).name, "interop.spec": spec.to_json(), "interop.labels": prep.labels,
            "interop.image": prep.image.to_json() if prep.image else None}
