"""Build and judge the compressed variants of the targets that passed (the pipeline's hook after
its target loop). Each variant is executed by its target's own runtimes (``Target.execute``) on
the same samples and shape cases as its base artifact, compared with PyTorch fp32 by
``interop.compare.diffs``, and judged by its gate (:mod:`interop.variants.gates`). A variant that
misses its gate is not shipped (kept as ``<stem>.<variant>.FAILED<suffix>`` only with
``--keep-failed``) and fails the build (exit 1); the base artifacts ship on their own verdict.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from interop.variants import VariantContext, get, parse_compress_specs, skip_note
from interop.variants.gates import Gate, gate_for, gate_overrides, measure, misses


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _base_bytes(report: Any, target: str) -> int:
    return size_of(report.artifacts[target]) + sum(size_of(c) for c in report.companions.get(target, []))


def calibration_samples(config: Any, spec: Any) -> list[dict[str, Any]]:
    """The --calibration samples: arrays named after the inputs (a leading axis of samples), read
    like --samples' example case."""
    from interop.stages.prepare import load_user_samples

    if not getattr(config, "calibration", None):
        return []
    return load_user_samples(config.calibration, spec).get("example", [])


def build_variants(ctx: Any, report: Any, chosen: list[Any]) -> None:
    """For every chosen target whose base artifact is ``ok``, every ``--compress`` variant; rows
    go to ``report.data["variants"]``, artifacts to ``report.variant_artifacts``."""
    from interop.support.progress import stage

    specs = parse_compress_specs(list(getattr(ctx.config, "compress", []) or []))
    if not specs:
        return
    overrides = gate_overrides(list(getattr(ctx.config, "gate", []) or []))
    report.data["gates"] = {n: gate_for(n, overrides).to_json() for n, _ in specs}
    calibration = calibration_samples(ctx.config, ctx.spec)
    for target in chosen:
        status = report.data["targets"].get(target.name, {}).get("status")
        for name, options in specs:
            stage(f"compressing {target.name}: {name}")
            vctx = VariantContext(ctx.spec, calibration, ctx.work, options=options,
                                  deployment_target=str(getattr(ctx.config, "deployment_target", "") or "iOS16"))
            row = {"target": target.name, "variant": name, "path": None, "bytes": None, "ratio": None,
                   "psnr_db": None, "cosine": None, "top1": None, "top5": None,
                   "gate": gate_for(name, overrides).to_json(), "passed": None, "where": None, "status": "skipped"}
            if options:
                row["options"] = options
            if get(target.name, name) is None:
                row["note"] = skip_note(target.name, name)
            elif status != "ok" or target.name not in report.artifacts:
                row["note"] = f"the base {target.name} artifact did not pass ({status}): no variant built"
            else:
                build_one(target, name, ctx, vctx, report, row, gate_for(name, overrides))
            report.data["variants"].append(row)
    judged = [r for r in report.data["variants"] if r["status"] not in UNJUDGED]
    if any(not r["passed"] for r in judged):
        report.data["passed"] = False


UNJUDGED = ("skipped", "not-applicable")  # rows without a verdict: they neither pass nor fail the build


def build_one(target: Any, name: str, ctx: Any, vctx: VariantContext, report: Any, row: dict[str, Any],
              gate: Gate) -> None:
    variant = get(target.name, name)
    base = report.artifacts[target.name]
    out = ctx.work / f"{ctx.stem}.{name}{target.suffix}"
    row["library"] = variant.library
    if compress_into(row, out, lambda: variant.make(base, out, vctx), variant.library, report, target.name):
        judge(target, out, base, ctx, row, gate)
        from interop.variants import recipe

        if row["status"] == "failed" and variant.smaller_blocks and "block" not in vctx.options:
            vctx = recipe.smaller_blocks(target, variant, out, base, ctx, vctx, report, row, gate, compress_into, judge)
        if row["status"] == "failed" and variant.recipe and row.get("psnr_db") is not None:
            recipe.mixed_precision(target, variant, out, base, ctx, vctx, report, row, gate, compress_into, judge)


def _remove(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)


def compress_into(row: dict[str, Any], out: Path, make: Any, who: str, report: Any, target: str) -> bool:
    """Run ``make()`` (it writes the variant to ``out``) and record its info, size, ratio to the
    base artifact, coverage (:mod:`interop.variants.coverage`) and seconds in ``row``; a library
    that cannot compress the model is a failed variant (False), not a crash. A variant that
    compresses too little is ``not-applicable``: removed, not judged, not shipped (False). The
    written variant is registered for the commit."""
    from interop import targets
    from interop.errors import first_line
    from interop.variants import coverage

    started = time.perf_counter()
    try:
        info = make()
    except Exception as exc:
        _remove(out)
        row.update(status="failed", passed=False, error=f"{who} failed: {first_line(exc)}",
                   seconds=round(time.perf_counter() - started, 3))
        return False
    row.update({k: v for k, v in info.items() if k not in row or k == "note"})
    row.update(bytes=size_of(out), seconds=round(time.perf_counter() - started, 3))
    row["ratio"] = round(row["bytes"] / max(1, _base_bytes(report, target)), 4)
    try:
        row["coverage"] = coverage.measure(targets.get(target), report.artifacts[target], out)
    except Exception as exc:  # a measure that cannot read the artifact says so; the gate still judges it
        row["coverage"] = None
        row["coverage_error"] = first_line(exc)
    why = coverage.not_applicable(row["coverage"], row["ratio"])
    if why:
        _remove(out)
        row.update(status="not-applicable", passed=None, note=why, path=None)
        return False
    report.variant_artifacts[f"{target}:{row['variant']}"] = out
    return True


def judge(target: Any, out: Path, base: Path, ctx: Any, row: dict[str, Any], gate: Gate) -> None:
    """Run the variant in every runtime of its target; the worst runtime's metrics decide."""
    from interop.compare import diffs

    prep, spec = ctx.prep, ctx.spec
    ref = target.reference_for(prep, spec)
    runs: list[dict[str, Any]] = []
    worst_rows: list[Any] = []
    for runtime, got, problem in target.execute(out, spec, ref, prep.names, prep.labels):
        if problem:
            runs.append({"runtime": runtime, "not_executed": problem})
            continue
        rows = diffs(target.name, runtime, ref, got, prep.names, "fp32")
        measured = measure(rows)
        runs.append({"runtime": runtime, **_rounded(measured), "misses": misses(measured, gate)})
        if not worst_rows or (measured["psnr"] or 0) < (measure(worst_rows)["psnr"] or 0):
            worst_rows = rows
    row["runtimes"] = runs
    executed = [r for r in runs if "not_executed" not in r]
    if not executed:
        row.update(status="not-executed", passed=False, error="no runtime here executed the variant: it is unverified")
        return
    m = measure(worst_rows)
    row.update(psnr_db=_round(m["psnr"]), cosine=_round(m["cosine"], 6), top1=_round(m["top1"]),
               top5=_round(m["top5"]), status="ok")
    failed = [miss for r in executed for miss in r["misses"]]
    row["passed"] = not failed
    if m["degenerate"]:
        row["note"] = "degenerate reference outputs (near zero or constant): agreement on them is not evidence"
    if failed:
        row["status"] = "failed"
        row["error"] = "misses its gate: " + "; ".join(dict.fromkeys(failed))
        row["where"] = _where(target, base, out, worst_rows, ref, spec, gate)


def _where(target: Any, base: Path, out: Path, rows: list[Any], ref: Any, spec: Any, gate: Gate) -> str | None:
    from interop.variants.where import where

    worst = min(rows, key=lambda r: r.psnr_db)
    sample = ref.samples[worst.case][worst.sample]
    feed = target.feed(spec, sample)
    found = where(target, base, out, feed, gate)
    return found or f"output {worst.output!r} (no intermediate tensor departs past the gate before it)"


def _round(v: Any, digits: int = 4) -> Any:
    if v is None:
        return None
    v = float(v)
    return round(v, digits) if v == v and abs(v) != float("inf") else str(v)


def _rounded(m: dict[str, Any]) -> dict[str, Any]:
    return {"psnr_db": _round(m["psnr"]), "cosine": _round(m["cosine"], 6), "top1": _round(m["top1"]),
            "top5": _round(m["top5"])}


def console_line(r: dict[str, Any]) -> str:
    """One rich-markup line per variant for the build's console summary."""
    name = f"{r['target']} {r['variant']}"
    if r.get("status") == "not-applicable":
        return f"[yellow]- {name}: not applicable — {r.get('note', '')}[/]"
    if r["passed"] is None:
        return f"[dim]- {name}: {r.get('note', 'skipped')}[/]"
    metrics = f"PSNR {r['psnr_db']} dB, cosine {r['cosine']}, {r['ratio']}x size" if r.get("psnr_db") is not None else ""
    if r.get("coverage"):
        from interop.variants.coverage import describe

        metrics += f", {describe(r['coverage'])} compressed"
    if (r.get("recipe") or {}).get("kept"):
        metrics += f", kept at 8 bits: {', '.join(r['recipe']['kept'])}"
    if len((r.get("block_fallback") or {}).get("tried", [])) > 1:
        metrics += f", {_blocks(r['block_fallback'])}"
    if r["passed"]:
        return f"[green]✓[/] {name}: {r.get('path') or '(not kept)'}  [dim]{metrics}[/]"
    why = r.get("error") or ""
    where = f"; grows at {r['where']}" if r.get("where") else ""
    return f"[red]✗ {name}: {why}{where} — not shipped[/]"


def _blocks(fallback: dict[str, Any]) -> str:
    """``block 16 (tried 32: 21.3 dB, 16: 36.0 dB)`` for the console and the report."""
    tried = ", ".join(f"{t['block']}: {t['psnr_db']} dB" for t in fallback["tried"])
    return f"block {fallback.get('block_size')} (tried {tried})"


def markdown(data: dict[str, Any]) -> list[str]:
    """The report's ``Compressed variants`` section (empty without --compress)."""
    from interop.support.escape import md  # an error text is data: escaped

    rows = data.get("variants") or []
    if not rows:
        return []
    lines = ["## Compressed variants (against PyTorch fp32)", "",
             "| target | variant | size | ratio | coverage | PSNR dB | cosine | top-1 | top-5 | gate | passed | "
             "where / note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g = r["gate"]
        gate = f"psnr≥{g['psnr']:g}, cos≥{g['cosine']:g}" + (" (user override)" if g.get("source") != "default" else "")
        passed = {True: "yes", False: "**NO**", None: "—"}[r["passed"]]
        if r.get("status") == "not-applicable":
            passed = "not applicable"
        from interop.variants.coverage import describe

        cover = describe(r.get("coverage")) or "—"
        note = r.get("where") or r.get("error") or r.get("note") or ""
        if (r.get("recipe") or {}).get("kept"):
            note = f"kept at 8 bits: {', '.join(r['recipe']['kept'])}" + (f"; {note}" if note else "")
        if len((r.get("block_fallback") or {}).get("tried", [])) > 1:
            note = _blocks(r["block_fallback"]) + (f"; {note}" if note else "")
        size = "—" if not r.get("bytes") else (f"{r['bytes'] / 1e6:.3g} MB" if r["bytes"] >= 1e6 else
                                               f"{r['bytes'] / 1e3:.3g} kB")
        lines.append(f"| {r['target']} | {r['variant']} | {size} | {r['ratio'] or '—'} | {cover} | {r['psnr_db'] or '—'} | "
                     f"{r['cosine'] or '—'} | {r['top1'] if r['top1'] is not None else '—'} | "
                     f"{r['top5'] if r['top5'] is not None else '—'} | {gate} | {passed} | {md(note)} |")
    gates = data.get("gates") or {}
    lines += ["", "Gates: " + "; ".join(f"{n}: " + ", ".join(f"{k} ≥ {v}" for k, v in g.items()
                                                                 if k in ("psnr", "cosine", "top1", "top5"))
                                        + (f" ({g['source']})" if g.get("source") != "default" else "")
                                        for n, g in gates.items()), ""]
    return lines
