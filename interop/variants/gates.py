"""Gates for lossy compression: what a compressed variant must keep of the PyTorch fp32 outputs.

Gates are data (printed in every report), per variant, overridable from the command line
(``--gate int4:psnr=28``, ``--gate *:cosine=0.98``) and recorded as user overrides next to the
value they replaced. A metric a variant's outputs do not have (top-1 of a regression output) is
not gated.

* ``psnr``: PSNR in dB, peak = max |reference| (default >= 35 dB, the gate Apple's
  ml-stable-diffusion uses for its compressed UNets), worst output of every case and sample;
* ``cosine``: cosine similarity of the flattened output to the reference, worst row;
* ``top1``: fraction of classifier rows (float outputs with a last axis of classes) whose argmax
  agrees with PyTorch's, over every case and sample;
* ``top5``: fraction of those rows whose PyTorch argmax is among the variant's top 5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from interop.errors import SpecError

METRICS = ("psnr", "cosine", "top1", "top5")
DEFAULT_GATE: dict[str, float] = {"psnr": 35.0, "cosine": 0.99, "top1": 0.9, "top5": 0.97}
VARIANT_GATES: dict[str, dict[str, float]] = {}  # per-variant defaults that differ (none yet: one bar for all)


@dataclass
class Gate:
    limits: dict[str, float]
    source: str = "default"
    overridden: dict[str, float] = field(default_factory=dict)  # the defaults a user override replaced

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.limits, "source": self.source}
        if self.overridden:
            out["default"] = self.overridden
        return out


def gate_for(variant: str, overrides: dict[str, dict[str, float]] | None = None) -> Gate:
    limits = {**DEFAULT_GATE, **VARIANT_GATES.get(variant, {})}
    over = {**(overrides or {}).get("*", {}), **(overrides or {}).get(variant, {})}
    if not over:
        return Gate(limits)
    replaced = {k: limits[k] for k in over if k in limits}
    return Gate({**limits, **over}, "user override", replaced)


def parse_gate(text: str) -> tuple[str, dict[str, float]]:
    """``VARIANT:psnr=30[,cosine=0.98,top1=0.9,top5=1]`` (VARIANT ``*`` for every variant)."""
    name, _, rest = text.partition(":")
    values: dict[str, float] = {}
    for item in filter(None, rest.split(",")):
        key, _, val = item.partition("=")
        key = key.strip()
        if key not in METRICS:
            raise SpecError(f"bad --gate {text!r}: unknown metric {key!r}", hint=f"use {', '.join(METRICS)}")
        try:
            values[key] = float(val)
        except ValueError as exc:
            raise SpecError(f"bad --gate {text!r}: {val!r} is not a number", hint="e.g. --gate int4:psnr=28") from exc
    if not name.strip() or not values:
        raise SpecError(f"bad --gate {text!r}", hint="write VARIANT:psnr=30 (e.g. --gate int4:psnr=28)")
    return name.strip(), values


def gate_overrides(texts: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for text in texts:
        name, values = parse_gate(text)
        out.setdefault(name, {}).update(values)
    return out


def measure(rows: list[Any]) -> dict[str, Any]:
    """The gated metrics of a variant's OutputDiff rows (one runtime): worst PSNR and cosine,
    top-1 / top-5 agreement over every classifier row; None where no output has the metric."""
    useful = [r for r in rows if not r.degenerate] or rows
    psnr = min((r.psnr_db for r in useful), default=None)
    cosine = min((r.cosine for r in useful), default=None)
    top1 = [r.top1 for r in useful if r.top1 is not None]
    top5 = [r.top5 for r in useful if r.top5 is not None]
    return {"psnr": psnr, "cosine": cosine, "top1": sum(top1) / len(top1) if top1 else None,
            "top5": sum(top5) / len(top5) if top5 else None, "degenerate": len(useful) < len(rows) or
            all(r.degenerate for r in rows)}


def misses(measured: dict[str, Any], gate: Gate) -> list[str]:
    """What of ``gate`` the measured metrics miss ([] = passes). NaN never passes."""
    out = []
    for key in METRICS:
        value = measured.get(key)
        if value is None:
            continue
        if isinstance(value, float) and math.isnan(value) or value < gate.limits[key]:
            unit = " dB" if key == "psnr" else ""
            out.append(f"{key} {value:.4g}{unit} < {gate.limits[key]:g}{unit}")
    return out
