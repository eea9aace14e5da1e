"""``--compress`` on a generation build (``--task text-generation``): compressed variants of the
KV-cache ONNX model and of the stateful Core ML package, each judged by the generation check.

* ONNX ``int8``: the very function the variants package registers for ONNX int8
  (:func:`interop.targets.onnx.variants.int8`: weight-only 8-bit ``MatMulNBits``, int8 Gather);
* Core ML ``int8``: ``coremltools.optimize.coreml.linear_quantize_weights``, int8 symmetric per
  output channel, of every weight with at least ``MIN_WEIGHT_ELEMENTS`` values (a global config:
  coremltools' ``get_weights_metadata``, which the by-name selection of the other variants uses,
  cannot read a stateful program).

The verdict: the variant generates with the same prompt and decode steps as its base artifact
(the runs of :mod:`interop.generation.verify`, teacher-forced on PyTorch fp32's greedy tokens) and
passes when its greedy tokens match PyTorch's — a flip where PyTorch's own top-2 margin is within
the error the variant's PSNR gate allows (``2 * peak * 10^(-psnr/20)``) is a near-tie, reported
and not failing, as the base check does — and its per-step logits keep the PSNR and cosine gates
of :mod:`interop.variants.gates`. ``where`` names the first divergent step (or the first step
below the gate).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from interop.errors import SpecError
from interop.variants import VariantContext, get, parse_compress
from interop.variants.gates import Gate, gate_for, gate_overrides, misses

SUPPORTED = ("int8",)
MIN_WEIGHT_ELEMENTS = 512
CORE_ML_INT8 = "coremltools.optimize.coreml.linear_quantize_weights (int8, per channel)"


def check_compress(config: Any) -> list[str]:
    """The ``--compress`` variants of a generation build; exit 2 for one it cannot build."""
    names = parse_compress(list(getattr(config, "compress", []) or []))
    other = [n for n in names if n not in SUPPORTED]
    if other:
        raise SpecError(f"--compress {','.join(other)} is not available with --task text-generation",
                        hint=f"generation models support --compress {','.join(SUPPORTED)}")
    return names


def coreml_int8(base: Path, out: Path) -> dict[str, Any]:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from interop.support.quiet import captured

    with captured():
        model = ct.models.MLModel(str(base), skip_model_load=True)
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=MIN_WEIGHT_ELEMENTS))
        cto.linear_quantize_weights(model, config).save(str(out))
    return {}


def make(target: str, name: str, base: Path, out: Path) -> tuple[dict[str, Any], str]:
    """Write the variant; (what it says about itself, the library that compressed it)."""
    if target == "onnx":
        variant = get("onnx", name)
        return variant.make(base, out, VariantContext(None, work=out.parent)), variant.library
    return coreml_int8(base, out), CORE_ML_INT8


def build_generation_variants(config: Any, model: Any, work: Path, stem: str, report: Any,
                              prompt: np.ndarray, ref: tuple) -> None:
    """Every ``--compress`` variant of every base artifact that passed; rows to ``variants``."""
    from interop.support.progress import stage

    names = check_compress(config)
    if not names:
        return
    overrides = gate_overrides(list(getattr(config, "gate", []) or []))
    report.data["gates"] = {n: gate_for(n, overrides).to_json() for n in names}
    for target in config.targets:
        status = report.data["targets"].get(target, {}).get("status")
        for name in names:
            stage(f"compressing {target}: {name}")
            gate = gate_for(name, overrides)
            row = {"target": target, "variant": name, "path": None, "bytes": None, "ratio": None, "psnr_db": None,
                   "cosine": None, "top1": None, "top5": None, "gate": gate.to_json(), "passed": None, "where": None,
                   "status": "skipped", "tokens_match": None, "first_divergent_step": None}
            if status != "ok" or target not in report.artifacts:
                row["note"] = f"the base {target} artifact did not pass ({status}): no variant built"
            else:
                out = work / f"{stem}.{name}{report.artifacts[target].suffix}"
                _build_one(target, name, out, config, model, report, row, gate, prompt, ref)
            report.data["variants"].append(row)
    if any(not r["passed"] for r in report.data["variants"] if r["status"] not in ("skipped", "not-applicable")):
        report.data["passed"] = False


def _build_one(target: str, name: str, out: Path, config: Any, model: Any, report: Any, row: dict[str, Any],
               gate: Gate, prompt: np.ndarray, ref: tuple) -> None:
    from interop.variants.build import compress_into

    def compress() -> dict[str, Any]:
        info, row["library"] = make(target, name, report.artifacts[target], out)
        return info

    if compress_into(row, out, compress, "compressing", report, target):
        judge(target, out, model, prompt, ref, config, row, gate)


def judge(target: str, out: Path, model: Any, prompt: np.ndarray, ref: tuple, config: Any, row: dict[str, Any],
          gate: Gate) -> None:
    """Generate with the variant in every runtime here (generation/verify.py's runs, compared by
    :func:`gated`); every executed run must pass."""
    from interop.generation.verify import verify_coreml, verify_onnx

    compare = gated(gate)
    if target == "onnx":
        runs = verify_onnx(out, model, prompt, ref, config.seed, compare=compare)
    else:
        runs = verify_coreml(out, prompt, ref, config.precision, compare=compare)
    row["generation"] = runs
    executed = [r for r in runs if r["passed"] is not None]
    if not executed:
        row.update(status="not-executed", passed=False, error="no runtime here executed the variant: it is unverified")
        return
    worst = min(executed, key=lambda r: (r["tokens_match"], r["psnr_db"]))
    row.update(psnr_db=_json(min(r["psnr_db"] for r in executed)), cosine=_json(min(r["cosine"] for r in executed)),
               top1=min(r["top1"] for r in executed), tokens_match=all(r["tokens_match"] for r in executed),
               first_divergent_step=worst["first_divergent_step"], status="ok",
               passed=all(r["passed"] for r in executed))
    if not row["passed"]:
        bad = next(r for r in executed if not r["passed"])
        row.update(status="failed", error=f"misses its gate ({bad['runtime']}, {bad['case']}): {bad['note']}",
                   first_divergent_step=bad["first_divergent_step"], where=bad["where"])


def gated(gate: Gate) -> Callable[..., dict[str, Any]]:
    """A ``compare_generation`` for a variant: tokens and the gate's PSNR / cosine per step."""

    def compare(target: str, runtime: str, case: str, tokens: np.ndarray, ref_logits: list, got_logits: list,
                precision: str) -> dict[str, Any]:
        return compare_variant(target, runtime, case, tokens, ref_logits, got_logits, gate)

    return compare


def compare_variant(target: str, runtime: str, case: str, tokens: np.ndarray, ref_logits: list, got_logits: list,
                    gate: Gate) -> dict[str, Any]:
    """One variant generation entry: worst per-step PSNR / cosine, greedy flips (near-ties by the gate)."""
    from interop.compare import metrics
    from interop.generation.check import margins

    ref_margins = margins(ref_logits)
    worst = {"psnr": math.inf, "cosine": 1.0}
    first, first_low, flips, near_ties, agree, total = None, None, 0, 0, 0, 0
    for step, (ref, got) in enumerate(zip(ref_logits, got_logits)):
        m = metrics(ref, got) if np.all(np.isfinite(got)) else {"psnr_db": -math.inf, "cosine": 0.0}
        worst["psnr"], worst["cosine"] = min(worst["psnr"], m["psnr_db"]), min(worst["cosine"], m["cosine"])
        if first_low is None and misses({"psnr": m["psnr_db"], "cosine": m["cosine"]}, gate):
            first_low = step
        allowed = 2 * float(np.max(np.abs(ref))) * 10 ** (-gate.limits["psnr"] / 20)
        wrong = np.nonzero(got.argmax(-1) != tokens[step])[0]
        total, agree = total + len(tokens[step]), agree + len(tokens[step]) - len(wrong)
        for row in wrong:
            flips += 1
            near_ties += float(ref_margins[step, row]) <= allowed
            first = step if first is None else first
    missed = misses(worst, gate)
    passed = not missed and flips == near_ties
    return {"target": target, "runtime": runtime, "case": case, "steps": len(ref_logits) - 1,
            "tokens_compared": len(ref_logits), "tokens_match": flips == 0, "first_divergent_step": first,
            "near_tie_flips": near_ties, "psnr_db": _round(worst["psnr"]), "cosine": _round(worst["cosine"], 6),
            "top1": round(agree / max(1, total), 4), "first_step_below_gate": first_low, "passed": passed,
            "where": _where(first, flips - near_ties, first_low), "note": _note(missed, flips, near_ties, first)}


def _step(step: int) -> str:
    return "the prefill (step 0)" if step == 0 else f"decode step {step}"


def _where(first: int | None, real_flips: int, first_low: int | None) -> str | None:
    if real_flips and first is not None:
        return f"{_step(first)}: first divergent token"
    if first_low is not None:
        return f"{_step(first_low)}: logits first below the gate"
    return None


def _note(missed: list[str], flips: int, near_ties: int, first: int | None) -> str:
    parts = list(missed)
    if flips:
        parts.append(f"{flips} token flip(s), {near_ties} at a near-tie, first at {_step(first)}")
    return "; ".join(parts)


def _json(v: float) -> Any:
    return v if math.isfinite(v) else str(v)


def _round(v: float, digits: int = 4) -> float:
    return round(v, digits) if math.isfinite(v) else v
