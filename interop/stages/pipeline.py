"""The build, as one flat sequence: load -> spec -> reference -> ONNX -> Core ML -> agreement
-> report, assembled in a temporary folder inside ``--out`` and moved into place at the end."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from interop import __version__
from interop.settings import BuildConfig, resolve
from interop.errors import ExportError
from interop import sources
from interop.sources.torch_files import Source
from interop.support.memory import release
from interop.stages.outdir import OutputFolder
from interop.stages.prepare import Prepared, prepare
from interop.support.progress import stage
from interop.report import Report
from interop.stages.spec import InputSpec
from interop.targets.base import TargetContext


def build(config: BuildConfig) -> Report:
    """Run the whole job; returns the report (``report.passed`` decides the exit code)."""
    config = resolve(config)  # flag > --config > interop.toml beside the model > default, validated
    kind = sources.for_model(config.model)
    own = kind.build(config)  # a source with its own pipeline
    if own is not None:
        return own
    folder = OutputFolder.for_model(config.model, config.out)
    folder.stem = kind.artifact_stem(folder.stem)  # an .onnx source never overwrites itself
    stage("loading the model")
    source = kind.load(config.model, config.factory, config.trust)
    spec = kind.resolve_spec(config, source)
    stage("running PyTorch on the sample inputs and tracing")
    prep = prepare(config, source, spec)
    with folder.session() as work:
        return _build_in(config, source, spec, folder, work, prep)


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
    if prep.conversion is not None:
        report.data["conversion"] = prep.conversion
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
    problem = ctx.prep.conversion_problem
    if problem and not target.uses_source_file(ctx):
        report.target_failed(target.name, f"not built: {problem}", 0.0)
        return
    fixed = ctx.prep.static is not None and not target.uses_source_file(ctx)
    if fixed:  # a converted graph whose shapes are computed at run time: the example shapes only
        ctx = dataclasses.replace(ctx, spec=ctx.prep.static_spec, prep=ctx.prep.static)
    try:
        result = target.build(ctx)
    except ExportError as exc:
        report.target_failed(target.name, str(exc), time.perf_counter() - started)
        return
    if fixed:
        note = (f"{target.name}: FIXED input shapes (the example case only): the ONNX graph computes shapes at run "
                f"time, which neither torch.jit.trace nor torch.export can keep flexible "
                f"({ctx.prep.static_reason[:200]}); the ONNX artifact keeps its dynamic axes")
        result.entry.setdefault("notes", []).append(note)
        result.entry["declared_shapes"] = "fixed"
        report.data["warnings"].append(note)
    report.target_built(target.name, result, time.perf_counter() - started)


def metadata(config: BuildConfig, source: Source, spec: InputSpec, prep: Prepared) -> dict[str, Any]:
    return {"author": config.author, "license": config.license, "description": config.description,
            "version": config.version, "interop.version": __version__, "interop.source_sha256": source.sha256,
            "interop.source": Path(source.path).name, "interop.spec": spec.to_json(), "interop.labels": prep.labels,
            "interop.image": prep.image.to_json() if prep.image else None}
