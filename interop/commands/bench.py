"""`interop bench ARTIFACT`: how fast the built artifacts run, on this machine.

* ONNX Runtime (CPU): latency of the built ``.onnx`` after warm-up runs (p50, p90, mean, min),
  next to the *unsimplified* export. A build keeps only the final model (and the node counts
  before and after onnxsim in its report), so the unsimplified export is re-made here: the
  report's source model is prepared exactly as the build prepared it and exported again with the
  exporter and opset the report records. Its node count is checked against the report's
  ``nodes_before``; a difference is reported, never hidden. When the build kept the unsimplified
  model (onnxsim failed or changed numerics) the built model *is* that export and nothing is re-made.
* Core ML: the real framework's latency on macOS; everywhere, the time per sample of interop's Core
  ML reference runtime (``interop.runtimes.mil``, an op-by-op interpreter: a correctness tool, far
  slower than Core ML).
* PyTorch: the source model's time per sample, when the unsimplified export loaded it anyway.

Every latency runs the same input: the example case's first seeded sample (the build's seed).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interop.errors import LoadError
from interop.support.timing import Latency, measure, percentile  # noqa: F401  (moved; importable here too)

REPORT_SUFFIX = ".report.json"


# --- what to benchmark ---------------------------------------------------------------------------


@dataclass
class Subject:
    """The artifacts to time (by target name) and what is known about how they were built."""

    report: dict[str, Any] | None
    report_path: Path | None
    artifacts: dict[str, Path]
    trust: bool = False  # bench's own --trust (re-exporting the source may load code); never the report's


def locate(path_text: str) -> Subject:
    """ARTIFACT is a build's ``.report.json`` or one of its artifacts; the other artifacts and
    the report are found beside it by stem."""
    from interop import targets

    path = Path(path_text)
    if not path.exists():
        raise LoadError(f"{path} does not exist", hint="pass a built artifact or a .report.json from interop build")
    subject = _locate(path, targets)
    from interop import trust

    for artifact in subject.artifacts.values():
        trust.check_artifact(artifact)  # read only inside each artifact (external data, package links)
    return subject


def _locate(path: Path, targets: Any) -> Subject:
    from interop.stages.outdir import recover_folder

    recover_folder(path.parent)
    if path.name.endswith(REPORT_SUFFIX):
        report = _read_report(path)
        stem = path.name[: -len(REPORT_SUFFIX)]
        found = {n: _artifact(report, n, path.parent / f"{stem}{t.suffix}") for n, t in targets.registered().items()}
        return Subject(report, path, {n: p for n, p in found.items() if p is not None})
    owner = targets.for_path(path)
    if owner is None:
        kinds = ", ".join(t.suffix for t in targets.registered().values())
        raise LoadError(f"{path} is not a built artifact ({kinds}) or a .report.json", hint="pass a built artifact")
    stem = path.name[: -len(owner.suffix)]
    sibling = path.with_name(stem + REPORT_SUFFIX)
    report = _read_report(sibling) if sibling.exists() else None
    found = {n: (path if n == owner.name else _existing(path.with_name(stem + t.suffix)))
             for n, t in targets.registered().items()}
    return Subject(report, sibling if report else None, {n: p for n, p in found.items() if p is not None})


def _read_report(path: Path) -> dict[str, Any]:
    from interop.commands.verify import check_report

    from interop.support import safe_io

    data = safe_io.read_json(path, "report", hint="pass the .report.json written by interop build")
    try:
        check_report(data)  # the keys bench uses, with their types
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LoadError(f"{path} is not an interop report ({type(exc).__name__})",
                        hint="pass the .report.json written by interop build") from exc
    return data


def _artifact(report: dict[str, Any], target: str, beside: Path) -> Path | None:
    recorded = (report["targets"].get(target) or {}).get("path")
    for candidate in (Path(recorded) if recorded else None, beside):
        if candidate is not None and candidate.exists():
            return candidate
    return None


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def input_spec(subject: Subject) -> Any:
    """The build's input spec: from the report, else from an artifact's ``interop.spec``
    metadata (every interop artifact carries it)."""
    from interop import targets
    from interop.errors import SpecError
    from interop.stages.spec import InputSpec

    if subject.report is not None:
        return InputSpec.from_json({"inputs": subject.report["inputs"]})
    for name, path in subject.artifacts.items():
        meta = targets.get(name).metadata(path)
        if "interop.spec" in meta:
            return InputSpec.from_json(json.loads(meta["interop.spec"]))
    raise SpecError("the artifact carries no interop input spec and no report is beside it",
                    hint="bench artifacts built by interop (keep <stem>.report.json beside them)")


def example_sample(spec: Any, seed: int) -> dict[str, Any]:
    """The example case's first sample, as the build drew it."""
    from interop.stages.samples import example_sample as first

    return first(spec, seed)


# --- the runtimes (each target's own in targets/<name>/bench.py) -----------------------------


def bench_torch(prep: Any, spec: Any, sample: dict[str, Any], warmup: int, runs: int) -> dict[str, Any]:
    import torch

    from interop.runtimes.torch_ref import to_torch

    args = to_torch(sample, spec.names())
    with torch.no_grad():
        return measure(lambda: prep.module(*args), warmup, runs).to_json()


# --- the command ---------------------------------------------------------------------------------


def bench(artifact: str, warmup: int = 10, runs: int = 100, slow_runs: int = 5, threads: int | None = None,
          compare_unsimplified: bool = True, trust: bool = False) -> dict[str, Any]:
    """Time the artifacts of one build; returns a JSON-able result (see the module doc). ``trust``
    lets the re-export load a source that runs code (bench's own --trust; a report never grants it)."""
    from interop.errors import SpecError

    if runs < 1 or warmup < 0 or slow_runs < 1:
        raise SpecError("--runs and --slow-runs must be at least 1, --warmup at least 0", hint="e.g. --runs 100")
    subject = locate(artifact)
    subject.trust = trust
    spec = input_spec(subject)
    seed = int(((subject.report or {}).get("settings") or {}).get("seed", 0))
    sample = example_sample(spec, seed)
    result: dict[str, Any] = {
        "artifact": artifact, "report": str(subject.report_path) if subject.report_path else None,
        "platform": f"{platform.system()} {platform.machine()}", "threads": threads or "onnxruntime default",
        "input": {n: list(v.shape) for n, v in sample.items()},
    }
    prep = None
    from interop import targets

    for name, path in subject.artifacts.items():
        target = targets.get(name)
        out = target.bench(path, spec, sample, warmup, runs, slow_runs, threads, report=subject,
                           compare_unsimplified=compare_unsimplified)
        prep = out.pop("_prep", None) or prep
        result[name] = out
    if prep is not None:
        result["pytorch"] = bench_torch(prep, spec, sample, warmup, runs)
    from interop.variants.recheck import bench_variants  # compressed variants (--compress)

    result["variants"] = bench_variants(subject, spec, sample, warmup, runs, slow_runs, threads)
    if not subject.artifacts:
        raise LoadError(f"no artifacts found for {artifact}", hint="the report lists none that exist; rebuild")
    return result


def render(result: dict[str, Any]) -> None:
    """A short table on stdout, notes under it."""
    from rich.console import Console
    from rich.table import Table

    shapes = ", ".join(f"{n}{v}" for n, v in result["input"].items())
    table = Table(title=f"latency on {result['platform']}, input {shapes}")
    for col in ("runtime", "model", "p50 ms", "p90 ms", "mean ms", "runs"):
        table.add_column(col, justify="right" if col.endswith(("ms", "runs")) else "left")
    notes: list[str] = []

    def row(runtime: str, model: str, lat: dict[str, Any], note: str = "") -> None:
        if note or "skipped" in lat:
            notes.append(f"{runtime} {model}: {lat.get('skipped') or note}")
        if "p50_ms" not in lat:
            table.add_row(runtime, model, "-", "-", "-", "-")
            return
        table.add_row(runtime, model, f"{lat['p50_ms']:.3f}", f"{lat['p90_ms']:.3f}", f"{lat['mean_ms']:.3f}",
                      str(lat["runs"]))

    from interop import targets

    registered = targets.registered()
    for name, value in result.items():  # each target's own rows (Target.bench_rows), then its variants'
        if name in registered and isinstance(value, dict):
            for runtime, model, lat, note in registered[name].bench_rows(value, "built"):
                row(runtime, model, lat, note)
    for key, value in (result.get("variants") or {}).items():
        owner = registered.get(key.split(":", 1)[0])
        if owner is not None:
            for runtime, model, lat, note in owner.bench_rows(value, f"{key}, {value['ratio']}x size"):
                row(runtime, model, lat, note)
    if "pytorch" in result:
        row("pytorch", "source model", result["pytorch"])
    console = Console()
    console.print(table)
    notes[:0] = [n for name, value in result.items() if name in registered and isinstance(value, dict)
                 for n in registered[name].bench_notes(value)]
    for note in notes:
        console.print(f"  {note}", highlight=False, soft_wrap=True)
