"""Core ML precision: why an fp16 package disagrees with PyTorch, and fp16 with fp32 islands.

* **Cause.** When a Core ML package disagrees, the same ML program is executed again by the
  reference runtime with every fp16-typed value kept in fp32 (``promote_fp16``, the fp32 shadow).
  If the shadow agrees (at the tolerance the package is held to), the cause is ``fp16-precision``;
  if it disagrees as well while the captured graph (jit.trace / torch.export) agrees with eager
  PyTorch, the translation is wrong: ``conversion``, with the first MIL op that departs; if the
  capture itself differs from eager PyTorch, ``capture``.
* **fp32 islands** (``--precision auto``). For an ``fp16-precision`` cause, the per-op error of the
  fp16 program against its fp32 shadow is measured: the ops that overflow fp16 (a value beyond
  65504 in or out) are kept in fp32, then the ops whose own error grows most, a doubling prefix at
  a time, each set converted again with coremltools' ``FP16ComputePrecision(op_selector=...)`` and
  verified as usual, until one passes. The package that passes ships, with the ops kept in fp32.

Ops are named as the saved program names them, without the ``_cast_fp16`` suffix the fp16 pass
appends to the ops it turns into fp16; the pass's own names (``input.3``) are matched in that
spelling (``input_3``). Names are stable across conversions of the same capture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

MODES = ("auto", "fp16", "fp32")
CAUSES = ("fp16-precision", "conversion", "capture")
FP16_MAX = 65504.0
MAX_ATTEMPTS = 6
"""Conversions the island search may spend (each one is converted and verified in full)."""
_SKIP = {"const", "cast", "read_state", "coreml_update_state"}
_SUFFIX = "_cast_fp16"


def compute_precision(precision: str) -> str:
    """The Core ML compute precision a ``--precision`` value converts with (auto: fp16 first)."""
    return "fp32" if precision == "fp32" else "fp16"


def coreml_compute_precision(precision: str, fp32_ops: Iterable[str] = ()) -> Any:
    """coremltools' ``compute_precision=`` argument: FLOAT32, FLOAT16, or the fp16 pass with the
    named ops (fp16-pass names) left in fp32."""
    import coremltools as ct

    if compute_precision(precision) == "fp32":
        return ct.precision.FLOAT32
    keep = frozenset(fp32_ops)
    if not keep:
        return ct.precision.FLOAT16
    return ct.transform.FP16ComputePrecision(op_selector=lambda op: saved_name(op.name) not in keep)


def saved_name(name: str) -> str:
    """An op name in the fp16 pass as the saved program spells it (``input.3`` -> ``input_3``,
    ``79`` -> ``op_79``: coremltools' NameSanitizer for op names)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return "op_" + name if re.match(r"[^A-Za-z_]", name) else name


def pass_name(op_name: str) -> str:
    """An op's name in coremltools' fp16 pass, from its name in the saved program."""
    return op_name[: -len(_SUFFIX)] if op_name.endswith(_SUFFIX) else op_name


# --- measuring -------------------------------------------------------------------------------------

@dataclass
class OpError:
    """One MIL op's error in the fp16 program against the same op in the fp32 shadow."""

    name: str  # the fp16-pass name
    op_type: str
    error: float  # rel_l2 of its output against the shadow (inf when it turns non-finite)
    growth: float  # its error minus the largest error of its inputs: what the op itself adds
    overflow: bool  # a value beyond fp16's range flows into or out of it (in the shadow)
    fp16: bool  # its output is fp16 in this program

    def to_json(self) -> dict[str, Any]:
        return {"op": self.name, "type": self.op_type, "rel_l2": _finite(self.error),
                "growth": _finite(self.growth), "overflow": self.overflow}


def _finite(v: float) -> float | str:
    return round(float(v), 6) if np.isfinite(v) else "inf"


def _rel(value: Any, shadow: Any) -> float:
    a, b = np.asarray(value, np.float64), np.asarray(shadow, np.float64)
    if a.shape != b.shape or a.size == 0:
        return 0.0
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
        return float("inf")
    with np.errstate(all="ignore"):
        scale = float(np.linalg.norm(b))
        err = float(np.linalg.norm(a - b)) / scale if scale > 1e-12 else 0.0
    return err if np.isfinite(err) else 0.0


def _is_float(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.dtype.kind == "f"


def _ops(block: Any) -> Iterable[Any]:
    for op in block.operations:
        yield op
        for inner in getattr(op, "blocks", []):
            yield from _ops(inner)


def _input_names(op: Any) -> list[str]:
    names = []
    for v in op.inputs.values():
        for var in v if isinstance(v, (list, tuple)) else [v]:
            names.append(var.name)
    return names


def op_errors(loaded: Any, feed: dict[str, Any], state_maker: Callable[[], Any] | None = None) -> list[OpError]:
    """Every compute op of ``loaded`` (a ``mil.LoadedModel``) on one feed, in program order; a
    stateful program runs from fresh states in both runs."""
    kwargs = (lambda: {"state": state_maker()}) if state_maker else dict
    _, declared = loaded.predict(feed, intermediate=True, **kwargs())
    _, shadow = loaded.predict(feed, intermediate=True, promote_fp16=True, **kwargs())
    errors: dict[str, float] = {}
    out: list[OpError] = []
    for op in _ops(loaded.program.functions["main"]):
        outs = [v.name for v in op.outputs if _is_float(declared.get(v.name)) and v.name in shadow]
        if op.op_type == "cast":  # a cast carries its input's error (and adds fp16 rounding)
            for name in outs:
                errors[name] = _rel(declared[name], shadow[name])
        if op.op_type in _SKIP or not outs:
            continue
        ins = [n for n in _input_names(op) if n in shadow]
        err = max(_rel(declared[n], shadow[n]) for n in outs)
        before = max((errors.get(n, 0.0) for n in ins), default=0.0)
        for n in outs:
            errors[n] = err
        big = any(_is_float(shadow.get(n)) and shadow[n].size and
                  float(np.nanmax(np.abs(shadow[n]))) > FP16_MAX for n in ins + outs)
        growth = err - before if np.isfinite(err) and np.isfinite(before) else (float("inf") if not np.isfinite(err) and np.isfinite(before) else 0.0)
        out.append(OpError(pass_name(op.name), op.op_type, err, growth, big,
                           any(declared[n].dtype == np.float16 for n in outs)))
    return out


def candidates(errors: list[OpError], floor: float = 1e-4) -> tuple[list[str], list[str]]:
    """(ops that must run fp32: fp16 ones a value beyond fp16's range flows through; then the
    other fp16 ops whose own error grows, largest growth first)."""
    required = [e.name for e in errors if e.overflow and e.fp16]
    ranked = sorted((e for e in errors if e.fp16 and e.name not in required and e.growth > floor),
                    key=lambda e: -e.growth)
    seen: list[str] = []
    for e in ranked:
        if e.name not in seen:
            seen.append(e.name)
    return list(dict.fromkeys(required)), seen


def island_sets(required: list[str], ranked: list[str], attempts: int = MAX_ATTEMPTS) -> list[list[str]]:
    """The op sets to try, smallest first: the required ops, then a doubling prefix of the
    ranked ones (1, 2, 4, ...), the last try being all of them."""
    sets: list[list[str]] = []
    if required:
        sets.append(list(required))
    k = 1
    while k < len(ranked) and len(sets) < attempts - 1:
        sets.append(required + ranked[:k])
        k *= 2
    if ranked and len(sets) < attempts:
        sets.append(required + ranked)
    return sets


def fp32_share(loaded: Any, feed: dict[str, Any], state_maker: Callable[[], Any] | None = None) -> dict[str, float]:
    """Share of the program's compute ops, and of the elements they produce, that run in fp32."""
    kwargs = {"state": state_maker()} if state_maker else {}
    _, values = loaded.predict(feed, intermediate=True, **kwargs)
    ops = elements = fp32_ops = fp32_elements = 0
    for op in _ops(loaded.program.functions["main"]):
        if op.op_type in _SKIP:
            continue
        outs = [values[v.name] for v in op.outputs if _is_float(values.get(v.name))]
        if not outs:
            continue
        size = sum(v.size for v in outs)
        wide = any(v.dtype == np.float32 for v in outs)
        ops, elements = ops + 1, elements + size
        fp32_ops, fp32_elements = fp32_ops + wide, fp32_elements + (size if wide else 0)
    return {"ops": round(fp32_ops / max(ops, 1), 4), "elements": round(fp32_elements / max(elements, 1), 4)}


# --- the search ------------------------------------------------------------------------------------

@dataclass
class Attempt:
    fp32_ops: list[str]
    passed: bool
    worst_rel_l2: float
    payload: Any = None


@dataclass
class Islands:
    """The outcome of the island search (``report`` is the report entry's ``fp32_islands``)."""

    chosen: Attempt | None
    tried: list[Attempt] = field(default_factory=list)
    measured: list[OpError] = field(default_factory=list)

    def report(self, before: float) -> dict[str, Any]:
        worst = sorted(self.measured, key=lambda e: -e.growth if np.isfinite(e.growth) else -1e300)[:8]
        return {"ops": self.chosen.fp32_ops if self.chosen else [],
                "passed": self.chosen is not None,
                "rel_l2_before": _finite(before),
                "rel_l2_after": _finite(self.chosen.worst_rel_l2) if self.chosen else None,
                "tried": [{"ops": len(a.fp32_ops), "passed": a.passed, "rel_l2": _finite(a.worst_rel_l2)}
                          for a in self.tried],
                "worst_ops": [e.to_json() for e in worst]}


def search(errors: list[OpError], attempt: Callable[[list[str]], Attempt]) -> Islands:
    """Try :func:`island_sets` in order; the first set whose package passes is chosen."""
    required, ranked = candidates(errors)
    result = Islands(None, measured=errors)
    for ops in island_sets(required, ranked):
        tried = attempt(ops)
        result.tried.append(tried)
        if tried.passed:
            result.chosen = tried
            break
    return result


def package_bytes(path: Any) -> int:
    """The bytes of a package folder's files (the fp16 package and the island one are compared)."""
    from pathlib import Path

    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def worst(rows: Iterable[Any]) -> float:
    """The worst rel_l2 among agreement rows (OutputDiff or their JSON)."""
    vals = [float(getattr(r, "rel_l2", r.get("rel_l2") if isinstance(r, dict) else 0.0)) for r in rows]
    vals = [v if not np.isnan(v) else float("inf") for v in vals]
    return max(vals, default=0.0)
