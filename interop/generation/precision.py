"""``--precision auto`` and the cause of a disagreement for the generation Core ML form.

The stateful package (states are fp16 only in Core ML) is held to fp16 tolerances by greedy
generation and per-step logits. When it disagrees, the same program is generated with again with
fp32 compute in the reference runtime (states stay fp16): if that agrees the cause is
``fp16-precision`` and, at ``--precision auto``, the package is converted again with fp32 islands
(``targets.coreml.precision``: per-op error measured on the prefill) until one passes the unchanged
generation check. If the fp32 run disagrees too, the cause is not precision and no islands are tried.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from interop.targets.coreml.precision import Attempt, fp32_share, op_errors, search

from .check import compare_generation
from .runs import stateful_run, weights_kept_widened
from .wrappers import causal_mask


def _failed(entries: list[dict[str, Any]]) -> bool:
    return any(e["passed"] is False for e in entries if e["target"] == "coreml")


def _worst(entries: list[dict[str, Any]]) -> float:
    vals = [e.get("worst_rel_l2") for e in entries if e["target"] == "coreml" and e.get("worst_rel_l2") is not None]
    return max((float(v) for v in vals), default=0.0)


def fp32_generation(path: Path, prompt: np.ndarray, ref: tuple) -> dict[str, Any] | None:
    """The stateful package generated with fp32 compute, compared at fp16 tolerances (None for
    the stateless form, whose own precision is the one asked)."""
    from interop.runtimes import mil

    loaded = mil.load_model(path)
    if not loaded.is_stateful():
        return None
    tokens, logits = ref
    with weights_kept_widened(path):
        got = stateful_run(lambda feeds, state: loaded.predict(feeds, state=state, promote_fp16=True),
                           loaded.make_state, prompt, tokens, np.float16)
    return compare_generation("coreml", "interop-mil fp32", "prompt", tokens, logits, got, "fp16")


def attribute(entry: dict[str, Any], entries: list[dict[str, Any]], path: Path, prompt: np.ndarray,
              ref: tuple) -> str | None:
    """Set ``entry['cause']`` when the Core ML generation failed and the cause is known."""
    if not _failed(entries):
        return None
    try:
        fp32 = fp32_generation(path, prompt, ref)
    except Exception:  # attribution is evidence, never a verdict
        return None
    if fp32 is None:
        return None
    entry["fp32_generation"] = {k: fp32.get(k) for k in ("tokens_match", "worst_rel_l2", "passed")}
    note = (f"cause fp16-precision: the same program with fp32 compute agrees (worst rel_l2 "
            f"{fp32['worst_rel_l2']:.2e})" if fp32["passed"] else
            f"not fp16 precision: the same program with fp32 compute disagrees too (worst rel_l2 "
            f"{fp32['worst_rel_l2']:.2e}): the conversion or the capture")
    for e in entries:
        if e["target"] == "coreml" and e["passed"] is False:
            e["note"] = f"{e['note']}; {note}"
            if fp32["passed"]:
                e["cause"] = "fp16-precision"
    if fp32["passed"]:
        entry["cause"] = "fp16-precision"
        return "fp16-precision"
    return None


def repair(config: Any, model: Any, path: Path, entry: dict[str, Any], entries: list[dict[str, Any]],
           prompt: np.ndarray, ref: tuple) -> list[dict[str, Any]]:
    """The generation entries to report: the passing island package's (moved to ``path``), or the
    fp16 ones (``entry`` gains ``fp32_islands`` either way)."""
    from interop.runtimes import mil
    from interop.support.progress import stage
    from interop.support.quiet import captured

    from .export import convert_coreml
    from .verify import verify_coreml

    stage("measuring per-op fp16 error for fp32 islands")
    loaded = mil.load_model(path)
    feed = {"input_ids": prompt.astype(np.int32), "causal_mask": causal_mask(0, prompt.shape[1], np.float16)}
    errors = op_errors(loaded, feed, state_maker=loaded.make_state)
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
                convert_coreml(model, trial, config.max_context, "fp16", fp32_ops=ops)
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
        return entries
    trial, got = islands.chosen.payload
    shutil.rmtree(path)
    shutil.move(str(trial), str(path))
    shutil.rmtree(trial.parent, ignore_errors=True)
    types = {e.name: e.op_type for e in errors}
    reloaded = mil.load_model(path)
    entry["fp32_islands"]["share"] = fp32_share(reloaded, feed, state_maker=reloaded.make_state)
    entry["fp32_islands"]["types"] = {op: types.get(op) for op in islands.chosen.fp32_ops}
    entry["fp32_ops"] = islands.chosen.fp32_ops
    return got
