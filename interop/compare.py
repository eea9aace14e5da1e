"""Agreement metrics and tolerances: one :class:`OutputDiff` per (target, case, sample, output).

Tolerances are data, by target precision, printed in the report and never loosened silently:
an override (``--tolerance NAME:rel_l2=1e-3``) is recorded next to the value it replaced.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from interop.errors import SpecError

# rel_l2 = ||a - b|| / ||ref||; max_rel = max|a - b| / max|ref|. Defaults measured on the seed
# models and the real-architecture set: fp32 paths stay below 1e-5 rel_l2; fp16 Core ML below 5e-3.
DEFAULT_TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"rel_l2": 1e-4, "max_rel": 1e-3},
    "fp16": {"rel_l2": 1e-2, "max_rel": 5e-2},
    # a quantized ONNX graph (QDQ / integer ops) computed in float against ONNX Runtime's integer
    # kernels: whole quantization steps differ where a rounding tie flips (MobileNetV2 QDQ: 4e-3)
    "quantized": {"rel_l2": 1e-2, "max_rel": 5e-2},
}
DEGENERATE_SCALE = 1e-6  # a reference whose largest magnitude is below this proves nothing


@dataclass
class Tolerance:
    rel_l2: float
    max_rel: float
    source: str = "default"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def tolerance_for(precision: str, output: str, overrides: dict[str, dict[str, float]] | None = None) -> Tolerance:
    base = dict(DEFAULT_TOLERANCES[precision])
    over = (overrides or {}).get(output) or (overrides or {}).get("*")
    if over:
        base.update(over)
        return Tolerance(source="user override", **base)
    return Tolerance(**base)


def parse_tolerance(text: str) -> tuple[str, dict[str, float]]:
    """``NAME:rel_l2=1e-3[,max_rel=1e-2]`` (NAME ``*`` for every output)."""
    name, _, rest = text.partition(":")
    values: dict[str, float] = {}
    for item in filter(None, rest.split(",")):
        key, _, val = item.partition("=")
        if key.strip() not in ("rel_l2", "max_rel"):
            raise SpecError(f"bad --tolerance {text!r}: unknown metric {key!r}", hint="use rel_l2 or max_rel")
        try:
            values[key.strip()] = float(val)
        except ValueError as exc:
            raise SpecError(f"bad --tolerance {text!r}: {val!r} is not a number", hint="e.g. logits:rel_l2=1e-3") from exc
    if not name or not values:
        raise SpecError(f"bad --tolerance {text!r}", hint="write NAME:rel_l2=1e-3")
    return name, values


@dataclass
class OutputDiff:
    target: str
    runtime: str
    case: str
    output: str
    max_abs: float
    rel_l2: float
    cosine: float
    psnr_db: float
    top1: float | None
    tolerance: dict[str, Any]
    passed: bool
    note: str = ""
    sample: int = 0
    top5: float | None = None
    degenerate: bool = False
    shape: list[int] = field(default_factory=list)
    cause: str | None = None  # a failed Core ML row: fp16-precision | conversion | capture (coreml_cause.py)

    def to_json(self) -> dict[str, Any]:
        return {k: _json_float(v) for k, v in asdict(self).items()}


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """max_abs, rel_l2, cosine, psnr_db (peak = max |ref|), max_rel; float64 throughout."""
    with np.errstate(all="ignore"):
        return _metrics(np.asarray(ref, dtype=np.float64).ravel(), np.asarray(got, dtype=np.float64).ravel())


def _metrics(r: np.ndarray, g: np.ndarray) -> dict[str, float]:
    diff = g - r
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    ref_norm = float(np.linalg.norm(r))
    err_norm = float(np.linalg.norm(diff))
    rel_l2 = err_norm / ref_norm if ref_norm > 0 else (0.0 if err_norm == 0 else math.inf)
    denom = ref_norm * float(np.linalg.norm(g))
    cosine = float(np.dot(r, g) / denom) if denom > 0 else (1.0 if err_norm == 0 else 0.0)
    peak = float(np.max(np.abs(r))) if r.size else 0.0
    mse = float(np.mean(diff**2)) if diff.size else 0.0
    psnr = math.inf if mse == 0 else (20 * math.log10(peak) - 10 * math.log10(mse) if peak > 0 else -math.inf)
    max_rel = max_abs / peak if peak > 0 else (0.0 if max_abs == 0 else math.inf)
    return {"max_abs": max_abs, "rel_l2": rel_l2, "cosine": cosine, "psnr_db": psnr, "max_rel": max_rel}


def topk_agreement(ref: np.ndarray, got: np.ndarray, k: int) -> float | None:
    """Fraction of rows whose top-1 class (k=1) or top-1 inside top-k (k>1) agrees; None when
    the output is not classifier-like (float, rank >= 2, last axis of 2 or more classes)."""
    if ref.ndim < 2 or ref.shape[-1] < max(2, k) or ref.dtype.kind != "f":
        return None
    r = ref.reshape(-1, ref.shape[-1])
    g = np.asarray(got, dtype=np.float64).reshape(-1, ref.shape[-1])
    ref_top = np.argmax(r, axis=-1)
    if k == 1:
        return float(np.mean(ref_top == np.argmax(g, axis=-1)))
    got_topk = np.argsort(-g, axis=-1)[:, :k]
    return float(np.mean([ref_top[i] in got_topk[i] for i in range(len(ref_top))]))


def compare_output(ref: Any, got: Any, tol: Tolerance, **ident: Any) -> OutputDiff:
    """Compare one output; NaN/Inf, shape or dtype-kind mismatches fail outright."""
    ref = np.asarray(ref)
    got = np.asarray(got)
    notes = []
    if got.shape != ref.shape:
        return OutputDiff(max_abs=math.inf, rel_l2=math.inf, cosine=0.0, psnr_db=-math.inf, top1=None,
                          tolerance=tol.to_json(), passed=False, shape=list(got.shape),
                          note=f"shape {tuple(got.shape)} != reference {tuple(ref.shape)}", **ident)
    m = metrics(ref, got)
    finite = bool(np.all(np.isfinite(got.astype(np.float64)))) if got.dtype.kind in "fc" else True
    ref_finite = bool(np.all(np.isfinite(ref.astype(np.float64)))) if ref.dtype.kind in "fc" else True
    passed = finite and ref_finite and m["rel_l2"] <= tol.rel_l2 and m["max_rel"] <= tol.max_rel
    if not finite:
        notes.append("NaN/Inf in the artifact's output")
    if not ref_finite:
        notes.append("NaN/Inf in the PyTorch reference")
    peak = float(np.max(np.abs(ref.astype(np.float64)))) if ref.size else 0.0
    degenerate = ref.dtype.kind == "f" and (peak < DEGENERATE_SCALE or float(np.ptp(ref.astype(np.float64))) == 0.0) and ref.size > 1
    if degenerate:
        notes.append(f"degenerate reference (max |ref| = {peak:.1e}, or constant): agreement here is not evidence")
    if passed is False and finite and ref_finite:
        notes.append(f"rel_l2 {m['rel_l2']:.2e} (limit {tol.rel_l2:.0e}), max_rel {m['max_rel']:.2e} (limit {tol.max_rel:.0e})")
    return OutputDiff(max_abs=m["max_abs"], rel_l2=m["rel_l2"], cosine=m["cosine"], psnr_db=m["psnr_db"],
                      top1=topk_agreement(ref, got, 1), top5=topk_agreement(ref, got, 5),
                      tolerance=tol.to_json(), passed=bool(passed), note="; ".join(notes),
                      degenerate=bool(degenerate), shape=list(got.shape), **ident)


def tolerance_overrides(texts: list[str]) -> dict[str, dict[str, float]]:
    """``--tolerance`` flags -> {output or '*': {metric: limit}}."""
    return dict(parse_tolerance(t) for t in texts)


def diffs(target: str, runtime: str, ref: Any, got: dict[str, list[list[Any]]], names: list[str], precision: str,
          tolerances: list[str] | dict[str, dict[str, float]] | None = None) -> list[OutputDiff]:
    """Compare every output of every sample of every case that ``got`` holds against ``ref``
    (a Reference: ``ref.outputs[case][sample]``): the one comparison every target and command uses.
    An output the user limited with ``--compare-where`` (``ref.compare_where``) is compared only at
    the positions its mask input selects."""
    overrides = tolerances if isinstance(tolerances, dict) else tolerance_overrides(list(tolerances or []))
    where = getattr(ref, "compare_where", None) or {}
    out = []
    for case, runs in got.items():
        for i, outputs in enumerate(runs):
            for name, r, g in zip(names, ref.outputs[case][i], outputs):
                tol = tolerance_for(precision, name, overrides)
                note = ""
                if name in where:
                    r, g, note = masked(r, g, ref.samples[case][i], *where[name])
                row = compare_output(r, g, tol, target=target, runtime=runtime, case=case, output=name, sample=i)
                if note:
                    row.note = f"{row.note}; {note}" if row.note else note
                if note and np.asarray(r).size == 0:  # a mask that selects nothing proves nothing
                    row.passed = False
                    row.note = f"{note}: the mask selects no position, so nothing was compared"
                out.append(row)
    return out


def parse_compare_where(texts: list[str]) -> dict[str, tuple[str, bool]]:
    """``--compare-where OUTPUT:INPUT`` (compare OUTPUT where INPUT != 0) or ``OUTPUT:!INPUT``
    (where INPUT == 0, e.g. a padding mask) -> {output: (input, negate)}."""
    out: dict[str, tuple[str, bool]] = {}
    for text in texts:
        name, _, mask = text.partition(":")
        negate = mask.startswith("!")
        mask = mask[1:] if negate else mask
        if not name or not mask or name in out:
            raise SpecError(f"bad --compare-where {text!r}", hint="write OUTPUT:INPUT (compare where INPUT != 0) or "
                                                                  "OUTPUT:!INPUT (where INPUT == 0), once per output")
        out[name] = (mask, negate)
    return out


def masked(ref: Any, got: Any, sample: dict[str, Any], mask_input: str, negate: bool) -> tuple[Any, Any, str]:
    """The elements of ``ref`` and ``got`` at the positions the mask input selects (the mask's shape
    is a leading part of the output's; it is broadcast over the rest)."""
    ref, got = np.asarray(ref), np.asarray(got)
    mask = np.asarray(sample[mask_input]) != 0
    mask = ~mask if negate else mask
    if got.shape != ref.shape or ref.shape[: mask.ndim] != mask.shape:
        return ref, got, ""
    keep = np.broadcast_to(mask.reshape(mask.shape + (1,) * (ref.ndim - mask.ndim)), ref.shape)
    rule = f"{mask_input} {'== 0' if negate else '!= 0'}"
    return ref[keep], got[keep], f"compared only where {rule} ({int(mask.sum())} of {mask.size} positions; --compare-where)"
