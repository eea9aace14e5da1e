"""The generation check: per-step logits within tolerance and identical greedy tokens.

Tokens compared are the prefill's token plus one per decode step. A runtime whose argmax differs
from PyTorch's at a step *diverges* there; the flip is a near-tie (reported, not a failure) when
PyTorch's own top-2 margin at that step is within the error the tolerance allows
(``max_rel * max |logits|``); any other flip, or logits outside tolerance, fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interop.compare import metrics, tolerance_for

NEAR_UNIFORM = 1e-4
"""A reference whose logits spread (max - min) at a step is below this is near-uniform: greedy
agreement on it proves little."""
PROMPT_LENGTH, PROMPT_CANDIDATES = 8, 4


def margins(logits: list[np.ndarray]) -> np.ndarray:
    """(steps, batch) top-1 minus top-2 logit of each step."""
    out = []
    for step in logits:
        top2 = np.sort(step, axis=-1)[:, -2:]
        out.append(top2[:, 1] - top2[:, 0])
    return np.stack(out)


def choose_prompt(model: Any, vocab: int, steps: int, seed: int) -> tuple[np.ndarray, dict[str, Any], tuple]:
    """Of a few seeded random prompts, the one whose greedy generation has the widest smallest
    top-2 margin relative to the logits' scale (random weights often give near-ties); with its
    PyTorch generation (tokens, logits)."""
    from .runs import torch_reference

    rng = np.random.default_rng(seed)
    best, best_score, info, ref = None, -1.0, {}, None
    for candidate in range(PROMPT_CANDIDATES):
        prompt = rng.integers(0, vocab, size=(1, PROMPT_LENGTH), dtype=np.int64)
        tokens, logits = torch_reference(model, prompt, np.ones_like(prompt), steps)
        peak = max(float(np.max(np.abs(s))) for s in logits)
        spread = min(float(np.ptp(s)) for s in logits)
        score = float(margins(logits).min()) / peak if peak > 0 else 0.0
        if score > best_score:
            best, best_score, ref = prompt, score, (tokens, logits)
            info = {"seed": seed, "candidate": candidate, "min_margin": float(margins(logits).min()),
                    "min_relative_margin": score, "logit_peak": peak, "min_spread": spread,
                    "near_uniform": spread < NEAR_UNIFORM}
    return best, info, ref


def compare_generation(target: str, runtime: str, case: str, ref_tokens: np.ndarray, ref_logits: list,
                       got_logits: list, precision: str) -> dict[str, Any]:
    """One ``generation`` report entry."""
    tol = tolerance_for(precision, "logits")
    worst = {"rel_l2": 0.0, "max_abs": 0.0, "max_rel": 0.0}
    bad_steps, first, flips, near_ties = [], None, 0, 0
    margin_at = None
    ref_margins = margins(ref_logits)
    for step, (ref, got) in enumerate(zip(ref_logits, got_logits)):
        m = metrics(ref, got)
        for key in worst:
            worst[key] = max(worst[key], m[key])
        if not (m["rel_l2"] <= tol.rel_l2 and m["max_rel"] <= tol.max_rel) or not np.all(np.isfinite(got)):
            bad_steps.append(step)
        allowed = tol.max_rel * float(np.max(np.abs(ref)))
        for row in np.nonzero(got.argmax(-1) != ref_tokens[step])[0]:
            flips += 1
            near = float(ref_margins[step, row]) <= 2 * allowed
            near_ties += near
            if first is None:
                first, margin_at = step, float(ref_margins[step, row])
    tokens_match = flips == 0
    passed = not bad_steps and flips == near_ties
    return {"target": target, "runtime": runtime, "case": case, "steps": len(ref_logits) - 1,
            "tokens_compared": len(ref_logits), "tokens_match": tokens_match, "first_divergent_step": first,
            "margin_at_divergence": margin_at, "near_tie_flips": near_ties, "worst_rel_l2": worst["rel_l2"],
            "worst_max_abs": worst["max_abs"], "worst_max_rel": worst["max_rel"], "tolerance": tol.to_json(),
            "steps_out_of_tolerance": bad_steps, "passed": passed, "note": _note(tokens_match, flips, near_ties, bad_steps)}


def _note(tokens_match: bool, flips: int, near_ties: int, bad_steps: list[int]) -> str:
    parts = []
    if bad_steps:
        parts.append(f"logits out of tolerance at step(s) {bad_steps[:5]}")
    if not tokens_match:
        parts.append(f"{flips} token flip(s), {near_ties} at a near-tie")
    return "; ".join(parts)


def not_executed(target: str, runtime: str, why: str) -> dict[str, Any]:
    return {"target": target, "runtime": runtime, "case": "prompt", "steps": 0, "tokens_match": None,
            "first_divergent_step": None, "worst_rel_l2": None, "passed": None, "note": f"not executed: {why}"}
