"""`interop verify REPORT.json`: re-run the agreement checks of the artifacts a report lists,
against its source model — catches artifacts edited or corrupted since the build."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from interop.settings import BuildConfig
from interop.errors import SpecError
from interop.sources.torch_files import load_source
from interop.report import Report
from interop.stages.spec import InputSpec


def _read(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
        data["model"]["source"], data["inputs"], data["settings"]  # noqa: B018 - the keys verify needs
    except FileNotFoundError as exc:
        raise SpecError(f"report {path} does not exist", hint="pass the .report.json written by interop build") from exc
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path} is not an interop report ({type(exc).__name__}: {exc})",
                        hint="pass the .report.json written by interop build") from exc
    return data


def verify_report(path: str) -> Report:
    from interop import targets
    from interop.compare import diffs
    from interop.stages.prepare import prepare

    old = _read(path)
    settings = old["settings"]
    if settings.get("task") == "text-generation":
        from interop.generation.build import verify_generation

        return verify_generation(old)
    config = BuildConfig(model=old["model"]["source"], seed=settings["seed"], num_samples=settings["num_samples"],
                         precision=settings["precision"], tolerance=settings["tolerance"],
                         samples=settings.get("samples"), factory=settings.get("factory"), trust=settings.get("trust", False),
                         image=settings.get("image"), mean=settings.get("mean"), std=settings.get("std"),
                         pixel_scale=settings.get("pixel_scale"), labels=settings.get("labels"))
    source = load_source(config.model, factory=config.factory, trust=config.trust)
    spec = InputSpec.from_json({"inputs": old["inputs"], "outputs": settings["output_names"]})
    spec.output_names = [n for n in settings["output_names"] if n != "classLabelProbs"] or spec.output_names
    prep = prepare(config, source, spec)
    names = prep.names
    report = Report.start(config, source, spec, names, prep.ref, prep.cases)
    report.data["targets"] = copy.deepcopy(old["targets"])
    if source.sha256 != old["model"].get("sha256"):
        report.data["warnings"].append("the source model changed since the build (sha256 differs)")
    known = targets.registered()
    for name, entry in report.data["targets"].items():
        entry["executed_by"] = []
        artifact = entry.get("path")
        if entry.get("status") != "ok":
            continue
        if name not in known:
            entry["status"], entry["error"] = "failed", f"interop here has no {name!r} target to verify it with"
            continue
        if not artifact or not Path(artifact).exists():
            entry["status"] = "failed"
            entry["error"] = f"artifact {artifact} is missing"
            continue
        target = known[name]
        ref = target.reference_for(prep, spec)
        for runtime, got, problem in target.execute(Path(artifact), spec, ref, names, prep.labels):
            if problem:
                report.not_executed(name, runtime, problem)
            else:
                report.add_agreement(diffs(name, runtime, ref, got, names, target.precision(config), config.tolerance))
    report.finish()
    return report
