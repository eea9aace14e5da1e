"""build-many's wall time: the speed-up of --jobs 2 over --jobs 1 on a zoo of tiny models, and the
per-model overhead of isolation (a child process per model, watched by the parent) against plain
`interop build` run once per model.

    python scripts/bench_fleet.py [--models 20] [--targets onnx] [--jobs 2]

Run from the repository root (the zoo is tests/fleet_models.py). Prints one table; --json for JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def manifest(folder: Path, count: int, targets: list[str],
             models: list[tuple[str, str]] | None = None) -> tuple[Path, list[tuple[str, str]]]:
    from tests.fleet_models import zoo

    models = models or zoo(count)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[defaults]", f"targets = {json.dumps(targets)}"]
    for model, inputs in models:
        lines += ["[[model]]", f'model = "{model}"', f'inputs = ["{inputs}"]']
    path = folder / "zoo.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, models


def fleet_seconds(path: Path, out: Path, jobs: int) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "interop.cli", "build-many", str(path), "--out", str(out),
                           "--jobs", str(jobs), "--json"], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = json.loads(done.stdout)
    if not summary["passed"]:
        raise SystemExit(f"build-many --jobs {jobs} did not pass: {summary['counts']}")
    return seconds, summary


def plain_seconds(model: str, inputs: str, out: Path, targets: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "interop.cli", "build", model, "--input", inputs, "--targets",
                           ",".join(targets), "--out", str(out), "--json"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"interop build {model} failed: {done.stderr.strip()}")
    return time.perf_counter() - started


def overhead(models: list[tuple[str, str]], folder: Path, targets: list[str]) -> list[float]:
    """Per model, build-many of a one-model manifest minus plain `interop build` of it, run back to
    back (paired, so that a change of machine load between them does not pass for overhead)."""
    differences = []
    for i, (model, inputs) in enumerate(models):
        one, _ = manifest(folder / f"one{i}", 0, targets, [(model, inputs)])
        isolated, _ = fleet_seconds(one, folder / f"one{i}" / "out", 1)
        differences.append(isolated - plain_seconds(model, inputs, folder / f"plain{i}", targets))
    return differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--targets", default="onnx")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--paired", type=int, default=6, help="models timed both ways for the overhead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    targets = args.targets.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        folder = Path(tmp)
        path, models = manifest(folder, args.models, targets)
        one, _ = fleet_seconds(path, folder / "j1", 1)
        many, summary = fleet_seconds(path, folder / "jn", args.jobs)
        differences = sorted(overhead(models[:args.paired], folder, targets))
    n = len(models)
    median = differences[len(differences) // 2]
    result = {"models": n, "targets": targets, "jobs": args.jobs, "cores": len(__import__("os").sched_getaffinity(0)),
              "jobs_1_seconds": round(one, 2), f"jobs_{args.jobs}_seconds": round(many, 2),
              "speedup": round(one / many, 2), "jobs_1_seconds_per_model": round(one / n, 2),
              "isolation_overhead_per_model_seconds": round(median, 3),
              "isolation_overhead_all_seconds": [round(d, 3) for d in differences],
              "median_peak_rss_mib": round(sorted(m["peak_rss_bytes"] for m in summary["models"])[n // 2] / 2 ** 20)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{n} models, targets {','.join(targets)}, {result['cores']} cores")
    print(f"  build-many --jobs 1          {one:8.1f} s")
    print(f"  build-many --jobs {args.jobs}          {many:8.1f} s   speed-up {one / many:.2f}x")
    print(f"  isolation overhead per model {median:+8.3f} s  (median of {len(differences)}: build-many of one model "
          f"minus `interop build` of it, back to back; includes build-many's own start)")
    print(f"  median peak resident memory  {result['median_peak_rss_mib']} MiB per model")


if __name__ == "__main__":
    main()
