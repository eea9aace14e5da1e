"""`interop verify REPORT.json`: re-run the agreement checks of the artifacts a report lists,
against its source model — catches artifacts edited or corrupted since the build."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from interop.errors import SpecError
from interop.report import Report
from interop.settings import from_report
from interop.stages.front import reload  # noqa: F401  (the front end; importable here as before)


def _read(path: str) -> dict[str, Any]:
    from interop import trust
    from interop.errors import LoadError

    from interop.support import safe_io

    try:  # the one reader: regular file, bounded size and nesting
        data = safe_io.read_json(path, "report")
    except LoadError as exc:
        raise SpecError(exc.message, hint="pass the .report.json written by interop build") from exc
    try:
        check_report(data, verify=True)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{trust.shown(path)} is not an interop report ({type(exc).__name__}: {trust.shown(exc)})",
                        hint="pass the .report.json written by interop build") from exc
    return data


_OPT_STR = (str, type(None))
# every report key verify (and, for targets/inputs, bench) reads, with the types it may hold
_SETTINGS = {"seed": int, "num_samples": int, "precision": str, "tolerance": list, "output_names": list,
             "samples": _OPT_STR, "factory": _OPT_STR, "image": _OPT_STR, "mean": _OPT_STR, "std": _OPT_STR,
             "labels": _OPT_STR, "pixel_scale": (int, float, type(None))}


def check_report(data: Any, verify: bool = False) -> None:
    """A report is data from disk: every key used is checked for its type (TypeError/KeyError
    name the key) before anything acts on it."""
    def need(value: Any, kinds: Any, key: str) -> Any:
        if not isinstance(value, kinds) or isinstance(value, bool) and kinds in (int, (int, float, type(None))):
            raise TypeError(f"{key} is {type(value).__name__}")
        return value

    need(data, dict, "the report")
    for name, entry in need(data.get("targets"), dict, "targets").items():
        need(entry, dict, f"targets.{name}")
        need(entry.get("path"), _OPT_STR, f"targets.{name}.path")
        need(entry.get("status"), _OPT_STR, f"targets.{name}.status")
    for i, item in enumerate(need(data.get("inputs"), list, "inputs")):
        need(item, dict, f"inputs[{i}]")
    if not verify:
        return
    model = need(data.get("model"), dict, "model")
    need(model.get("source"), str, "model.source")
    need(model.get("sha256"), _OPT_STR, "model.sha256")
    settings = need(data.get("settings"), dict, "settings")
    for key, kinds in _SETTINGS.items():
        if key in settings or kinds not in (_OPT_STR, (int, float, type(None))):
            need(settings.get(key), kinds, f"settings.{key}")
    for key in ("tolerance", "output_names"):
        for value in settings[key]:
            need(value, str, f"settings.{key}[]")
    if settings["precision"] not in ("auto", "fp16", "fp32"):
        raise ValueError(f"settings.precision is {settings['precision']!r}")
    if settings["seed"] < 0:
        raise ValueError(f"settings.seed is {settings['seed']}")
    if not 1 <= settings["num_samples"] <= 1000:
        raise ValueError(f"settings.num_samples is {settings['num_samples']} (allowed 1..1000)")


def looser_than_default(texts: list[str]) -> list[str]:
    """The tolerances among ``texts`` that allow more than interop's default for any output they
    name (ONNX is always judged at fp32, so that default is the bar)."""
    from interop.compare import DEFAULT_TOLERANCES, parse_tolerance

    bar = DEFAULT_TOLERANCES["fp32"]
    return [t for t in texts if any(v > bar.get(k, float("inf")) or v != v for k, v in parse_tolerance(t)[1].items())]


def report_tolerance(config: BuildConfig, flags: list[str] | None) -> list[str]:
    """The tolerances verify judges with: the report's that are no looser than the default, plus
    verify's own ``--tolerance``. Returns the report's looser ones the command line did not repeat
    (a report is data: it never loosens verify's verdict by itself)."""
    flags = list(flags or [])
    looser = [t for t in looser_than_default(config.tolerance) if t not in flags]
    config.tolerance = [t for t in config.tolerance if t not in looser and t not in flags] + flags
    return looser


def verify_report(path: str, trust: bool = False, tolerance: list[str] | None = None) -> Report:
    """``trust`` is verify's own ``--trust``: the report's settings never grant it. ``tolerance``:
    verify's own ``--tolerance`` (the only way a tolerance looser than the default applies)."""
    from interop import targets, tasks
    from interop import trust as trust_boundary
    from interop.compare import diffs

    from interop.stages.outdir import recover_folder

    recover_folder(Path(path).parent)  # an interrupted build's move is rolled back before reading
    old = _read(path)
    config = from_report(old, trust, "verify")
    looser = report_tolerance(config, tolerance)
    task = tasks.for_report(config)
    if task.own_build:  # e.g. a language model: the task replays its own check
        return _refuse_looser(task.verify(old, config), looser)
    source, spec, prep = reload(old, config)
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
        trust_boundary.check_artifact(Path(artifact))  # read only inside the artifact (external data, package links)
        ref = target.reference_for(prep, spec)
        for runtime, got, problem in target.execute(Path(artifact), spec, ref, names, prep.labels):
            if problem:
                report.not_executed(name, runtime, problem)
            else:
                report.add_agreement(diffs(name, runtime, ref, got, names, target.precision(config), config.tolerance))
    report.finish()
    from interop.variants.recheck import verify_variants  # the compressed variants the build shipped

    verify_variants(report, old, prep, spec)
    return _refuse_looser(report, looser)


def _refuse_looser(report: Report, looser: list[str]) -> Report:
    """A looser tolerance the report holds and verify's command line did not repeat: verify fails
    (exit 1) naming it, whatever the numbers (the verdict it would reproduce is not interop's)."""
    if looser:
        report.data["passed"] = False
        report.data["warnings"] += [f"the report's tolerance {t} is looser than interop's default, and a report never "
                                    f"loosens verify: pass --tolerance {t} to verify to apply it" for t in looser]
    return report
