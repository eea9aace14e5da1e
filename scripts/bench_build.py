#!/usr/bin/env python
"""How long `interop build` takes next to the raw recipe it replaces, model by model.

The raw recipe is what a practitioner writes without interop, with no checks at all:
``torch.onnx.export`` with torch's default exporter (the dynamo exporter in torch >= 2.9) -> onnxsim
-> save, then ``torch.jit.trace`` -> ``coremltools.convert`` (ML program) -> save. Both sides get
the same dynamic axes. ``interop build`` does all of that *and* runs the reference model, checks
the trace, verifies the ONNX model in ONNX Runtime before and after simplification, runs
``onnx.checker``, and executes the Core ML package in the reference runtime.

Each side runs as its own process (``interop build`` through its console script), alternately and
in swapped order every repeat (ABBA), so load drift on a shared machine hits both. Printed per
model: median wall time of each side, wall and CPU (user+sys) ratio interop/raw, and the spread
(max-min)/median of each side's wall times; then the median ratio over the models.

    python scripts/bench_build.py                       # all models, 3 repeats
    python scripts/bench_build.py --models lstm_sum,bert --repeats 5 --json /tmp/bench.json
    python scripts/bench_build.py --phases              # where its time goes (scripts/profile_build.py)
    python scripts/bench_build.py --cli                 # start-up of interop --help / doctor

Notes on fairness. The samples are TorchScript archives: torch's default (dynamo) exporter rejects
a ScriptModule outright ("Exporting a ScriptModule is not supported"), so for them the raw recipe
uses ``dynamo=False``, the only exporter that takes them, and the failed attempt is not charged.
The zoo models (tests/zoo.py, real architectures from transformers configs, random weights) are
eager modules and get torch's default exporter. ``mobilenet_v2.pt`` carries an image input and
labels, so interop builds it as an image classifier (more work); the raw recipe converts it as a
plain tensor model. coremltools lacks translations for a few ops real models use (``new_ones`` in
BERT, for one); without them the raw recipe fails outright, so it registers interop's small op
patches (interop/targets/coreml/ops.py) -- same conversion, just no checks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INTEROP = Path(sys.executable).parent / "interop"


@dataclass(frozen=True)
class Model:
    name: str
    source: str  # a file under the repo, or MODULE:FN importable from the repo root
    flags: tuple[str, ...] = ()


MODELS = [
    Model("lstm_sum", "samples/lstm_sum.pt"),
    Model("small_cnn", "samples/small_cnn.pt"),
    Model("digit_net", "samples/digit_net.pt"),
    Model("mobilenet_v2", "samples/mobilenet_v2.pt"),
    Model("bert", "tests.zoo:bert_model", ("--allow-trace-warnings",)),
    Model("gpt2", "tests.zoo:gpt2_model", ("--allow-trace-warnings",)),
    Model("vit", "tests.zoo:vit_model", ("--allow-trace-warnings",)),
    Model("resnet", "tests.zoo:resnet_model", ("--allow-trace-warnings",)),
]


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mb: float
    ok: bool
    detail: str = ""


@dataclass
class Result:
    model: str
    raw: list[Run] = field(default_factory=list)
    interop: list[Run] = field(default_factory=list)


# --- running one side ----------------------------------------------------------------------------


def run_process(cmd: list[str], log: Path) -> tuple[float, float, float, int]:
    """(wall s, user+sys CPU s, peak RSS MB, exit code) of one child process."""
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode


def run_interop(model: Model, work: Path) -> Run:
    out = work / "interop"
    cmd = [str(INTEROP), "build", model.source, "--out", str(out), "--json", *model.flags]
    log = work / "interop.log"
    wall, cpu, rss, code = run_process(cmd, log)
    report = out / f"{_stem(model.source)}.report.json"
    detail = ""
    if report.exists():
        data = json.loads(report.read_text())
        onnx, coreml = data["targets"]["onnx"], data["targets"]["coreml"]
        detail = (f"onnx={onnx.get('exporter')} {onnx.get('seconds')}s coreml={coreml.get('capture')} "
                  f"{coreml.get('seconds')}s checks={len(data['agreement'])}")
    elif code != 0:
        detail = _tail(log)
    return Run(wall, cpu, rss, code == 0, detail)


def run_raw(model: Model, work: Path) -> Run:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--raw", model.source, str(work / "raw")]
    log = work / "raw.log"
    wall, cpu, rss, code = run_process(cmd, log)
    return Run(wall, cpu, rss, code == 0, _marker(log, "RAW:") if code == 0 else _tail(log))


def _stem(source: str) -> str:
    return Path(source).stem if ":" not in source else source.split(":")[1]


def _tail(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(no output)"


def _marker(log: Path, prefix: str) -> str:
    lines = [ln[len(prefix):].strip() for ln in log.read_text(errors="replace").splitlines() if ln.startswith(prefix)]
    return lines[-1] if lines else ""


# --- the raw recipe (runs in its own process) ----------------------------------------------------


def raw_recipe(source: str, out: str) -> None:
    """Export to ONNX with torch's default exporter, onnxsim, jit.trace, coremltools. No checks.
    Prints the seconds of each step (imports first, as a script's header would do them)."""
    clock = [time.perf_counter()]
    steps: list[str] = []

    def step(label: str) -> None:
        now = time.perf_counter()
        steps.append(f"{label} {now - clock[0]:.2f}s")
        clock[0] = now

    import numpy as np
    import onnx
    import onnxsim
    import torch
    import coremltools as ct

    sys.path.insert(0, str(REPO))
    from interop.targets.coreml.ops import register  # the op translations coremltools lacks (see doc)

    register()
    step("imports")
    module, spec = _load(source)
    args = _example_args(spec, torch)
    names = [t["name"] for t in spec["inputs"]]
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    stem = _stem(source)
    path = outdir / f"{stem}.onnx"
    step("load")
    exporter = _export_onnx(module, args, spec, names, path, torch)
    step(f"onnx export ({exporter})")
    simplified, _ = onnxsim.simplify(onnx.load(str(path)))
    onnx.save(simplified, str(path))
    step("onnxsim")
    traced = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.trace(module, args)
    inputs = [ct.TensorType(name=t["name"], shape=_ct_shape(t, ct),
                            dtype=np.int32 if t["dtype"].startswith("int") else np.float32) for t in spec["inputs"]]
    mlmodel = ct.convert(traced, inputs=inputs, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16)
    step("trace + ct.convert")
    mlmodel.save(str(outdir / f"{stem}.mlpackage"))
    step("save package")
    print("RAW: " + ", ".join(steps), flush=True)


def _load(source: str) -> tuple[Any, dict[str, Any]]:
    import importlib

    import torch

    if ":" in source:
        sys.path.insert(0, str(REPO))
        mod, fn = source.split(":")
        factory = getattr(importlib.import_module(mod), fn)
        return factory().eval(), factory.interop_spec
    extra = {"interop.json": ""}
    module = torch.jit.load(str(REPO / source), _extra_files=extra)
    return module.eval(), json.loads(extra["interop.json"])


def _example_args(spec: dict[str, Any], torch: Any) -> tuple:
    """The spec's example shapes, a size-1 dynamic axis raised to 2 (exporters specialise size 1)."""
    torch.manual_seed(0)
    args = []
    for t in spec["inputs"]:
        shape = [2 if str(a) in t["dynamic"] and s == 1 and t["dynamic"][str(a)]["max"] >= 2 else s
                 for a, s in enumerate(t["shape"])]
        if t["dtype"].startswith("int"):
            low, high = t.get("range") or (0, 9)
            args.append(torch.randint(int(low), int(high) + 1, shape, dtype=getattr(torch, t["dtype"])))
        else:
            args.append(torch.randn(shape))
    return tuple(args)


def _export_onnx(module: Any, args: tuple, spec: dict[str, Any], names: list[str], path: Path, torch: Any) -> str:
    outputs = list(spec.get("outputs") or []) or None
    if isinstance(module, torch.jit.ScriptModule):  # the default (dynamo) exporter rejects these
        axes = {t["name"]: {int(a): d["name"] for a, d in t["dynamic"].items()} for t in spec["inputs"] if t["dynamic"]}
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=names, output_names=outputs,
                          dynamic_axes=axes or None)
        return "torchscript"
    from torch.export import Dim

    dims: dict[str, Any] = {}
    shapes = tuple({int(a): dims.setdefault(d["name"], Dim(d["name"], min=d["min"], max=d["max"]))
                    for a, d in t["dynamic"].items()} or None for t in spec["inputs"])
    torch.onnx.export(module, args, str(path), input_names=names, output_names=outputs,
                      dynamic_shapes=shapes if any(shapes) else None)
    return "default=dynamo"


def _ct_shape(t: dict[str, Any], ct: Any) -> Any:
    return ct.Shape([ct.RangeDim(d["min"], d["max"], s) if (d := t["dynamic"].get(str(a))) else s
                     for a, s in enumerate(t["shape"])])


# --- the comparison ------------------------------------------------------------------------------


def bench(models: list[Model], repeats: int, keep: bool) -> list[Result]:
    results = [Result(m.name) for m in models]
    root = Path(tempfile.mkdtemp(prefix="interop-bench-"))
    print(f"load average at start: {_load_avg()}; {os.cpu_count()} cores; work in {root}", flush=True)
    for r in range(repeats):
        for i, (model, result) in enumerate(zip(models, results)):
            order = ("raw", "interop") if (r + i) % 2 == 0 else ("interop", "raw")
            for side in order:
                work = root / f"{model.name}-{side}-{r}"
                work.mkdir()
                run = run_raw(model, work) if side == "raw" else run_interop(model, work)
                getattr(result, side).append(run)
                print(f"  [{r + 1}/{repeats}] {model.name:13s} {side:7s} {run.wall:6.1f}s wall {run.cpu:6.1f}s cpu "
                      f"{run.rss_mb:6.0f} MB {'ok ' if run.ok else 'FAILED'} {run.detail}", flush=True)
                if not keep:
                    subprocess.run(["rm", "-rf", str(work)], check=False)
    print(f"load average at end: {_load_avg()}", flush=True)
    if not keep:
        subprocess.run(["rm", "-rf", str(root)], check=False)
    return results


def _load_avg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def summarise(results: list[Result]) -> dict[str, Any]:
    rows = []
    for res in results:
        raw_ok = [r for r in res.raw if r.ok]
        int_ok = [r for r in res.interop if r.ok]
        row: dict[str, Any] = {"model": res.model, "raw_ok": len(raw_ok), "interop_ok": len(int_ok),
                               "runs": len(res.raw)}
        if raw_ok and int_ok:
            raw_wall, int_wall = _med(raw_ok, "wall"), _med(int_ok, "wall")
            row.update(raw_wall=raw_wall, interop_wall=int_wall, ratio=int_wall / raw_wall,
                       cpu_ratio=_med(int_ok, "cpu") / _med(raw_ok, "cpu"),
                       raw_spread=_spread(raw_ok), interop_spread=_spread(int_ok),
                       raw_rss_mb=max(r.rss_mb for r in raw_ok), interop_rss_mb=max(r.rss_mb for r in int_ok))
        rows.append(row)
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    cpu = [r["cpu_ratio"] for r in rows if "cpu_ratio" in r]
    return {"rows": rows, "median_ratio": statistics.median(ratios) if ratios else None,
            "median_cpu_ratio": statistics.median(cpu) if cpu else None}


def _med(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def _spread(runs: list[Run]) -> float:
    walls = [r.wall for r in runs]
    return (max(walls) - min(walls)) / statistics.median(walls)


def print_table(summary: dict[str, Any]) -> None:
    print()
    print(f"{'model':13s} {'raw s':>7s} {'interop s':>9s} {'ratio':>6s} {'cpu ratio':>9s} {'spread raw/interop':>19s}"
          f" {'peak MB raw/interop':>20s}")
    for r in summary["rows"]:
        if "ratio" not in r:
            print(f"{r['model']:13s} raw ok {r['raw_ok']}/{r['runs']}, interop ok {r['interop_ok']}/{r['runs']}: "
                  "no ratio")
            continue
        print(f"{r['model']:13s} {r['raw_wall']:7.1f} {r['interop_wall']:9.1f} {r['ratio']:6.2f} {r['cpu_ratio']:9.2f} "
              f"{r['raw_spread']:9.0%}/{r['interop_spread']:<9.0%} {r['raw_rss_mb']:9.0f}/{r['interop_rss_mb']:<9.0f}")
    if summary["median_ratio"] is not None:
        print(f"\nmedian ratio interop/raw (wall): {summary['median_ratio']:.2f}   "
              f"(CPU user+sys: {summary['median_cpu_ratio']:.2f})")


# --- CLI start-up -------------------------------------------------------------------------------


CLI_COMMANDS = (["--help"], ["doctor"], ["doctor", "--json"], ["build", "--help"])


def cli_startup(repeats: int) -> list[dict[str, Any]]:
    """Wall and CPU of the light commands, each run ``repeats`` times (interleaved); a bare
    ``python -c pass`` for the interpreter's own share."""
    commands = [[sys.executable, "-c", "pass"]] + [[str(INTEROP), *c] for c in CLI_COMMANDS]
    runs: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(commands))}
    for _ in range(repeats):
        for i, cmd in enumerate(commands):
            with tempfile.TemporaryDirectory() as tmp:
                wall, cpu, _, _ = run_process(cmd, Path(tmp) / "log")
            runs[i].append((wall, cpu))
    rows = []
    for i, cmd in enumerate(commands):
        walls, cpus = [w for w, _ in runs[i]], [c for _, c in runs[i]]
        label = "python -c pass" if i == 0 else "interop " + " ".join(cmd[1:])
        rows.append({"command": label, "wall_min": min(walls), "wall_median": statistics.median(walls),
                     "cpu_median": statistics.median(cpus), "cpu_min": min(cpus)})
    print(f"\n{'command':24s} {'wall min':>9s} {'wall median':>12s} {'CPU median':>11s}   (load {_load_avg()})")
    for r in rows:
        print(f"{r['command']:24s} {r['wall_min']:9.3f} {r['wall_median']:12.3f} {r['cpu_median']:11.3f}")
    return rows


# --- entry point ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help=f"comma-separated subset of {', '.join(m.name for m in MODELS)}")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side per model (default 3)")
    parser.add_argument("--json", help="also write the runs and the summary to this file")
    parser.add_argument("--keep", action="store_true", help="keep the artifacts and logs of every run")
    parser.add_argument("--phases", action="store_true",
                        help="profile interop build's stages instead (scripts/profile_build.py)")
    parser.add_argument("--cli", action="store_true", help="time the CLI's start-up (--help, doctor) instead")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--raw"]:  # the child process: --raw SOURCE OUT
        raw_recipe(argv[1], argv[2])
        return 0
    args = parser.parse_args(argv)
    wanted = args.models.split(",") if args.models else [m.name for m in MODELS]
    unknown = set(wanted) - {m.name for m in MODELS}
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}")
    models = [m for m in MODELS if m.name in wanted]
    if args.phases:
        from profile_build import phases  # scripts/profile_build.py, beside this file

        phases([(m.name, m.source, m.flags) for m in models])
        return 0
    if args.cli:
        cli_startup(max(args.repeats, 10))
        return 0
    results = bench(models, args.repeats, args.keep)
    summary = summarise(results)
    print_table(summary)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": [
            {"model": r.model, "raw": [vars(x) for x in r.raw], "interop": [vars(x) for x in r.interop]}
            for r in results]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
