"""``--precision auto`` and the cause of a disagreement for the generation Core ML forms.

The package (stateful: states are fp16 only in Core ML; or the stateless past/present fallback) is
held to its tolerances by greedy generation and per-step logits. When it disagrees, the same
program is generated again with fp32 compute in the reference runtime (states stay fp16):

* that agrees -> ``fp16-precision``; ``cause_op`` names the op where fp16 first goes wrong (a value
  beyond fp16's range flows through it, else the op whose own error grows most, measured on the
  prefill); at ``--precision auto`` the package is converted again with fp32 islands
  (``targets.coreml.precision``) until one passes the unchanged generation check;
* it disagrees too -> the captured program (the torch.jit.trace of the cache wrapper) is run in
  PyTorch through the same teacher-forced generation: if that differs from the eager model too,
  ``capture``; else ``conversion``, with the first MIL op that departs (``targets.coreml.cause``).
  No islands are tried for either.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interop.targets.coreml.precision import Attempt, OpError, fp32_share, op_errors, package_bytes, search

from .check import compare_generation
from .runs import stateful_run, stateless_prefill, stateless_run, weights_kept_widened
from .wrappers import cache_geometry, causal_mask, io_names


CAUSE_KEYS = ("cause", "cause_op", "fp32_rel_l2", "fp32_generation", "captured_generation", "capture_difference",
              "hint")


@dataclass
class Attribution:
    """The cause found (None: the package agreed, or the evidence could not be had) and the
    per-op fp16 errors measured on the prefill (reused by the island search)."""

    cause: str | None = None
    errors: list[OpError] = field(default_factory=list)


def _failed(entries: list[dict[str, Any]]) -> bool:
    return any(e["passed"] is False for e in entries if e["target"] == "coreml")


def _worst(entries: list[dict[str, Any]]) -> float:
    vals = [e.get("worst_rel_l2") for e in entries if e["target"] == "coreml" and e.get("worst_rel_l2") is not None]
    return max((float(v) for v in vals), default=0.0)


def _held_to(loaded: Any, entry: dict[str, Any]) -> str:
    """The precision whose tolerances judge the package (the stateful form: fp16, its states' own)."""
    return "fp16" if loaded.is_stateful() else entry.get("precision", "fp16")


def _dtype(entry: dict[str, Any]) -> Any:
    return np.float16 if entry.get("precision", "fp16") == "fp16" else np.float32


def fp32_generation(path: Path, prompt: np.ndarray, ref: tuple, entry: dict[str, Any]) -> dict[str, Any]:
    """The package generated with fp32 compute (its fp16 values kept in fp32), compared at the
    tolerances the package is held to."""
    from interop.runtimes import mil

    from .verify import stateless_package_run

    loaded = mil.load_model(path)
    tokens, logits = ref
    with weights_kept_widened(path):
        if loaded.is_stateful():
            got = stateful_run(lambda feeds, state: loaded.predict(feeds, state=state, promote_fp16=True),
                               loaded.make_state, prompt, tokens, _dtype(entry))
        else:
            got = stateless_package_run(lambda feeds: loaded.predict(feeds, promote_fp16=True), loaded, prompt,
                                        tokens, _dtype(entry))
    return compare_generation("coreml", "interop-mil fp32", "prompt", tokens, logits, got, _held_to(loaded, entry))


def captured_generation(model: Any, stateful: bool, max_context: int, prompt: np.ndarray, ref: tuple,
                        held_to: str) -> dict[str, Any]:
    """The captured program (the torch.jit.trace the conversion reads) generating in PyTorch, the
    same teacher-forced way, compared with the eager model at the package's tolerances."""
    import torch

    from .export import coreml_name, trace_stateful, trace_stateless

    tokens, logits = ref
    if stateful:
        _, traced = trace_stateful(model, max_context)

        def fresh() -> None:
            with torch.no_grad():
                traced.key_cache.zero_()
                traced.value_cache.zero_()

        def step(feeds: dict, _state: Any) -> dict:
            with torch.no_grad():
                out = traced(torch.from_numpy(feeds["input_ids"].astype(np.int64)),
                             torch.from_numpy(feeds["causal_mask"].astype(np.float32)))
            return {"logits": out.numpy()}

        got = stateful_run(step, fresh, prompt, tokens, np.float32)
    else:
        traced = trace_stateless(model)
        geo = cache_geometry(model)
        ins, outs = io_names(geo["layers"])

        def run(feeds: dict) -> dict:
            args = [torch.from_numpy(np.asarray(feeds[coreml_name(n)]).astype(np.int64 if i < 3 else np.float32))
                    for i, n in enumerate(ins)]
            with torch.no_grad():
                out = traced(*args)
            return {coreml_name(n): v.numpy() for n, v in zip(outs, out)}

        got = stateless_run(run, geo["layers"], geo["kv_heads"], geo["head_dim"], prompt, tokens, np.float32)
    return compare_generation("coreml", "torch.jit.trace", "prompt", tokens, logits, got, held_to)


def prefill(loaded: Any, prompt: np.ndarray, entry: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(the package's prefill feed, its state maker or None) for per-op measurements."""
    from .verify import stateless_geometry

    if loaded.is_stateful():
        return ({"input_ids": prompt.astype(np.int32), "causal_mask": causal_mask(0, prompt.shape[1], _dtype(entry))},
                loaded.make_state)
    return stateless_prefill(*stateless_geometry(loaded), prompt, _dtype(entry)), None


def fp16_origin(errors: list[OpError]) -> OpError | None:
    """Where fp16 goes wrong: the first fp16 op a value beyond fp16's range flows through, else
    the fp16 op whose own error grows most."""
    over = [e for e in errors if e.fp16 and e.overflow]
    if over:
        return over[0]
    grown = [e for e in errors if e.fp16 and np.isfinite(e.growth) and e.growth > 0]
    return max(grown, key=lambda e: e.growth, default=None)


def _conversion_op(path: Path, model: Any, stateful: bool, max_context: int, prompt: np.ndarray,
                   entry: dict[str, Any]) -> str | None:
    """The first MIL op of the package that departs from what PyTorch computes on the prefill."""
    from interop.runtimes import mil
    from interop.targets.coreml.cause import first_conversion_op

    from .wrappers import PastPresentLM, StatefulLM

    loaded = mil.load_model(path)
    feed, _ = prefill(loaded, prompt, entry)
    if stateful:
        module, names = StatefulLM(model, max_context).eval(), ["input_ids", "causal_mask"]
    else:
        module = PastPresentLM(model).eval()
        names = ["input_ids", "attention_mask", "position_ids"] + [
            n for n in feed if n.startswith("past_key_values_")]
    sample = {n: np.asarray(feed[n]).astype(np.int64 if feed[n].dtype.kind == "i" else np.float32) for n in names}
    return first_conversion_op(path, feed, module, sample, names, stateful=stateful)


def attribute(entry: dict[str, Any], entries: list[dict[str, Any]], path: Path, prompt: np.ndarray,
              ref: tuple, model: Any = None, max_context: int = 0) -> Attribution:
    """Set ``entry['cause']`` (and ``cause_op``) when the Core ML generation failed and the cause
    can be found; notes and ``cause`` on the failed entries too."""
    if not _failed(entries):
        return Attribution()
    from interop.runtimes import mil

    try:
        fp32 = fp32_generation(path, prompt, ref, entry)
        loaded = mil.load_model(path)
        stateful = loaded.is_stateful()
    except Exception:  # attribution is evidence, never a verdict
        return Attribution()
    entry["fp32_generation"] = {k: fp32.get(k) for k in ("tokens_match", "worst_rel_l2", "passed")}
    found = Attribution()
    if fp32["passed"]:
        found.cause = "fp16-precision"
        note = f"cause fp16-precision: the same program with fp32 compute agrees (worst rel_l2 {fp32['worst_rel_l2']:.2e})"
        try:
            feed, states = prefill(loaded, prompt, entry)
            found.errors = op_errors(loaded, feed, state_maker=states)
        except Exception:
            found.errors = []
        origin = fp16_origin(found.errors)
        if origin is not None:
            entry["cause_op"] = f"{origin.op_type} {origin.name!r}"
            note += f"; where fp16 goes wrong: {entry['cause_op']}" + (" (a value beyond fp16's range)"
                                                                         if origin.overflow else "")
    else:
        found.cause, note = _not_precision(entry, fp32, path, model, stateful, max_context, prompt, ref,
                                           _held_to(loaded, entry))
    for e in entries:
        if e["target"] == "coreml" and e["passed"] is False:
            e["note"] = f"{e['note']}; {note}"
            if found.cause:
                e["cause"] = found.cause
    if found.cause:
        entry["cause"] = found.cause
    return found


def _not_precision(entry: dict[str, Any], fp32: dict[str, Any], path: Path, model: Any, stateful: bool,
                   max_context: int, prompt: np.ndarray, ref: tuple, held_to: str) -> tuple[str | None, str]:
    """fp32 disagrees too: ``capture`` when the captured program differs from eager PyTorch as
    well, else ``conversion`` (with the op); (cause, note)."""
    from interop.targets.coreml.cause import Cause, hint

    note = (f"not fp16 precision: the same program with fp32 compute disagrees too (worst rel_l2 "
            f"{fp32['worst_rel_l2']:.2e})")
    if model is None:
        return None, note + ": the conversion or the capture"
    from interop.support.quiet import captured as quiet

    try:
        with quiet():  # the tracer's warnings were summarised at the conversion already
            captured = captured_generation(model, stateful, max_context, prompt, ref, held_to)
    except Exception:
        return None, note + ": the conversion or the capture"
    entry["captured_generation"] = {k: captured.get(k) for k in ("tokens_match", "worst_rel_l2", "passed")}
    if not captured["passed"]:
        text = ("the captured program (torch.jit.trace of the cache wrapper) differs from the eager model's "
                f"generation too (worst rel_l2 {captured['worst_rel_l2']:.2e}; {captured['note']})")
        entry["capture_difference"] = text
        return "capture", f"{note}; cause capture: {text}"
    try:
        op = _conversion_op(path, model, stateful, max_context, prompt, entry)
    except Exception:
        op = None
    cause = Cause("conversion", float(fp32["worst_rel_l2"]), op)
    if op:
        entry["cause_op"] = op
    entry["fp32_rel_l2"] = round(float(fp32["worst_rel_l2"]), 6)
    entry["hint"] = hint(cause)
    return "conversion", (f"{note}, while the captured program agrees with PyTorch: cause conversion"
                          + (f"; first MIL op that departs: {op}" if op else ""))


def repair(config: Any, model: Any, path: Path, entry: dict[str, Any], entries: list[dict[str, Any]],
           prompt: np.ndarray, ref: tuple, errors: list[OpError] | None = None) -> list[dict[str, Any]]:
    """The generation entries to report: the passing island package's (moved to ``path``), or the
    fp16 ones (``entry`` gains ``fp32_islands`` either way). The package's own form is converted
    again: stateful, or the stateless past/present fallback."""
    from interop.runtimes import mil
    from interop.support.progress import stage
    from interop.support.quiet import captured

    from .export import convert_coreml, convert_coreml_stateless
    from .verify import verify_coreml

    stage("measuring per-op fp16 error for fp32 islands")
    loaded = mil.load_model(path)
    stateful = loaded.is_stateful()
    convert = convert_coreml if stateful else convert_coreml_stateless
    feed, states = prefill(loaded, prompt, entry)
    errors = errors or op_errors(loaded, feed, state_maker=states)
    before = _worst(entries)
    count = 0

    def attempt(ops: list[str]) -> Attempt:
        nonlocal count
        count += 1
        stage(f"converting with {len(ops)} op(s) kept in fp32 (try {count})")
        trial = path.parent / f"fp32-islands-{count}" / path.name
        trial.parent.mkdir()
        try:
            with captured():
                convert(model, trial, config.max_context, "fp16", fp32_ops=ops)
            got = verify_coreml(trial, prompt, ref, "fp16")
        except Exception:
            shutil.rmtree(trial.parent, ignore_errors=True)
            return Attempt(ops, False, float("inf"))
        passed = not _failed(got) and any(e["passed"] for e in got)
        if not passed:
            shutil.rmtree(trial.parent, ignore_errors=True)
        return Attempt(ops, passed, _worst(got), (trial, got))

    islands = search(errors, attempt)
    entry["fp32_islands"] = islands.report(before)
    if islands.chosen is None:
        entry["hint"] = (f"fp16 with fp32 islands did not pass either ({len(islands.tried)} tries)"
                         + ("" if stateful else ": build with --precision fp32"))
        return entries
    trial, got = islands.chosen.payload
    entry["fp32_islands"]["bytes"] = {"fp16": package_bytes(path), "islands": package_bytes(trial)}
    shutil.rmtree(path)
    shutil.move(str(trial), str(path))
    shutil.rmtree(trial.parent, ignore_errors=True)
    types = {e.name: e.op_type for e in errors}
    reloaded = mil.load_model(path)
    entry["fp32_islands"]["share"] = fp32_share(reloaded, feed, state_maker=reloaded.make_state if stateful else None)
    entry["fp32_islands"]["types"] = {op: types.get(op) for op in islands.chosen.fp32_ops}
    entry["fp32_ops"] = islands.chosen.fp32_ops
    return got
