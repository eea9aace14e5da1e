#!/usr/bin/env python
"""Per compressed variant, in one run: artifact size, ONNX Runtime latency ratio to the base
model, and the Core ML reference runtime's time per sample.

    scripts/bench_variants.py out/model.report.json            # a build made with --compress
    scripts/bench_variants.py --zoo gpt2 --compress int8,int4,fp16,palettize6   # build one first

Timings come from ``interop bench`` (``interop.commands.bench``): the same input for every
artifact (the build's example sample), warm-up runs first, p50 of the timed runs. The reference
runtime is a correctness tool (an op-by-op interpreter), not a deployment speed: its time shows
what decompression costs it, not what a device will do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _p50(value: dict | None) -> float | None:
    return value.get("p50_ms") if isinstance(value, dict) else None


def rows(result: dict) -> list[dict]:
    """Base artifacts first, then every variant, with sizes and ratios."""
    from interop.variants.build import size_of

    base_ort = _p50((result.get("onnx") or {}).get("built"))
    out = []
    for name in ("onnx", "coreml"):
        if name in result:
            path = (result[name].get("built") or {}).get("path") if name == "onnx" else result[name].get("path")
            out.append({"artifact": f"{name} (base)", "bytes": size_of(Path(path)) if path else None, "size_ratio": 1.0,
                        "ort_ms": _p50((result[name] or {}).get("built")), "ort_ratio": 1.0 if name == "onnx" else None,
                        "mil_ms": _p50(result[name].get("interop-mil"))})
    for key, value in (result.get("variants") or {}).items():
        ort = _p50(value.get("built"))
        out.append({"artifact": key, "bytes": value.get("bytes"), "size_ratio": value.get("ratio"), "ort_ms": ort,
                    "ort_ratio": round(ort / base_ort, 3) if ort and base_ort else None,
                    "mil_ms": _p50(value.get("interop-mil"))})
    return out


def render(table: list[dict]) -> str:
    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    lines = ["| artifact | size KB | size ratio | ORT p50 ms | ORT ratio to base | reference runtime ms / sample |",
             "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['artifact']} | {f(r['bytes'] / 1024 if r['bytes'] else None, '.1f')} | "
                     f"{f(r['size_ratio'], '.3f')} | {f(r['ort_ms'], '.3f')} | {f(r['ort_ratio'], '.2f')} | "
                     f"{f(r['mil_ms'], '.2f')} |")
    return "\n".join(lines)


def build_zoo(name: str, compress: str, folder: Path) -> Path:
    from interop import build
    from interop.support.quiet import captured
    from tests import zoo

    entry = zoo.ZOO[name]
    with captured():
        build(entry.config(out=str(folder), compress=[compress], allow_trace_warnings=True))
    return folder / f"{entry.name}_model.report.json"


def main() -> int:
    from interop.commands.bench import bench
    from interop.support.quiet import captured

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", help="<stem>.report.json of a build made with --compress")
    parser.add_argument("--zoo", help="build this tests/zoo.py model first (into a temporary folder)")
    parser.add_argument("--compress", default="int8,int4,fp16,palettize4,palettize6,palettize8")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--slow-runs", type=int, default=3, help="timed runs of the reference runtime")
    args = parser.parse_args()
    if not args.report and not args.zoo:
        parser.error("pass a report, or --zoo NAME")
    with tempfile.TemporaryDirectory(prefix="interop-bench-variants-") as tmp:
        report = args.report or str(build_zoo(args.zoo, args.compress, Path(tmp)))
        with captured():
            result = bench(report, warmup=args.warmup, runs=args.runs, slow_runs=args.slow_runs,
                           compare_unsimplified=False)
        table = rows(result)  # sizes are read from the artifacts: before a temporary build is removed
    print(f"input {result['input']} on {result['platform']}")
    print(render(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
