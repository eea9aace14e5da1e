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
import math
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from interop.errors import LoadError

REPORT_SUFFIX = ".report.json"


@dataclass
class Latency:
    """Wall-clock milliseconds of ``runs`` timed calls after ``warmup`` untimed ones."""

    warmup: int
    runs: int
    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def measure(run: Callable[[], Any], warmup: int, runs: int, clock: Callable[[], float] = time.perf_counter) -> Latency:
    """Call ``run`` ``warmup`` times untimed, then ``runs`` times timed one by one."""
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = clock()
        run()
        times.append((clock() - start) * 1000)
    return Latency(warmup, runs, percentile(times, 50), percentile(times, 90), sum(times) / len(times), min(times))


# --- what to benchmark ---------------------------------------------------------------------------


@dataclass
class Subject:
    """The artifacts to time (by target name) and what is known about how they were built."""

    report: dict[str, Any] | None
    report_path: Path | None
    artifacts: dict[str, Path]
    trust: bool = False  # bench's own --trust (re-exporting the source may load code); never the report's

    @property
    def onnx(self) -> Path | None:  # kept for callers of the two-target days
        return self.artifacts.get("onnx")

    @property
    def coreml(self) -> Path | None:
        return self.artifacts.get("coreml")


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


def onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise LoadError(f"{path} is not a readable ONNX model ({type(exc).__name__})", hint="rebuild it") from exc
    return {p.key: p.value for p in model.metadata_props}


def coreml_metadata(path: Path) -> dict[str, str]:
    from interop.support.quiet import captured
    from interop.runtimes.mil.loader import _package_paths, _read_spec

    with captured():
        spec = _read_spec(_package_paths(path)[0])
    return dict(spec.description.metadata.userDefined)


def example_sample(spec: Any, seed: int) -> dict[str, Any]:
    """The example case's first sample, as the build drew it."""
    from interop.stages.samples import example_sample as first

    return first(spec, seed)


# --- the runtimes --------------------------------------------------------------------------------


def bench_onnx(path: Path, sample: dict[str, Any], warmup: int, runs: int, threads: int | None) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    started = time.perf_counter()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - started) * 1000
    feeds = {i.name: sample[i.name] for i in sess.get_inputs()}
    latency = measure(lambda: sess.run(None, feeds), warmup, runs)
    nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
    return {"path": str(path), "nodes": nodes, "session_ms": round(load_ms, 2), **latency.to_json()}


def unsimplified(subject: Subject, workdir: Path) -> tuple[Path | None, str, Any]:
    """(path of the unsimplified export or None, a note, the prepared build state or None)."""
    entry = (subject.report or {}).get("targets", {}).get("onnx") or {}
    if subject.report is None:
        return None, "not available: no report beside the artifact (the source model is unknown)", None
    if entry.get("status") != "ok":
        return None, "not available: the build has no ONNX model", None
    if not entry.get("simplified", True):
        return subject.onnx, "the build kept the unsimplified export (see the report's notes): same model", None
    from interop.settings import from_report

    from_report(subject.report, subject.trust, "bench")  # exit 2 when the source runs code and --trust is missing
    try:
        path, prep = _reexport(subject.report, entry, workdir, subject.trust)
    except Exception as exc:  # best effort: reported, never a crash of the benchmark
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return None, f"not available: re-exporting the source failed ({type(exc).__name__}: {first})", None
    import onnx

    nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
    want = entry.get("nodes_before")
    note = f"re-exported from {subject.report['model']['source']} with {entry['exporter']}, opset {entry['opset']}"
    if want is not None and nodes != want:
        note += f"; WARNING: {nodes} nodes, the build's export had {want}"
    return path, note, prep


def _reexport(report: dict[str, Any], entry: dict[str, Any], workdir: Path, trust: bool = False) -> tuple[Path, Any]:
    from interop.commands.verify import reload
    from interop.settings import from_report
    from interop.stages.prepare import output_dims
    from interop.support.quiet import Noise, captured
    from interop.targets.onnx import export_once, name_dims, save

    config = from_report(report, trust, "bench")
    config.num_samples = 1  # only the example sample is timed
    noise = Noise()
    with captured(noise):
        source, spec, prep = reload(report, config)
    raw = workdir / "unsimplified.raw.onnx"
    export_once(entry["exporter"], prep.module, prep.export_args, spec, prep.names, raw, entry["opset"], noise,
                prep.trace)
    import onnx

    model = onnx.load(str(raw))
    name_dims(model, spec, output_dims(spec, prep.ref, prep.cases))
    path = workdir / "unsimplified.onnx"
    save(model, path, "unsimplified.onnx.data")
    return path, prep


def bench_onnx_target(path: Path, spec: Any, sample: dict[str, Any], warmup: int, runs: int, threads: int | None,
                      subject: Any, compare_unsimplified: bool) -> dict[str, Any]:
    """The built ONNX model next to the unsimplified export (see the module doc)."""
    onnx_out: dict[str, Any] = {"built": bench_onnx(path, sample, warmup, runs, threads)}
    with tempfile.TemporaryDirectory(prefix="interop-bench-") as tmp:
        unsimp, note, prep = unsimplified(subject, Path(tmp)) if compare_unsimplified else (None, "not requested", None)
        onnx_out["unsimplified"] = {"note": note}
        if unsimp == path:  # the build kept the unsimplified export: nothing else to time
            onnx_out["unsimplified"].update({k: v for k, v in onnx_out["built"].items() if k != "path"})
        elif unsimp is not None:
            onnx_out["unsimplified"].update(bench_onnx(unsimp, sample, warmup, runs, threads), path=None)
        if unsimp is not None:
            onnx_out["speedup_p50"] = round(onnx_out["unsimplified"]["p50_ms"] / onnx_out["built"]["p50_ms"], 3)
    if prep is not None:
        onnx_out["_prep"] = prep
    return onnx_out


def bench_coreml(path: Path, spec: Any, sample: dict[str, Any], warmup: int, runs: int, slow_runs: int) -> dict[str, Any]:
    """interop-mil's time per sample everywhere; the Core ML framework's latency on macOS."""
    from interop.support.quiet import captured
    from interop.runtimes.coreml import native_available

    feed = _coreml_feed(path, spec, sample)
    out: dict[str, Any] = {"path": str(path)}
    try:
        from interop.runtimes import mil

        with captured():
            loaded = mil.load_model(path)
        out["interop-mil"] = measure(lambda: loaded.predict(feed), min(warmup, 1), slow_runs).to_json()
    except Exception as exc:
        out["interop-mil"] = {"skipped": f"cannot run: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
    if native_available():
        try:
            import coremltools as ct

            model = ct.models.MLModel(str(path))  # Core ML's default compute units (all)
            native = _native_feed(path, feed)
            out["coreml"] = {"compute_units": "all", **measure(lambda: model.predict(native), warmup, runs).to_json()}
        except Exception as exc:
            out["coreml"] = {"skipped": f"Core ML cannot run it: {type(exc).__name__}: {str(exc)[:200]}"}
    else:
        out["coreml"] = {"skipped": f"the Core ML framework runs on macOS only (this is {platform.system()})"}
    return out


def _coreml_feed(path: Path, spec: Any, sample: dict[str, Any]) -> dict[str, Any]:
    """What Core ML is fed: integer inputs as int32; an image input one picture (batch 1)."""
    import numpy as np

    meta = coreml_metadata(path)
    image = json.loads(meta["interop.image"])["input"] if meta.get("interop.image") else None
    feed = {}
    for t in spec.inputs:
        value = sample[t.name]
        if t.dtype.startswith(("int", "uint")):
            value = value.astype(np.int32)
        if t.name == image:
            value = value[:1]
        feed[t.name] = value
    return feed


def _native_feed(path: Path, feed: dict[str, Any]) -> dict[str, Any]:
    """Core ML takes an image input as a picture: (1, C, H, W) pixels -> PIL image."""
    meta = coreml_metadata(path)
    image = json.loads(meta["interop.image"])["input"] if meta.get("interop.image") else None
    if image is None:
        return feed
    import numpy as np
    from PIL import Image

    pixels = np.clip(np.round(feed[image][0]), 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels.transpose(1, 2, 0) if pixels.shape[0] == 3 else pixels[0])
    return {**feed, image: picture}


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

    onnx = result.get("onnx")
    if onnx:
        row("onnxruntime", f"built, {onnx['built']['nodes']} nodes", onnx["built"])
        un = onnx["unsimplified"]
        row("onnxruntime", f"unsimplified, {un['nodes']} nodes" if "nodes" in un else "unsimplified", un, un["note"])
    coreml = result.get("coreml")
    if coreml:
        row("coreml", "built", coreml["coreml"])
        row("interop-mil", "built, per sample", coreml["interop-mil"],
            "" if "skipped" in coreml["interop-mil"] else "Core ML reference runtime: a checker, not a deployment speed")
    for name, value in result.items():  # other targets: one row per runtime they timed
        if name in ("onnx", "coreml", "pytorch", "variants") or not isinstance(value, dict):
            continue
        for runtime, lat in value.items():
            if isinstance(lat, dict) and ("p50_ms" in lat or "skipped" in lat):
                row(runtime, f"{name}, built", lat)
        if "skipped" in value:
            row(name, "built", value)
    for key, value in (result.get("variants") or {}).items():
        if "built" in value:
            row("onnxruntime", f"{key}, {value['ratio']}x size", value["built"])
        for runtime in ("coreml", "interop-mil"):
            if runtime in value:
                row(runtime, f"{key}, {value['ratio']}x size", value[runtime])
    if "pytorch" in result:
        row("pytorch", "source model", result["pytorch"])
    console = Console()
    console.print(table)
    if onnx and "speedup_p50" in onnx:
        notes.insert(0, f"built ONNX model vs the unsimplified export: p50 speed-up {onnx['speedup_p50']:.2f}x "
                        "(above 1: the built model is faster)")
    for note in notes:
        console.print(f"  {note}", highlight=False, soft_wrap=True)
