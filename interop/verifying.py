"""`interop verify REPORT.json`: re-run the agreement checks of the artifacts a report lists,
against its source model — catches artifacts edited or corrupted since the build."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from .config import BuildConfig
from .errors import SpecError
from .loading import load_source
from .report import Report
from .spec import InputSpec


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
    from .pipeline import _diffs, coreml_runs
    from .prepare import prepare
    from .runtimes.onnxruntime import run_onnx, session

    old = _read(path)
    settings = old["settings"]
    config = BuildConfig(model=old["model"]["source"], seed=settings["seed"], num_samples=settings["num_samples"],
                         precision=settings["precision"], tolerance=settings["tolerance"],
                         samples=settings.get("samples"), factory=settings.get("factory"), trust=settings.get("trust", False),
                         image=settings.get("image"), mean=settings.get("mean"), std=settings.get("std"),
                         pixel_scale=settings.get("pixel_scale"), labels=settings.get("labels"))
    source = load_source(config.model, factory=config.factory, trust=config.trust)
    spec = InputSpec.from_json({"inputs": old["inputs"], "outputs": settings["output_names"]})
    spec.output_names = [n for n in settings["output_names"] if n != "classLabelProbs"] or spec.output_names
    prep = prepare(config, source, spec)
    names, ref, all_cases = prep.names, prep.ref, prep.cases
    report = Report.start(config, source, spec, names, ref, all_cases)
    report.data["targets"] = copy.deepcopy(old["targets"])
    if source.sha256 != old["model"].get("sha256"):
        report.data["warnings"].append("the source model changed since the build (sha256 differs)")
    for target, entry in report.data["targets"].items():
        entry["executed_by"] = []
        artifact = entry.get("path")
        if entry.get("status") != "ok":
            continue
        if not artifact or not Path(artifact).exists():
            entry["status"] = "failed"
            entry["error"] = f"artifact {artifact} is missing"
            continue
        if target == "onnx":
            try:
                sess = session(artifact)
                got = {c: [run_onnx(sess, s) for s in ref.samples[c]] for c in ref.samples}
            except Exception as exc:
                entry["status"], entry["error"] = "failed", f"ONNX Runtime cannot run it: {type(exc).__name__}: {exc}"
                continue
            report.add_agreement(_diffs("onnx", "onnxruntime", ref, got, names, "fp32", config))
        else:
            for runtime, got, problem in coreml_runs(Path(artifact), spec, ref, names, prep.labels):
                if problem:
                    report.not_executed("coreml", runtime, problem)
                else:
                    report.add_agreement(_diffs("coreml", runtime, ref, got, names, config.precision, config))
    report.finish()
    return report
