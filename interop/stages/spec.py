"""Input specifications: names, shapes, dtypes, value ranges and dynamic axes, and the sample
inputs drawn from them.

Text forms (the CLI contract):
    --input  NAME:SHAPE[:DTYPE[:LOW..HIGH]][:KIND[=REF]]
                                                x:1x3x224x224   ids:2x16:int64:0..999
                                                offsets:4:int64:offsets=indices  (kinds: stages/value_kinds.py)
    --dynamic NAME:AXIS=DIM[:MIN..MAX[/STEP]]   x:0=batch:1..64   image:2=height:64..640/32
                                                (/STEP: only multiples of STEP; every size tested is one)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from interop.errors import SpecError
from interop.stages.value_kinds import KIND_DTYPE, check_kinds, fill, is_kind_field, parse_kind

DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
_ALIASES = {"float": "float32", "fp32": "float32", "fp16": "float16", "half": "float16", "double": "float64",
            "long": "int64", "int": "int32"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
DEFAULT_MAX = 4096  # upper bound of a dynamic axis given without one


@dataclass(frozen=True)
class DynamicAxis:
    """One axis of one input that may vary at run time, named as the user named it."""

    axis: int
    name: str
    min: int = 1
    max: int = DEFAULT_MAX
    step: int = 1  # sizes are multiples of it (stride-aligned networks)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "min": self.min, "max": self.max, "step": self.step}

    def allows(self, size: int) -> bool:
        return self.min <= size <= self.max and size % self.step == 0

    def text(self) -> str:
        return f"{self.min}..{self.max}" + (f"/{self.step}" if self.step > 1 else "")


@dataclass
class TensorSpec:
    """One model input: its example shape, dtype, sample value range and dynamic axes; ``kind``
    (``offsets=indices:0``, ``mask``, ... see stages/value_kinds.py) constrains its values, ``sampler``
    records the ``--sampler`` that drew them."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    low: float | None = None
    high: float | None = None
    dynamic: dict[int, DynamicAxis] = field(default_factory=dict)
    kind: str | None = None
    sampler: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                               "dynamic": {str(a): d.to_json() for a, d in sorted(self.dynamic.items())}}
        if self.low is not None:
            out["range"] = [self.low, self.high]
        out["kind"] = self.kind
        if self.sampler is not None:
            out["sampler"] = self.sampler
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TensorSpec":
        try:
            rng = data.get("range") or [None, None]
            spec = cls(name=str(data["name"]), shape=tuple(int(d) for d in data["shape"]),
                       dtype=normalise_dtype(data.get("dtype", "float32")), low=rng[0], high=rng[1])
            if data.get("kind") is not None:
                spec.kind = parse_kind(str(data["kind"]), f"input {spec.name!r}").text()
            spec.sampler = str(data["sampler"]) if data.get("sampler") is not None else None
            for axis, dyn in (data.get("dynamic") or {}).items():
                spec.dynamic[int(axis)] = DynamicAxis(int(axis), str(dyn["name"]), int(dyn.get("min", 1)),
                                                      int(dyn.get("max", DEFAULT_MAX)), int(dyn.get("step", 1)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"malformed input spec {data!r}: {exc}",
                            hint="each input needs a name and a shape") from exc
        validate_tensor(spec)
        return spec


@dataclass
class InputSpec:
    """Every input of the model, plus the names of its outputs (empty: derive them)."""

    inputs: list[TensorSpec]
    output_names: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def by_name(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise SpecError(f"no input named {name!r} (inputs: {', '.join(self.names()) or 'none'})",
                        hint="use one of the model's input names")

    def dims(self) -> dict[str, DynamicAxis]:
        """Every named dynamic dimension once (inputs sharing a name share a size)."""
        out: dict[str, DynamicAxis] = {}
        for t in self.inputs:
            for d in t.dynamic.values():
                out.setdefault(d.name, d)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"inputs": [t.to_json() for t in self.inputs], "outputs": list(self.output_names)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "InputSpec":
        if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
            raise SpecError("malformed input spec: expected {'inputs': [...]}", hint="see `interop build --help`")
        return cls([TensorSpec.from_json(t) for t in data["inputs"]],
                   [str(n) for n in data.get("outputs") or []])


def normalise_dtype(text: str) -> str:
    dtype = _ALIASES.get(str(text).strip().lower(), str(text).strip().lower())
    if dtype not in DTYPES:
        raise SpecError(f"unknown dtype {text!r}", hint=f"use one of {', '.join(DTYPES)}")
    return dtype


def _parse_range(text: str, what: str, integer: bool) -> tuple[float, float]:
    m = re.fullmatch(r"\s*(-?[0-9.eE+-]+)\s*\.\.\s*(-?[0-9.eE+-]+)\s*", text)
    if not m:
        raise SpecError(f"bad range {text!r} in {what}", hint="write LOW..HIGH, e.g. 1..64")
    try:
        lo, hi = (int(m[1]), int(m[2])) if integer else (float(m[1]), float(m[2]))
    except ValueError as exc:
        raise SpecError(f"bad range {text!r} in {what}", hint="write LOW..HIGH with numbers") from exc
    if lo > hi:
        raise SpecError(f"reversed range {text!r} in {what}", hint=f"write it as {m[2]}..{m[1]}")
    return lo, hi


def parse_shape(text: str, what: str) -> tuple[int, ...]:
    parts = text.lower().replace(",", "x").split("x") if text.strip() else []
    if not parts:
        raise SpecError(f"{what} has no shape", hint="write NAME:SHAPE, e.g. x:1x3x224x224")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError as exc:
        raise SpecError(f"bad shape {text!r} in {what}", hint="dims are positive integers joined by 'x'") from exc
    if any(d <= 0 for d in dims):
        raise SpecError(f"shape {text!r} in {what} has a dim <= 0",
                        hint="give the example size; declare variable axes with --dynamic")
    return dims


def parse_input(text: str) -> TensorSpec:
    """Parse ``NAME:SHAPE[:DTYPE[:LOW..HIGH]][:KIND[=REF]]`` (the kind's reference may hold a
    ``:``, as in ``index=x:0``; a kind input's dtype defaults to int64)."""
    what = f"--input {text!r}"
    parts = text.split(":")
    at = next((i for i in range(2, len(parts)) if is_kind_field(parts[i])), len(parts))
    kind = parse_kind(":".join(parts[at:]), what).text() if at < len(parts) else None
    parts = parts[:at]
    if len(parts) < 2 or len(parts) > 4:
        raise SpecError(f"cannot parse {what}",
                        hint="write NAME:SHAPE[:DTYPE[:LOW..HIGH]][:KIND[=REF]], e.g. x:1x3x224x224")
    name = parts[0].strip()
    _check_name(name, what)
    shape = parse_shape(parts[1], what)
    default = KIND_DTYPE if kind else "float32"
    dtype = normalise_dtype(parts[2]) if len(parts) > 2 and parts[2] else default
    low = high = None
    if len(parts) == 4:
        if kind:
            raise SpecError(f"{what} gives both a range and the value kind {kind.split('=')[0]!r}",
                            hint="the kind fixes the values: drop LOW..HIGH")
        low, high = _parse_range(parts[3], what, integer=dtype.startswith(("int", "uint")))
    return TensorSpec(name, shape, dtype, low, high, kind=kind)


def parse_dynamic(text: str) -> tuple[str, DynamicAxis]:
    """Parse ``NAME:AXIS=DIM[:MIN..MAX[/STEP]]`` into (input name, axis)."""
    what = f"--dynamic {text!r}"
    m = re.fullmatch(r"\s*([^:]+):\s*(-?\d+)\s*=\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::([^/]*)(?:/\s*(\S+)\s*)?)?", text)
    if not m:
        raise SpecError(f"cannot parse {what}", hint="write NAME:AXIS=DIM[:MIN..MAX[/STEP]], e.g. x:0=batch:1..64")
    lo, hi = (1, DEFAULT_MAX)
    if m[4] is not None:
        lo, hi = _parse_range(m[4], what, integer=True)
        if lo < 1:
            raise SpecError(f"{what}: the minimum size must be >= 1", hint="e.g. x:0=batch:1..64")
    step = 1
    if m[5] is not None:
        if not m[5].isdigit() or int(m[5]) < 1:
            raise SpecError(f"{what}: the step {m[5]!r} is not a positive integer", hint="e.g. x:2=height:64..640/32")
        step = int(m[5])
        if lo % step or hi % step:
            raise SpecError(f"{what}: the range {lo}..{hi} does not start and end on multiples of {step}",
                            hint=f"e.g. {-(-lo // step) * step}..{hi // step * step}/{step}")
    return m[1].strip(), DynamicAxis(int(m[2]), m[3], int(lo), int(hi), step)


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise SpecError(f"bad input name {name!r} in {what}", hint="names are identifiers like x or input_ids")


def apply_dynamic(spec: InputSpec, name: str, dyn: DynamicAxis) -> None:
    """Attach a dynamic axis to an input, checking the axis and that the example size is in range."""
    tensor = spec.by_name(name)
    rank = len(tensor.shape)
    axis = dyn.axis + rank if dyn.axis < 0 else dyn.axis
    if not 0 <= axis < rank:
        raise SpecError(f"--dynamic {name}:{dyn.axis}: input {name!r} has rank {rank}",
                        hint=f"use an axis in 0..{rank - 1}")
    size = tensor.shape[axis]
    if not dyn.min <= size <= dyn.max:
        raise SpecError(f"--dynamic {name}:{axis}={dyn.name}:{dyn.text()}: the example size {size} "
                        f"is outside the range", hint="widen the range or change the example shape")
    if size % dyn.step:
        raise SpecError(f"--dynamic {name}:{axis}={dyn.name}:{dyn.text()}: the example size {size} is not a "
                        f"multiple of {dyn.step}", hint=f"give an example size such as {size // dyn.step * dyn.step or dyn.step}")
    tensor.dynamic[axis] = DynamicAxis(axis, dyn.name, dyn.min, dyn.max, dyn.step)


def validate_tensor(t: TensorSpec) -> None:
    _check_name(t.name, f"input {t.name!r}")
    if any(d <= 0 for d in t.shape):
        raise SpecError(f"input {t.name!r} has a dim <= 0 in {t.shape}", hint="give positive example sizes")
    for axis, d in t.dynamic.items():
        if not 0 <= axis < len(t.shape) or not d.allows(t.shape[axis]) or d.min < 1 or d.min % d.step:
            raise SpecError(f"dynamic axis {axis} ({d.name}:{d.text()}) does not fit input {t.name!r} "
                            f"of shape {t.shape}", hint="fix the axis or its range")


def validate(spec: InputSpec) -> None:
    names = spec.names()
    if len(set(names)) != len(names):
        raise SpecError(f"duplicate input names {names}", hint="give each input its own name")
    for t in spec.inputs:
        validate_tensor(t)
    check_kinds(spec)
    sizes: dict[str, tuple[int, int, int]] = {}
    for t in spec.inputs:
        for axis, d in t.dynamic.items():
            key = (t.shape[axis], d.min, d.max, d.step)
            if sizes.setdefault(d.name, key) != key:
                raise SpecError(f"dimension {d.name!r} has different sizes or ranges on different inputs",
                                hint="axes that share a name must share example size and range")


# --- shape cases and seeded samples -------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One assignment of sizes to the named dynamic dims; ``example`` has every dim at its
    example size."""

    name: str
    sizes: tuple[tuple[str, int], ...] = ()
    tried: tuple[int, ...] = ()  # sizes the model failed at before this one (no step given)

    def size_of(self, dim: str) -> int | None:
        return dict(self.sizes).get(dim)


def other_size(example: int, lo: int, hi: int, step: int = 1) -> int | None:
    """A second size inside [lo, hi] (a multiple of ``step``), different from the example and,
    where possible, from 1. Without a step an odd size, to catch models that assume even ones."""
    odd = (example * 2 + 1, example + 1, hi, example - 1, lo)
    aligned = (example * 2, example + step, hi // step * step, example - step, lo)
    for candidate in (odd if step == 1 else aligned):
        if lo <= candidate <= hi and candidate % step == 0 and candidate != example and candidate != 1:
            return candidate
    return next((c for c in (lo, hi) if c != example and c % step == 0), None)


def fallback_sizes(example: int, lo: int, hi: int, tried: int) -> list[int]:
    """Other legal sizes to try when the model fails at ``tried`` and the user gave no step:
    even, then multiples of 8, 16 and 32 (stride-aligned networks), above the example first."""
    out: list[int] = []
    for m in (2, 8, 16, 32):
        for candidate in ((example // m + 1) * m, (example - 1) // m * m):
            if lo <= candidate <= hi and candidate not in (example, tried, 0, 1) and candidate not in out:
                out.append(candidate)
                break
    return out


def cases(spec: InputSpec) -> list[Case]:
    """The example case plus one case per named dynamic dim at another size of its range."""
    out = [Case("example")]
    for name, dim in spec.dims().items():
        example = example_size(spec, name)
        size = other_size(example, dim.min, dim.max, dim.step)
        if size is not None:
            out.append(Case(f"{name}={size}", ((name, size),)))
    return out


def export_dim(d: DynamicAxis, made: dict[str, Any]) -> Any:
    """The torch.export dim of a dynamic axis (one per name): ``step * Dim`` for a stepped axis, so
    the exporter knows the size is a multiple of the step."""
    from torch.export import Dim

    if d.name not in made:
        made[d.name] = (Dim(d.name, min=d.min, max=d.max) if d.step == 1
                        else d.step * Dim(f"{d.name}_over_{d.step}", min=max(1, d.min // d.step), max=d.max // d.step))
    return made[d.name]


def example_size(spec: InputSpec, dim: str) -> int:
    """The example size of a named dynamic dim."""
    for t in spec.inputs:
        for axis, d in t.dynamic.items():
            if d.name == dim:
                return t.shape[axis]
    raise KeyError(dim)


def case_shape(tensor: TensorSpec, case: Case) -> tuple[int, ...]:
    shape = list(tensor.shape)
    for axis, d in tensor.dynamic.items():
        size = case.size_of(d.name)
        if size is not None:
            shape[axis] = size
    return tuple(shape)


def make_sample(spec: InputSpec, case: Case, seed: int, sampler: Any = None) -> dict[str, Any]:
    """Seeded random inputs for ``case``: floats uniform in LOW..HIGH (standard normal without a
    range), integers uniform in LOW..HIGH inclusive (0..9 without one), bools fair coins; inputs
    with a value kind as the kind says at this case's sizes; then the ``sampler`` (a
    kinds.Sampler) replaces the inputs it returns."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shapes = {t.name: case_shape(t, case) for t in spec.inputs}
    out: dict[str, Any] = {}
    for t in spec.inputs:
        shape = shapes[t.name]
        if t.kind is not None:
            out[t.name] = fill(t, shapes, rng)
        elif t.dtype == "bool":
            out[t.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif t.dtype.startswith(("int", "uint")):
            lo, hi = (int(t.low), int(t.high)) if t.low is not None else (0, 9)
            out[t.name] = rng.integers(lo, hi + 1, size=shape).astype(t.dtype)
        elif t.low is not None:
            out[t.name] = rng.uniform(t.low, t.high, size=shape).astype(t.dtype)
        else:
            out[t.name] = rng.standard_normal(size=shape).astype(t.dtype)
    if sampler is not None:
        out.update(sampler(spec, shapes, seed))
    return out
