"""Gate-driven mixed precision: when a low-bit variant misses its gate, keep the fewest sensitive
weights at 8 bits until the gate holds, and ship that (never a lowered gate).

Each weight's contribution is measured, not guessed: the variant and its base artifact are run on
one sample with every intermediate tensor recorded (the localisation of
:mod:`interop.variants.where`), and for every op that reads a weight the error its output carries
against the base is compared with the error of its activation inputs. The error is the relative
mean squared error (``mse / peak^2``, peak = max |base value|, the PSNR's own terms), so
independent errors add and ``output error - input error`` is what the op's compressed weight
added. The weight that added most is kept at 8 bits (``VariantContext.keep``), the variant is
rebuilt with the library's own API and judged again on every sample and case, and the ranking is
re-measured on the new variant; at most ``MAX_KEPT`` weights, and never more than
``MAX_KEPT_FRACTION`` of the weight bytes (past that it is an 8-bit variant under another name).

A variant that meets its gate ships with ``recipe``: the weights kept, every attempt's PSNR;
one that does not is refused with the best PSNR measured.

Before any weight is kept, a block-wise variant (int4) that misses its gate at the default block
size is rebuilt with smaller blocks (:func:`smaller_blocks`, the sizes its registration names:
32 -> 16 -> 8 on Core ML, 32 -> 16 for ONNX ``MatMulNBits``): smaller blocks are more scales and
less error for every weight at once. The first block size that meets the gate ships
(``block_fallback`` in the row: every size tried and its PSNR); when none does, the recipe
starts from the smallest. A block size the user chose (``int4:block=N``) is not second-guessed.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

MAX_KEPT = 8
MAX_KEPT_FRACTION = 0.5
MAX_PROBED = 48  # the largest weights probed one by one
LISTED = 12
KEPT_AS = {"int8": "full precision"}  # what a kept weight becomes; 8 bits for the rest


def _db(err: float) -> float | None:
    """A relative error as the PSNR it amounts to (dB)."""
    if err == float("inf"):
        return None
    return round(float(-10 * np.log10(err)), 2) if err > 0 else None


def rel_error(base: Any, got: Any) -> float | None:
    """``mse / max|base|^2`` of ``got`` against ``base``; None when they are not comparable floats."""
    if not isinstance(base, np.ndarray) or not isinstance(got, np.ndarray) or base.shape != got.shape:
        return None
    if base.dtype.kind != "f" or got.dtype.kind != "f" or base.size == 0:
        return None
    b, g = base.astype(np.float64), got.astype(np.float64)
    peak = float(np.max(np.abs(b))) if np.all(np.isfinite(b)) else 0.0
    if peak == 0.0:
        return None
    if not np.all(np.isfinite(g)):
        return float("inf")
    return float(np.mean((b - g) ** 2)) / peak ** 2


def output_error(want: dict[str, Any], got: dict[str, Any]) -> float:
    """The worst output's relative error (inf when an output is missing or not finite)."""
    errors = [rel_error(np.asarray(w), np.asarray(got[n])) if n in got else float("inf") for n, w in want.items()]
    found = [e for e in errors if e is not None]
    return max(found, default=0.0)


def sensitivity(target: Any, variant: Any, base: Path, probe: Path, vctx: Any, feed: dict[str, np.ndarray],
                candidates: list[str]) -> dict[str, float]:
    """Weight -> the model's output error when only that weight is compressed (everything else
    as in the base artifact), on ``feed``: each weight's own contribution, measured."""
    want = target.outputs_by_name(base, feed)
    scores: dict[str, float] = {}
    for name in candidates:
        variant.make(base, probe, dataclasses.replace(vctx, only=(name,), keep=()))
        try:
            scores[name] = output_error(want, target.outputs_by_name(probe, feed))
        finally:
            _remove(probe)
    return scores


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _weights(target: Any, base: Path) -> dict[str, int]:
    """Weight name -> bytes in the base artifact (the target's ``weights``, as coverage counts them)."""
    return {n: size for n, (_, size) in target.weights(base).items()}


def _feed(target: Any, ctx: Any) -> dict[str, np.ndarray]:
    """The first sample of the first shape case, as the target's runtime takes it."""
    ref = target.reference_for(ctx.prep, ctx.spec)
    case = next(iter(ref.samples))
    sample = ref.samples[case][0]
    return target.feed(ctx.spec, sample)


KEPT_KEYS = ("target", "variant", "gate", "options", "library", "block_fallback")  # what an attempt inherits


def _fresh(row: dict[str, Any]) -> dict[str, Any]:
    """A new attempt of ``row``: what it is (target, variant, gate, options), none of the previous
    attempt's results nor of what its artifact said about itself (``block_size``, ``note`` ...)."""
    trial = {k: copy.deepcopy(row[k]) for k in KEPT_KEYS if k in row}
    for key in ("path", "bytes", "ratio", "psnr_db", "cosine", "top1", "top5", "where", "error", "runtimes", "note",
                "coverage"):
        trial[key] = None
    trial.update(passed=None, status="skipped")
    return trial


def smaller_blocks(target: Any, variant: Any, out: Path, base: Path, ctx: Any, vctx: Any, report: Any,
                   row: dict[str, Any], gate: Any, compress_into: Any, judge: Any) -> Any:
    """Retry the failed ``row`` with each of ``variant.smaller_blocks`` in turn until one meets the
    gate; ``row`` ends as that attempt, or as the last one judged (the artifact at ``out``), with
    ``block_fallback`` recording them all. Returns the VariantContext of the attempt ``row`` holds
    (the recipe builds on it)."""
    first = row.get("block_size", vctx.options.get("block"))
    tried = [{"block": first, "psnr_db": row["psnr_db"], "passed": bool(row["passed"])}]
    current, current_vctx = row, vctx
    for block in variant.smaller_blocks:
        trial = _fresh(row)
        trial_vctx = dataclasses.replace(vctx, options={**vctx.options, "block": block})
        if not compress_into(trial, out, lambda: variant.make(base, out, trial_vctx), variant.library, report,
                             target.name):
            tried.append({"block": block, "psnr_db": None, "passed": False, "status": trial["status"],
                          "note": trial.get("note") or trial.get("error")})
            break
        judge(target, out, base, ctx, trial, gate)
        tried.append({"block": block, "psnr_db": trial["psnr_db"], "passed": bool(trial["passed"])})
        current, current_vctx = trial, trial_vctx
        if trial["passed"]:
            break
    if current is not row:
        row.clear()
        row.update(current)
    row["block_fallback"] = {"tried": tried, "block_size": row.get("block_size"), "passed": bool(row["passed"])}
    if not row["passed"]:
        sizes = ", ".join(f"block {t['block']}: {t['psnr_db']} dB" for t in tried)
        row["error"] = f"{row.get('error') or 'misses its gate'}; smaller blocks did not meet it either ({sizes})"
    return current_vctx


def mixed_precision(target: Any, variant: Any, out: Path, base: Path, ctx: Any, vctx: Any, report: Any,
                    row: dict[str, Any], gate: Any, compress_into: Any, judge: Any) -> None:
    """Retry the failed ``row`` keeping the most sensitive weights at 8 bits (int8 variants: at the
    base artifact's precision), one more each time, in the order of :func:`sensitivity`; ``row``
    ends as the attempt that passed, or as the last one tried (the artifact at ``out``) with the
    best PSNR measured."""
    from interop.errors import first_line

    try:
        sizes = _weights(target, base)
        candidates = sorted(sizes, key=lambda n: -sizes[n])[:MAX_PROBED]
        probe = out.with_name(f"probe.{out.name}")
        scores = sensitivity(target, variant, base, probe, vctx, _feed(target, ctx), candidates)
    except Exception as exc:
        row["recipe"] = {"kept": [], "tried": [], "error": f"could not measure the weights: {first_line(exc)}"}
        return
    total = sum(sizes.values()) or 1
    order = [n for n in sorted(scores, key=lambda n: -scores[n]) if scores[n] > 0]
    kept: list[str] = []
    tried = [{"kept": [], "psnr_db": row["psnr_db"], "passed": False}]
    current, current_kept = row, []
    for pick in order:
        if len(kept) >= MAX_KEPT:
            break
        if sum(sizes[n] for n in kept) + sizes[pick] > MAX_KEPT_FRACTION * total:
            continue
        kept.append(pick)
        trial = _fresh(row)
        keep = dataclasses.replace(vctx, keep=tuple(kept))
        if not compress_into(trial, out, lambda: variant.make(base, out, keep), variant.library, report, target.name):
            tried.append({"kept": list(kept), "psnr_db": None, "passed": False,
                          "status": trial["status"], "note": trial.get("note") or trial.get("error")})
            break
        judge(target, out, base, ctx, trial, gate)
        tried.append({"kept": list(kept), "psnr_db": trial["psnr_db"], "passed": bool(trial["passed"])})
        current, current_kept = trial, list(kept)
        if trial["passed"]:
            break
    best = max((t for t in tried if isinstance(t["psnr_db"], (int, float))), key=lambda t: t["psnr_db"])
    kept_as = current.get("kept_as") or KEPT_AS.get(variant.name, "8 bits")  # the variant may say
    recipe = {"kept": current_kept, "kept_as": kept_as, "tried": tried, "best_psnr_db": best["psnr_db"],
              "best_kept": best["kept"], "passed": bool(current["passed"]),
              "sensitivity_psnr_db": {n: _db(scores[n]) for n in order[:LISTED]}}
    if current is not row:
        row.clear()
        row.update(current)
    row["recipe"] = recipe
    if not row["passed"]:
        row["error"] = (f"{row.get('error') or 'misses its gate'}; no mixed-precision recipe met the gate "
                        f"(best PSNR {best['psnr_db']} dB keeping {', '.join(best['kept']) or 'nothing'} at {kept_as}; "
                        f"{len(tried) - 1} recipe(s) tried)")
