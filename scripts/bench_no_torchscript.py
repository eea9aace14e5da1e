#!/usr/bin/env python
"""The TorchScript-free build (``--no-torchscript``) next to the default one, model by model, in
one run: how long each takes and whether each verdict passes both ways (issue 31's goal: the
median ratio no-torchscript / default at most 1.2).

Every zoo model (tests/zoo.py) and every seed sample (samples/*.pt, TorchScript archives: the
TorchScript-free side turns them into an ExportedProgram with torch's TS2EPConverter) is built
with ``interop build --json`` in its own process both ways, alternately and in swapped order each
repeat (ABBA, as scripts/bench_build.py does), so load drift on a shared machine hits both sides.
Printed per model: the median wall time of each side, the ratio, and each side's verdict per target
(``ok``, or the target's status); then how many models pass each way and the median ratio over the
models that pass both ways.

    python scripts/bench_no_torchscript.py                          # every model, 3 repeats
    python scripts/bench_no_torchscript.py --models cnn,gru,lstm_sum.pt --repeats 5 --json /tmp/nots.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import REPO, _load_avg, _stem, _tail, run_process  # noqa: E402  (beside this file)

MODES = {"default": (), "no-torchscript": ("--no-torchscript",)}
GOAL = 1.2


@dataclass(frozen=True)
class Model:
    name: str
    source: str  # a file under the repo, or MODULE:FN importable from the repo root
    flags: tuple[str, ...] = ()


def models() -> list[Model]:
    """Every zoo model, then every seed sample."""
    sys.path.insert(0, str(REPO))
    from tests import zoo

    found = [Model(n, e.factory, ("--allow-trace-warnings",) if e.hf else ()) for n, e in zoo.ZOO.items()]
    return found + [Model(p.name, f"samples/{p.name}") for p in sorted((REPO / "samples").glob("*.pt"))]


@dataclass
class Run:
    wall: float
    cpu: float  # user + sys of the build process: steadier than wall on a loaded machine
    code: int
    verdicts: dict[str, str]  # target -> ok | its status | the error line when no report was written
    exporter: str = ""
    capture: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0 and bool(self.verdicts) and all(v == "ok" for v in self.verdicts.values())


@dataclass
class Result:
    model: str
    runs: dict[str, list[Run]] = field(default_factory=lambda: {m: [] for m in MODES})


def run_build(model: Model, mode: str, work: Path) -> Run:
    out = work / "out"
    cmd = [sys.executable, "-m", "interop.cli", "build", model.source, "--out", str(out), "--json", *model.flags,
           *MODES[mode]]
    log = work / "build.log"
    wall, cpu, _rss, code = run_process(cmd, log)
    stem = _stem(model.source)
    report = next((p for p in (out / f"{stem}.report.json", out / f"{stem}.failed.report.json") if p.exists()), None)
    if report is None:
        return Run(wall, cpu, code, {"build": _tail(log)})
    data = json.loads(report.read_text())
    targets = data.get("targets", {})
    verdicts = {name: "ok" if t.get("status") == "ok" else f"{t.get('status')}: {(t.get('error') or '')[:120]}"
                for name, t in targets.items() if t.get("status") != "skipped"}
    return Run(wall, cpu, code, verdicts, targets.get("onnx", {}).get("exporter") or "",
               targets.get("coreml", {}).get("capture") or "")


def bench(chosen: list[Model], repeats: int) -> list[Result]:
    results = [Result(m.name) for m in chosen]
    root = Path(tempfile.mkdtemp(prefix="interop-nots-"))
    print(f"load average at start: {_load_avg()}; {os.cpu_count()} cores; work in {root}", flush=True)
    names = list(MODES)
    for r in range(repeats):
        for i, (model, result) in enumerate(zip(chosen, results)):
            order = names if (r + i) % 2 == 0 else names[::-1]
            for mode in order:
                work = root / f"{model.name}-{mode}-{r}"
                work.mkdir()
                run = run_build(model, mode, work)
                result.runs[mode].append(run)
                verdict = " ".join(f"{t}={v}" for t, v in run.verdicts.items())
                print(f"  [{r + 1}/{repeats}] {model.name:22s} {mode:15s} {run.wall:6.1f}s wall {run.cpu:6.1f}s cpu exit {run.code} "
                      f"onnx={run.exporter or '-'} coreml={run.capture or '-'} {verdict}", flush=True)
                _remove(work)
    print(f"load average at end: {_load_avg()}", flush=True)
    _remove(root)
    return results


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def summarise(results: list[Result]) -> dict[str, Any]:
    rows = []
    for res in results:
        row: dict[str, Any] = {"model": res.model}
        for mode, runs in res.runs.items():
            row[f"{mode}_passed"] = sum(r.ok for r in runs)
            row[f"{mode}_runs"] = len(runs)
            row[f"{mode}_verdicts"] = runs[-1].verdicts if runs else {}
            if runs:
                row[f"{mode}_wall"] = statistics.median(r.wall for r in runs)
                row[f"{mode}_cpu"] = statistics.median(r.cpu for r in runs)
        if all(row[f"{m}_passed"] == row[f"{m}_runs"] > 0 for m in MODES):
            row["ratio"] = row["no-torchscript_wall"] / row["default_wall"]
            row["cpu_ratio"] = row["no-torchscript_cpu"] / row["default_cpu"]
        rows.append(row)
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    cpu = [r["cpu_ratio"] for r in rows if "cpu_ratio" in r]
    return {"rows": rows, "median_ratio": statistics.median(ratios) if ratios else None,
            "median_cpu_ratio": statistics.median(cpu) if cpu else None, "goal": GOAL,
            "passed": {m: sum(r[f"{m}_passed"] == r[f"{m}_runs"] > 0 for r in rows) for m in MODES},
            "models": len(rows)}


def _verdict(row: dict[str, Any], mode: str) -> str:
    verdicts = row[f"{mode}_verdicts"]
    if row[f"{mode}_passed"] == row[f"{mode}_runs"]:
        return "pass"
    failed = {t: v for t, v in verdicts.items() if v != "ok"}
    return f"FAIL({row[f'{mode}_passed']}/{row[f'{mode}_runs']}) " + "; ".join(f"{t}: {v}" for t, v in failed.items())


def print_table(summary: dict[str, Any]) -> None:
    print()
    print(f"{'model':22s} {'default s':>9s} {'no-ts s':>8s} {'ratio':>6s} {'cpu ratio':>9s}  {'default':8s} "
          "no-torchscript")
    for r in summary["rows"]:
        ratio = f"{r['ratio']:6.2f} {r['cpu_ratio']:9.2f}" if "ratio" in r else f"{'-':>6s} {'-':>9s}"
        print(f"{r['model']:22s} {r.get('default_wall', 0):9.1f} {r.get('no-torchscript_wall', 0):8.1f} {ratio}  "
              f"{_verdict(r, 'default')[:60]:8s} {_verdict(r, 'no-torchscript')[:160]}")
    passed, total = summary["passed"], summary["models"]
    print(f"\npassing: default {passed['default']}/{total}, --no-torchscript {passed['no-torchscript']}/{total}")
    if summary["median_ratio"] is not None:
        met = "met" if summary["median_ratio"] <= GOAL else "NOT met"
        print(f"median ratio no-torchscript/default (wall, models passing both ways): {summary['median_ratio']:.2f} "
              f"(goal <= {GOAL}: {met}); CPU user+sys: {summary['median_cpu_ratio']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated subset (zoo names, sample file names)")
    parser.add_argument("--repeats", type=int, default=3, help="builds of each side per model (default 3)")
    parser.add_argument("--json", help="also write the runs and the summary to this file")
    args = parser.parse_args(argv)
    every = models()
    wanted = args.models.split(",") if args.models else [m.name for m in every]
    unknown = set(wanted) - {m.name for m in every}
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(m.name for m in every)}")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    results = bench([m for m in every if m.name in wanted], args.repeats)
    summary = summarise(results)
    print_table(summary)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": [
            {"model": r.model, **{m: [vars(x) for x in runs] for m, runs in r.runs.items()}} for r in results]},
            indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
