"""``interop verify`` and ``interop bench`` over the compressed variants a report lists."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from interop.variants.gates import Gate


def _gate(recorded: dict[str, Any]) -> Gate:
    """The gate the build judged with (a report is data: a user override it records is shown as such)."""
    from interop.variants.gates import DEFAULT_GATE, METRICS

    limits = {k: float(recorded.get(k, DEFAULT_GATE[k])) for k in METRICS}
    return Gate(limits, str(recorded.get("source", "default")))


def verify_variants(report: Any, old: dict[str, Any], prep: Any, spec: Any) -> None:
    """Re-judge every variant the old report shipped, against the freshly prepared reference;
    a variant that is missing or now misses its gate fails the verification."""
    from interop import targets
    from interop.trust import check_artifact
    from interop.variants.build import judge, size_of

    known = targets.registered()
    rows = []
    for old_row in old.get("variants") or []:
        row = copy.deepcopy(old_row)
        rows.append(row)
        if not old_row.get("shipped") or not old_row.get("path"):
            continue
        path, base = Path(old_row["path"]), report.data["targets"].get(old_row["target"], {}).get("path")
        if old_row["target"] not in known or not path.exists():
            row.update(status="failed", passed=False, error=f"variant artifact {path} is missing")
            continue
        check_artifact(path)  # a FIFO, a device or a package linking out is refused, never opened
        row["bytes"] = size_of(path)
        ctx = SimpleNamespace(prep=prep, spec=spec)
        judge(known[old_row["target"]], path, Path(base) if base else path, ctx, row, _gate(old_row["gate"]))
    report.data["variants"] = rows
    report.data["gates"] = old.get("gates", {})
    if any(r.get("shipped") and not r.get("passed") for r in rows):
        report.data["passed"] = False


def bench_variants(subject: Any, spec: Any, sample: dict[str, Any], warmup: int, runs: int, slow_runs: int,
                   threads: int | None) -> dict[str, Any]:
    """Time every shipped variant of a build with its target's own ``bench`` (ONNX Runtime;
    the Core ML reference runtime per sample, and Core ML itself on macOS)."""
    from interop import targets

    out: dict[str, Any] = {}
    for row in (subject.report or {}).get("variants") or []:
        path = Path(row["path"]) if row.get("path") else None
        if not row.get("shipped") or path is None or not path.exists():
            continue
        from interop.trust import check_artifact

        check_artifact(path)  # never a FIFO or a package linking out
        target = targets.get(row["target"])
        timed = target.bench(path, spec, sample, warmup, runs, slow_runs, threads, report=subject,
                             compare_unsimplified=False)
        timed.pop("_prep", None)
        out[f"{row['target']}:{row['variant']}"] = {"bytes": row.get("bytes"), "ratio": row.get("ratio"), **timed}
    return out
