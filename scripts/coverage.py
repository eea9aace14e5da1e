"""Coverage of the model zoo (tests/zoo.py): interop vs the raw recipe, written to docs/coverage.md.

    python scripts/coverage.py                      # the whole zoo, both columns (~20 min on 2 cores)
    python scripts/coverage.py --only bert gpt2     # some models (the doc then lists only those)

For every zoo model, each in its own subprocess with a timeout and one torch thread:

* **interop**: ``interop.build`` with the model's spec (both targets, default settings).
* **raw recipe**: what a tutorial does, by hand, without checks: ``torch.onnx.export`` with
  torch's default exporter and the user's ``dynamic_axes``, ``onnxsim.simplify``, then
  ``torch.jit.trace`` + ``coremltools.convert`` (ML program, ``RangeDim`` for dynamic axes), no
  interop patches. Its artifacts are then *checked afterwards* with interop's runtimes (ONNX
  Runtime; the Core ML reference runtime) on the same cases and tolerances interop uses, so
  "produced" and "correct" can be told apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "coverage.md"
TIMEOUT = 900


# --- workers (run in a subprocess each) ---------------------------------------------------------


def _quiet_torch() -> None:
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")


def worker_interop(name: str, folder: Path) -> dict[str, Any]:
    from interop import build
    from tests import zoo

    _quiet_torch()
    started = time.perf_counter()
    data = build(zoo.ZOO[name].config(out=str(folder))).data
    seconds = time.perf_counter() - started
    onnx_t, coreml_t = data["targets"]["onnx"], data["targets"]["coreml"]
    return {
        "passed": data["passed"], "seconds": seconds,
        "onnx": {"status": onnx_t["status"], "exporter": onnx_t.get("exporter"), "error": onnx_t.get("error"),
                 "rejected": onnx_t.get("rejected", []), "agreement": _agreement(data["agreement"], "onnx")},
        "coreml": {"status": coreml_t["status"], "capture": coreml_t.get("capture"), "error": coreml_t.get("error"),
                   "rejected": coreml_t.get("rejected", []), "not_executed": coreml_t.get("not_executed", []),
                   "agreement": _agreement(data["agreement"], "coreml")},
        "cases": [c["name"] for c in data["cases"]],
    }


def _agreement(rows: list[dict[str, Any]], target: str) -> dict[str, Any]:
    rows = [r for r in rows if r["target"] == target]
    cases = sorted({r["case"] for r in rows})
    failed = sorted({r["case"] for r in rows if not r["passed"]})
    worst = max((float(r["rel_l2"]) for r in rows), default=None)
    return {"cases": cases, "failed": failed, "worst_rel_l2": worst}


def worker_raw(name: str, folder: Path) -> dict[str, Any]:
    """The raw recipe (no checks, no interop patches), then a check of what it produced."""
    import torch

    from interop.stages.spec import InputSpec, apply_dynamic, cases, make_sample, parse_dynamic, parse_input
    from tests import zoo

    _quiet_torch()
    module, inputs, dynamic = zoo.ZOO[name]()
    spec = InputSpec([parse_input(t) for t in inputs])
    for text in dynamic:
        apply_dynamic(spec, *parse_dynamic(text))
    example = make_sample(spec, cases(spec)[0], seed=0)
    args = tuple(torch.from_numpy(example[t.name]) for t in spec.inputs)
    out: dict[str, Any] = {}
    started = time.perf_counter()
    out["onnx"] = _raw_onnx(module, args, spec, folder / "raw.onnx")
    out["coreml"] = _raw_coreml(module, args, spec, folder / "raw.mlpackage")
    out["seconds"] = time.perf_counter() - started
    _check_raw(module, spec, out, folder)
    return out


def _raw_onnx(module: Any, args: tuple, spec: Any, path: Path) -> dict[str, Any]:
    import onnx
    import onnxsim
    import torch

    axes = {t.name: {a: d.name for a, d in t.dynamic.items()} for t in spec.inputs if t.dynamic}
    try:
        torch.onnx.export(module, args, str(path), input_names=spec.names(), dynamic_axes=axes or None)
    except Exception as exc:
        return {"status": "failed", "error": f"torch.onnx.export: {_first(exc)}"}
    try:
        simplified, _ = onnxsim.simplify(onnx.load(str(path)))
        onnx.save(simplified, str(path))
    except Exception as exc:
        return {"status": "failed", "error": f"onnxsim: {_first(exc)}"}
    return {"status": "ok", "path": str(path)}


def _raw_coreml(module: Any, args: tuple, spec: Any, path: Path) -> dict[str, Any]:
    import coremltools as ct
    import numpy as np
    import torch

    try:
        with torch.no_grad():
            traced = torch.jit.trace(module, args)
        types = [ct.TensorType(name=t.name, dtype=np.int32 if t.dtype.startswith("int") else np.float32,
                               shape=ct.Shape([ct.RangeDim(t.dynamic[a].min, t.dynamic[a].max, default=s)
                                               if a in t.dynamic else s for a, s in enumerate(t.shape)]))
                 for t in spec.inputs]
        model = ct.convert(traced, inputs=types, convert_to="mlprogram")
        model.save(str(path))
    except Exception as exc:
        return {"status": "failed", "error": f"coremltools: {_first(exc)}"}
    return {"status": "ok", "path": str(path)}


def _check_raw(module: Any, spec: Any, out: dict[str, Any], folder: Path) -> None:
    """Run the raw artifacts on interop's cases (one seeded sample each) against PyTorch, and
    check the ONNX model's declared output shapes against what it returns."""
    import numpy as np
    import onnx

    from interop.compare import compare_output, tolerance_for
    from interop.runtimes.torch_ref import run_torch
    from interop.stages.spec import cases, make_sample
    from interop.stages.outputs import flat_module
    from interop.targets.onnx.target import check_declared_shapes

    flat = flat_module(module)
    declared = onnx.load(out["onnx"]["path"], load_external_data=False) if out["onnx"]["status"] == "ok" else None
    runs = {}
    if out["onnx"]["status"] == "ok":
        runs["onnx"] = (_onnx_runner(out["onnx"]["path"]), "fp32")
    if out["coreml"]["status"] == "ok":
        runs["coreml"] = (_coreml_runner(out["coreml"]["path"], spec), "fp16")
    for target, (run, precision) in runs.items():
        rows = []
        for case in cases(spec):
            sample = make_sample(spec, case, seed=1)
            ref = run_torch(flat, sample, spec.names())
            try:
                got = run(sample)
                if target == "onnx":  # a declared shape that lies (e.g. a batch of 1 baked in) is wrong too
                    check_declared_shapes(declared, [np.asarray(g).shape for g in got])
            except Exception as exc:
                rows.append({"case": case.name, "passed": False, "rel_l2": float("inf"), "note": _first(exc)})
                continue
            for i, r in enumerate(ref):
                g = np.asarray(got[i]) if i < len(got) else np.zeros(0)
                d = compare_output(r, g, tolerance_for(precision, "x"), target=target, runtime="", case=case.name,
                                   output=str(i))
                rows.append({"case": case.name, "passed": d.passed, "rel_l2": d.rel_l2, "note": d.note})
        out[target]["agreement"] = {"cases": sorted({r["case"] for r in rows}),
                                    "failed": sorted({r["case"] for r in rows if not r["passed"]}),
                                    "worst_rel_l2": max(float(r["rel_l2"]) for r in rows),
                                    "notes": sorted({r["note"] for r in rows if r["note"] and not r["passed"]})[:2]}


def _onnx_runner(path: str):
    from interop.runtimes.onnxruntime import run_onnx, session

    sess = session(path)
    return lambda sample: run_onnx(sess, sample)


def _coreml_runner(path: str, spec: Any):
    import coremltools as ct
    import numpy as np

    from interop.runtimes import mil

    loaded = mil.load_model(path)
    names = [o.name for o in ct.utils.load_spec(path).description.output]

    def run(sample):
        feed = {t.name: sample[t.name].astype(np.int32) if t.dtype.startswith("int") else sample[t.name]
                for t in spec.inputs}
        result = loaded.predict(feed)
        return [result[n] for n in names]

    return run


def _first(exc: BaseException) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # exporter messages carry terminal colours
    text = (text.splitlines() or [""])[0].split(" — ")[0]  # interop errors: drop the hint
    return f"{type(exc).__name__}: {text[:200]}"


# --- driver ------------------------------------------------------------------------------------


def run_worker(kind: str, name: str, timeout: int) -> dict[str, Any]:
    """One worker in a subprocess; its result, or why it has none."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory(prefix=f"coverage-{kind}-{name}-") as tmp:
        result = Path(tmp) / "result.json"
        started = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--worker", kind, name, tmp], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"crashed": f"timed out after {timeout} s", "seconds": timeout}
        if not result.exists():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
            return {"crashed": f"exit code {proc.returncode}: {tail}", "seconds": time.perf_counter() - started}
        return json.loads(result.read_text())


def _generated_sections(path: Path) -> str:
    """The sections other scripts write into the same page, between ``<!-- NAME:begin -->`` and
    ``<!-- NAME:end -->`` (ONNX sources, Core AI, check vs build), kept as they are."""
    import re

    text = path.read_text() if path.exists() else ""
    kept = [m.group(0) for m in re.finditer(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->", text, re.S)]
    return "".join("\n" + block + "\n" for block in kept)


def main() -> None:
    from tests import zoo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="zoo models to run (default: all)")
    parser.add_argument("--timeout", type=int, default=TIMEOUT, help="seconds per model and recipe")
    parser.add_argument("--out", default=str(DOC), help="the Markdown file to write")
    parser.add_argument("--json", help="also write the raw results as JSON here")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        kind, name, folder = opts.worker
        result = (worker_interop if kind == "interop" else worker_raw)(name, Path(folder))
        (Path(folder) / "result.json").write_text(json.dumps(result, default=str))
        return
    names = opts.only or list(zoo.ZOO)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        results[name] = {kind: run_worker(kind, name, opts.timeout) for kind in ("interop", "raw")}
        print(f"{name:16s} {_line(results[name])}", flush=True)
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=1, default=str))
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(render(results, zoo.ZOO) + _generated_sections(Path(opts.out)))
    print(f"wrote {opts.out}")


def _line(result: dict[str, Any]) -> str:
    i, r = result["interop"], result["raw"]
    return (f"interop {'PASSED' if i.get('passed') else 'FAILED'} ({i.get('seconds', 0):.0f} s)   "
            f"raw {'produced' if _raw_produced(r) else 'failed'}, {'correct' if _raw_correct(r) else 'not correct'}")


# --- the document ------------------------------------------------------------------------------


def _raw_produced(r: dict[str, Any]) -> bool:
    return "crashed" not in r and r["onnx"]["status"] == "ok" and r["coreml"]["status"] == "ok"


def _raw_correct(r: dict[str, Any]) -> bool:
    return _raw_produced(r) and all(not r[t]["agreement"]["failed"] for t in ("onnx", "coreml"))


def _agreement_cell(t: dict[str, Any]) -> str:
    a = t.get("agreement")
    if t.get("status") != "ok":
        return "—"
    if t.get("not_executed"):
        return "not executed: " + t["not_executed"][0]["why"][:80]
    if not a or not a["cases"]:
        return "not checked"
    ok = len(a["cases"]) - len(a["failed"])
    mark = "✓" if not a["failed"] else "✗"
    worst = f", worst rel_l2 {a['worst_rel_l2']:.0e}" if a["worst_rel_l2"] is not None else ""
    failed = f" (fails at {', '.join(a['failed'])})" if a["failed"] else ""
    return f"{mark} {ok}/{len(a['cases'])} cases{worst}{failed}"


def _interop_cells(i: dict[str, Any]) -> list[str]:
    if "crashed" in i:
        return ["crashed: " + i["crashed"], "—", "—", "—", f"{i['seconds']:.0f}"]
    onnx_t, coreml_t = i["onnx"], i["coreml"]
    exporter = onnx_t["exporter"] or f"failed: {onnx_t['error'][:80]}"
    if onnx_t.get("rejected"):
        exporter += f" (after {', '.join(r['exporter'] for r in onnx_t['rejected'])})"
    capture = coreml_t["capture"] or f"failed: {(coreml_t['error'] or '')[:80]}"
    if coreml_t.get("rejected"):
        capture += f" (after {', '.join(r['path'] for r in coreml_t['rejected'])})"
    return [exporter, capture, _agreement_cell(onnx_t), _agreement_cell(coreml_t), f"{i['seconds']:.0f}"]


def _raw_cells(r: dict[str, Any]) -> list[str]:
    if "crashed" in r:
        return ["crashed: " + r["crashed"], "—", f"{r['seconds']:.0f}"]
    cells = []
    for t in ("onnx", "coreml"):
        cells.append(_agreement_cell(r[t]) if r[t]["status"] == "ok" else f"failed: {r[t]['error'][:90]}")
    return cells + [f"{r['seconds']:.0f}"]


def render(results: dict[str, dict[str, Any]], entries: dict[str, Any]) -> str:
    n = len(results)
    interop_ok = sum(1 for v in results.values() if v["interop"].get("passed"))
    raw_produced = sum(1 for v in results.values() if _raw_produced(v["raw"]))
    raw_correct = sum(1 for v in results.values() if _raw_correct(v["raw"]))
    lines = [
        "# Model zoo coverage", "",
        "Generated by `python scripts/coverage.py` (do not edit by hand). Every model of `tests/zoo.py` — "
        "small configs, seeded random weights, a dynamic batch axis on every model and a dynamic sequence axis "
        "where the architecture has one — built by interop, and by the raw recipe: `torch.onnx.export` "
        "(torch's default exporter, the user's `dynamic_axes`) + onnxsim, `torch.jit.trace` + "
        "`coremltools.convert`, without checks. The raw artifacts are then run on the same cases as interop's "
        "(the example size and another size of every dynamic axis) with the same tolerances "
        "(ONNX fp32: rel_l2 ≤ 1e-4; Core ML fp16: rel_l2 ≤ 1e-2).", "",
        "## Success rates", "",
        "| | models | rate |", "|---|---|---|",
        f"| interop: both artifacts built and agree with PyTorch at every case | {interop_ok}/{n} | "
        f"{interop_ok / n:.0%} |",
        f"| raw recipe: both artifacts produced | {raw_produced}/{n} | {raw_produced / n:.0%} |",
        f"| raw recipe: both artifacts produced and correct at every case | {raw_correct}/{n} | "
        f"{raw_correct / n:.0%} |", "",
        "## interop", "",
        "| model | ONNX exporter | Core ML path | ONNX agreement | Core ML agreement | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in results.items():
        lines.append(f"| {name} | " + " | ".join(_interop_cells(v["interop"])) + " |")
    settings = ["{}: {}".format(name, ", ".join(f"{k}={val}" for k, val in entries[name].options))
                for name in results if entries[name].options]
    lines += ["", f"Settings beyond the spec: {'; '.join(settings)}." if settings else "No model needs settings "
              "beyond its input spec.", ""]
    lines += ["## raw recipe", "",
              "| model | ONNX (torch default exporter + onnxsim), checked afterwards | "
              "Core ML (jit.trace + coremltools), checked afterwards | seconds |",
              "|---|---|---|---|"]
    for name, v in results.items():
        lines.append(f"| {name} | " + " | ".join(_raw_cells(v["raw"])) + " |")
    lines += ["", "Why the raw recipe fails where it does (first error or first disagreement):", ""]
    for name, v in results.items():
        r = v["raw"]
        if _raw_correct(r):
            continue
        if "crashed" in r:
            lines.append(f"- **{name}**: {r['crashed']}")
            continue
        why = [f"{t}: {r[t]['error']}" if r[t]["status"] != "ok" else
               f"{t}: wrong at {', '.join(r[t]['agreement']['failed'])}"
               + (f" ({r[t]['agreement']['notes'][0][:160]})" if r[t]['agreement'].get('notes') else "")
               for t in ("onnx", "coreml") if r[t]["status"] != "ok" or r[t]["agreement"]["failed"]]
        lines.append(f"- **{name}**: " + "; ".join(why))
    import platform

    import torch

    lines += ["", f"Measured on {platform.machine()} {platform.system()}, {os.cpu_count()} cores, torch "
              f"{torch.__version__}, one torch thread per model; seconds are wall time per model including "
              "agreement checks.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
