"""The build, as one flat sequence: load -> spec -> reference -> ONNX -> Core ML -> agreement
-> report, assembled in a temporary folder inside ``--out`` and moved into place at the end."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from interop._version import __version__
from interop.settings import BuildConfig, resolve
from interop.errors import ExportError, SpecError
from interop import sources
from interop.sources.torch_files import Source
from interop.support.limits import check_sample_count
from interop.stages.front import front_end
from interop.support.memory import release
from interop.stages.outdir import OutputFolder
from interop.stages.prepare import Prepared
from interop.support.progress import stage
from interop.report import Report
from interop.stages.spec import InputSpec
from interop.targets.base import TargetContext


def build(config: BuildConfig) -> Report:
    """Run the whole job; returns the report (``report.passed`` decides the exit code)."""
    config = resolve(config)  # flag > --config > interop.toml beside the model > default, validated
    check_sample_count(config.num_samples)
    kind = sources.for_model(config.model)
    folder = OutputFolder.for_model(config.model, config.out)  # a read-only --out fails here, first
    folder.stem = kind.artifact_stem(folder.stem)  # an .onnx source never overwrites itself
    _absolute_inputs(config)
    front = front_end(config, kind)
    if front.task.own_build:  # e.g. text-generation: its own build and report
        return front.task.build(config, front.source)
    with folder.session() as work:
        return _build_in(config, front.source, front.spec, folder, work, front.prep)


def _absolute_inputs(config: BuildConfig) -> None:
    """Files the report names (samples, labels) as absolute paths, so verify finds them from any
    folder; FIFOs and devices are refused before anything reads them."""
    from interop.trust import regular_file

    for key, what in (("samples", "samples file"), ("labels", "labels file"), ("calibration", "calibration file")):
        value = getattr(config, key)
        if value:
            if os.path.lexists(value):
                regular_file(value, what)
            setattr(config, key, os.path.abspath(value))




def _build_in(config: BuildConfig, source: Source, spec: InputSpec, folder: "OutputFolder", work: Path,
              prep: Prepared) -> Report:
    from interop import targets

    chosen = targets.selected(config.targets)
    report = Report.start(config, source, spec, prep.names, prep.ref, prep.cases,
                          target_names=_report_targets(chosen))
    meta = metadata(config, source, spec, prep)
    for hazard in prep.hazards:  # blocking ones only get here with --allow-trace-warnings
        kind = ("trace hazard (allowed)" if hazard.blocking else "trace warning on a static size" if hazard.shape_only
                else "trace warning in library code (the trace agreed with the model on every case)")
        report.data["warnings"].append(f"{kind}: {hazard.line()}")
    report.data["warnings"].extend(getattr(prep, "notes", []))
    ctx = TargetContext(config, source, spec, prep, work, folder.work_stem, meta, report)
    for target in chosen:
        run_target(target, ctx, report)
        release()
    if prep.conversion is not None:
        report.data["conversion"] = prep.conversion
    from interop.sources.hf_folder import ship_folder_files  # a model folder's config and tokenizer beside the ONNX

    ship_folder_files(source, work, folder.folder, report)
    report.add_noise(prep.noise)
    report.finish()
    from interop.variants.build import build_variants  # --compress: variants of the targets that passed

    build_variants(ctx, report, chosen)
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
        _raise_if_out_of_room(str(exc))
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


_OUT_OF_ROOM = ("[Errno 28]", "[Errno 27]", "[Errno 122]", "[Errno 30]")  # ENOSPC EFBIG EDQUOT EROFS


def _raise_if_out_of_room(message: str) -> None:
    """A target that failed because the machine refused a write (disk full, file-size limit,
    quota, read-only) did not fail on the model: the build stops (exit 2) and commits nothing."""
    for code in _OUT_OF_ROOM:
        if code in message:
            detail = message[message.index(code):].split(";")[0].split(")")[0]
            raise SpecError(f"the machine refused a write during the build ({detail})",
                            hint="free disk space or raise the file-size limit, or pass another --out; "
                                 "previous artifacts are untouched")


def metadata(config: BuildConfig, source: Source, spec: InputSpec, prep: Prepared) -> dict[str, Any]:
    card = getattr(source, "card", None) or {}  # a model folder's model card (sources/hf_ship.py)
    return {"author": config.author, "license": config.license or card.get("license"),
            "description": config.description or card.get("description"),
            "version": config.version, "interop.version": __version__, "interop.source_sha256": source.sha256,
            "interop.source": Path(source.path).name, "interop.spec": spec.to_json(), "interop.labels": prep.labels,
            "interop.image": prep.image.to_json() if prep.image else None}
