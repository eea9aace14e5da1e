#!/usr/bin/env python
"""Run coremltools' own MIL op tests against interop's Core ML reference runtime.

coremltools ships ~12k op test cases (``coremltools/converters/mil/mil/ops/tests``) that compare
Core ML's predictions with numpy-computed expected values, on macOS only. This script runs them
here, in a pytest subprocess with the ``interop.runtimes.mil.conformance_plugin`` plugin (which
sends every prediction to the reference runtime), then prints passed / failed / skipped overall,
per test file and per op, the pass rate over the runnable ML-program cases, and the failing ops
with their counts and one sample message each.

    scripts/coreml_conformance.py                         # the full suite (fp16, ~25 min)
    scripts/coreml_conformance.py --subset fast           # a few cases per test function (~1 min)
    scripts/coreml_conformance.py iOS14/test_conv.py -k "TestConv and not transpose"
    scripts/coreml_conformance.py test_pool --precision both --junit pool.xml --json pool.json

Failure kinds: ``unsupported`` (no kernel for an op), ``mismatch`` (the runtime's numbers or
shapes differ from coremltools' expected values), ``fp16-rounding`` (an fp32 case holding fp16
values that passes when those are computed in fp32, as Core ML's CPU does: the runtime's fp16
model, not a kernel, is why it misses coremltools' fp32 tolerance), ``kernel-error`` (the runtime
raised), ``load-error`` (the saved package could not be read back), ``timeout``, ``test-error``
(the case failed before or beside the runtime; not the runtime's fault).
Exit code: 0, or 1 when the pass rate is below ``--min-pass-rate``, or pytest's code (>= 2) when
the run itself broke.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parent.parent
PLUGIN = "interop.runtimes.mil.conformance_plugin"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Single-threaded BLAS / torch: the cases are tiny, and on a busy machine idle-spinning BLAS
threads make a 0.1 ms matmul take 50 ms."""
NOT_BLAMED = ("test-error", "fp16-rounding")
"""Failure kinds that are not the runtime's error (left out of ``runtime_pass_rate``)."""
FAILED_KINDS = ("unsupported", "mismatch", "fp16-rounding", "kernel-error", "load-error", "timeout", "test-error")


def tests_root() -> Path:
    """Folder of coremltools' MIL op tests in the running environment."""
    import importlib.util

    spec = importlib.util.find_spec("coremltools")
    if spec is None or spec.origin is None:
        sys.exit("coremltools is not installed in this Python environment")
    return Path(spec.origin).parent / "converters" / "mil" / "mil" / "ops" / "tests"


def resolve_targets(names: list[str], root: Path) -> list[str]:
    """Test files or node ids: as given, relative to coremltools' test folder, or by file name."""
    if not names:
        return [str(root)]
    targets: list[str] = []
    for name in names:
        path, sep, node = name.partition("::")
        found = _find_test_files(path, root)
        if not found:
            sys.exit(f"no coremltools op test file matches {path!r} (look in {root})")
        targets.extend(f"{file}{sep}{node}" for file in found)
    return targets


def _find_test_files(path: str, root: Path) -> list[Path]:
    for candidate in (Path(path), root / path):
        if candidate.exists():
            return [candidate]
    stem = path if path.endswith(".py") else f"{path}.py"
    return sorted(root.glob(f"*/{stem}")) + sorted(root.glob(stem))


def pytest_command(args: argparse.Namespace, targets: list[str], record: Path) -> list[str]:
    """The pytest invocation: the plugin, the record file, and nothing from the project's config."""
    cmd = [sys.executable, "-m", "pytest", "-p", PLUGIN, "-p", "no:cacheprovider",
           "-o", "addopts=", "--rootdir", str(REPO), "-q", "-rN", "--disable-warnings",
           f"--tb={args.tb}", f"--mil-record={record}", f"--mil-subset={args.subset}",
           f"--mil-precision={args.precision}", f"--mil-timeout={args.timeout}",
           f"--mil-per-function={args.per_function}"]
    if args.k:
        cmd += ["-k", args.k]
    if args.junit:
        cmd += [f"--junitxml={args.junit}"]
    return cmd + targets


def run_suite(args: argparse.Namespace, targets: list[str], record: Path) -> int:
    """Run pytest in a subprocess (its coremltools patches stay out of this process)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for var in THREAD_VARS:
        env.setdefault(var, "1")
    stdout = None if args.verbose else subprocess.DEVNULL
    return subprocess.run(pytest_command(args, targets, record), cwd=REPO, env=env, stdout=stdout).returncode


def load_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the summary ---------------------------------------------------------------------------


def _primary_op(case: dict[str, Any]) -> str:
    """The op a case is about: the op its runtime run points at, else its test class's op."""
    return case.get("culprit") or case.get("op") or "<unknown>"


def _tally(cases: Iterable[dict[str, Any]], key) -> dict[str, Counter]:
    table: dict[str, Counter] = defaultdict(Counter)
    for case in cases:
        table[key(case)][case["outcome"]] += 1
    return dict(sorted(table.items()))


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts overall / per file / per op, pass rate over runnable ML-program cases, failing ops."""
    runnable = [c for c in records if c.get("backend") == "mlprogram" and c["outcome"] != "skipped"]
    passed = sum(c["outcome"] == "passed" for c in runnable)
    blamed = passed + sum(c["outcome"] == "failed" and c["kind"] not in NOT_BLAMED for c in runnable)
    failures: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for case in records:
        if case["outcome"] == "failed":
            failures[(_primary_op(case), case["kind"])].append(case)
    failing = [{"op": op, "kind": kind, "count": len(cases), "sample": cases[0]["message"],
                "nodeid": cases[0]["nodeid"]}
               for (op, kind), cases in sorted(failures.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    return {
        "cases": len(records),
        "totals": dict(Counter(c["outcome"] for c in records)),
        "kinds": dict(Counter(c["kind"] for c in records)),
        "runnable_mlprogram": len(runnable),
        "runtime_executed": sum(bool(c.get("runtime_called")) for c in records),
        "pass_rate": passed / len(runnable) if runnable else None,
        "runtime_pass_rate": passed / blamed if blamed else None,
        "per_precision": {p: dict(v) for p, v in _tally(records, lambda c: str(c.get("precision"))).items()},
        "per_file": {f: dict(v) for f, v in _tally(records, lambda c: c.get("file", "?")).items()},
        "per_op": {o: dict(v) for o, v in _tally((c for c in records if c["outcome"] != "skipped"),
                                                 _primary_op).items()},
        "failing_ops": failing,
    }


def _row(name: str, counts: dict[str, int], width: int) -> str:
    p, f, s = (counts.get(k, 0) for k in ("passed", "failed", "skipped"))
    rate = f"{100 * p / (p + f):7.2f}%" if p + f else "       -"
    return f"  {name:<{width}} {p:>6} {f:>6} {s:>6} {rate}"


def print_table(title: str, table: dict[str, dict[str, int]], only_failing: bool = False) -> None:
    rows = {k: v for k, v in table.items() if not only_failing or v.get("failed")}
    if not rows:
        return
    width = max(len(k) for k in rows) + 1
    print(f"\n{title}\n  {'':<{width}} {'passed':>6} {'failed':>6} {'skip':>6}    rate")
    for name, counts in rows.items():
        print(_row(name, counts, width))


def print_summary(summary: dict[str, Any], seconds: float, all_ops: bool) -> None:
    totals, kinds = summary["totals"], summary["kinds"]
    print_table("Per test file", summary["per_file"])
    print_table("Per precision (None: cases without a backend)", summary["per_precision"])
    print_table("Per op" + ("" if all_ops else " (ops with failures; --all-ops for all)"),
                summary["per_op"], only_failing=not all_ops)
    if summary["failing_ops"]:
        print("\nFailing ops (op, kind, cases, sample)")
        for entry in summary["failing_ops"]:
            print(f"  {entry['op']:<24} {entry['kind']:<13} {entry['count']:>5}  {entry['sample'][:160]}")
            print(f"  {'':<24} {'':<13} {'':>5}  e.g. {entry['nodeid'].split('/tests/')[-1][:150]}")
    print(f"\n{summary['cases']} cases in {seconds / 60:.1f} min: {totals.get('passed', 0)} passed, "
          f"{totals.get('failed', 0)} failed, {totals.get('skipped', 0)} skipped")
    skips = {k.removeprefix("skip-"): v for k, v in kinds.items() if k.startswith("skip-") or k == "xfail"}
    fails = {k: kinds[k] for k in FAILED_KINDS if k in kinds}
    print(f"  skipped: {skips or '-'}\n  failed:  {fails or '-'}")
    if kinds.get("xpass"):
        print(f"  {kinds['xpass']} passed cases are marked xfail by coremltools (Core ML itself fails them)")
    rate = summary["pass_rate"]
    print(f"  pass rate over {summary['runnable_mlprogram']} runnable ML-program cases: "
          + (f"{100 * rate:.2f}%" if rate is not None else "n/a")
          + f" ({summary['runtime_executed']} cases executed by the reference runtime)")
    if summary["runtime_pass_rate"] is not None:
        print(f"  pass rate not counting {' / '.join(NOT_BLAMED)} failures: {100 * summary['runtime_pass_rate']:.2f}%")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    intro, _, details = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(description=intro, epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", help="test files (e.g. iOS14/test_conv.py, test_pool), default all")
    parser.add_argument("--subset", choices=("fast", "full"), default="full",
                        help="full: every case; fast: --per-function evenly spread ML-program cases per test function")
    parser.add_argument("--per-function", type=int, default=2, help="cases per test function with --subset fast")
    parser.add_argument("--precision", choices=("fp16", "fp32", "both"), default="fp16",
                        help="ML-program precisions to run (coremltools' default: fp16)")
    parser.add_argument("-k", help="pytest -k expression")
    parser.add_argument("--junit", help="write a JUnit XML report here")
    parser.add_argument("--json", help="write the summary as JSON here")
    parser.add_argument("--record", help="keep the per-case JSON lines here")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case before it fails")
    parser.add_argument("--tb", default="no", help="pytest traceback style for failures (no, line, short, long)")
    parser.add_argument("--min-pass-rate", type=float, default=0.0, help="exit 1 below this pass rate (0..1)")
    parser.add_argument("--all-ops", action="store_true", help="list every op, not only failing ones")
    parser.add_argument("-q", "--quiet", dest="verbose", action="store_false", help="hide pytest's progress")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    targets = resolve_targets(args.files, tests_root())
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(args.record) if args.record else Path(tmp) / "cases.jsonl"
        record.unlink(missing_ok=True)
        start = time.time()
        code = run_suite(args, targets, record)
        records = load_records(record)
    summary = summarize(records)
    summary.update(seconds=round(time.time() - start, 1), subset=args.subset, precision=args.precision,
                   pytest_exit_code=code)
    print_summary(summary, summary["seconds"], args.all_ops)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if code not in (0, 1, 5):
        print(f"pytest exited with code {code}: the run is incomplete", file=sys.stderr)
        return code
    rate = summary["pass_rate"]
    return 1 if rate is not None and rate < args.min_pass_rate else 0


if __name__ == "__main__":
    sys.exit(main())
