"""``--precision auto`` for the single-shot Core ML target: when the fp16 package disagrees and the
cause is fp16 precision, convert again with fp32 islands (coreml_precision.search) and ship the
first package that passes the unchanged agreement check."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from interop.errors import InteropError
from interop.support.quiet import captured
from interop.targets.coreml.precision import Attempt, fp32_share, op_errors, package_bytes, search, worst

_CAUSE_KEYS = ("cause", "fp32_rel_l2", "cause_op", "departure", "hint", "capture_difference")


def repair(target: Any, ctx: Any, opts: Any, result: Any, entry: dict[str, Any], out: Any,
           _declared_cases: Any, build_coreml: Any, coreml_feed: Any) -> Any:
    """The TargetResult to report: the passing island package's, or the fp16 one's (``entry``
    gains ``fp32_islands`` either way). The target's own case, build and feed functions are passed
    in (this module sits below target.py: no import cycle)."""
    from interop.runtimes import mil
    from interop.support.progress import stage

    prep, spec = ctx.prep, ctx.spec
    stage("measuring per-op fp16 error for fp32 islands")
    ref = _declared_cases(target.reference_for(prep, spec), spec, result.shapes)
    bad = next(d for d in out.diffs if not d.passed)
    feed = coreml_feed(spec, ref.samples[bad.case][bad.sample])
    try:
        errors = op_errors(mil.load_model(result.path), feed)
    except Exception as exc:  # the measurement is best effort: the fp16 verdict stands
        entry["fp32_islands"] = {"ops": [], "passed": False, "error": f"per-op measurement failed: {exc}"[:300]}
        return out
    before = worst(out.diffs)
    count = 0

    def attempt(ops: list[str]) -> Attempt:
        nonlocal count
        count += 1
        stage(f"converting with {len(ops)} op(s) kept in fp32 (try {count})")
        work = Path(ctx.work) / f"fp32-islands-{count}"
        work.mkdir()
        try:
            built = build_coreml(prep.module, prep.export_args, spec, prep.cases, prep.names, work, ctx.stem,
                                 replace(opts, fp32_ops=tuple(ops)), ctx.meta, ctx.noise, prep.trace)
        except InteropError:
            shutil.rmtree(work, ignore_errors=True)
            return Attempt(ops, False, float("inf"))
        trial_entry = {k: v for k, v in entry.items() if k not in _CAUSE_KEYS}
        checked = target.verify_package(built, ctx, trial_entry, diagnose=False)
        passed = bool(checked.diffs) and all(d.passed for d in checked.diffs)
        if not passed:
            shutil.rmtree(work, ignore_errors=True)
        return Attempt(ops, passed, worst(checked.diffs), (built, checked, trial_entry, work))

    islands = search(errors, attempt)
    entry["fp32_islands"] = islands.report(before)
    if islands.chosen is None:
        entry["hint"] = ("fp16 with fp32 islands did not pass either "
                         f"({len(islands.tried)} tries): build with --precision fp32")
        return out
    built, checked, trial_entry, work = islands.chosen.payload
    entry["fp32_islands"]["fp16_departure"] = entry.pop("departure", None)
    entry.pop("hint", None)
    types = {e.name: e.op_type for e in errors}
    entry["fp32_islands"]["types"] = {op: types.get(op) for op in islands.chosen.fp32_ops}
    entry["fp32_islands"]["bytes"] = {"fp16": package_bytes(result.path), "islands": package_bytes(built.path)}
    shutil.rmtree(result.path)
    shutil.move(str(built.path), str(result.path))
    shutil.rmtree(work, ignore_errors=True)
    with captured(ctx.noise):
        share = fp32_share(mil.load_model(result.path), feed)
    entry["fp32_islands"]["share"] = share
    entry["fp32_ops"] = islands.chosen.fp32_ops
    entry["notes"] = list(entry.get("notes", [])) + [
        f"fp16 with {len(islands.chosen.fp32_ops)} op(s) kept in fp32 ({share['ops']:.0%} of ops, "
        f"{share['elements']:.0%} of computed elements): pure fp16 disagreed (rel_l2 {before:.3g}, cause "
        f"fp16-precision), this package agrees (rel_l2 {islands.chosen.worst_rel_l2:.3g}) at fp16 tolerances"]
    checked.path = result.path
    checked.entry = entry
    return checked
