"""Value kinds of integer inputs whose values are constrained by other inputs' sizes or their own,
and the user's sampler hook for constraints no kind expresses.

The kind is an extra field of ``--input NAME:SHAPE[:DTYPE[:LOW..HIGH]][:KIND[=REF]]``:

    offsets=IN[:AXIS]   1-D, sorted, first 0, every value below IN's size along AXIS (default 0);
                        strictly increasing while the bags fit (EmbeddingBag offsets)
    index=IN[:AXIS]     every value in 0 .. IN's size along AXIS - 1 (graph edge_index into nodes)
    lengths=IN[:AXIS]   values in 1 .. IN's size along AXIS, sorted longest first, the longest equal
                        to that size (pack_padded_sequence with enforce_sorted, CTC lengths)
    mask                per row (last axis) a run of ones then zeros, the first row all ones
    arange              0, 1, 2, ... along the last axis, the same in every row (position ids)

Values depend only on the *shapes* of a shape case, so every case (and the trace and export
sample) gets values valid at its own sizes. The sampler hook ``MODULE:FN`` is called as
``FN(shapes: dict[str, tuple], rng: numpy.random.Generator) -> dict[str, numpy.ndarray]`` and
replaces the inputs it returns; it is user code imported from the current folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from interop.errors import SpecError, first_line

KINDS = ("offsets", "index", "lengths", "mask", "arange")
_REFERRING = ("offsets", "index", "lengths")  # the kinds bounded by another input's axis
KIND_DTYPE = "int64"  # the dtype of a kind input given without one
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_SYNTAX = "offsets=IN[:AXIS], index=IN[:AXIS], lengths=IN[:AXIS], mask or arange"


@dataclass(frozen=True)
class Kind:
    """A parsed kind: its name and, for the referring kinds, the input and axis bounding it."""

    name: str
    ref: str | None = None
    axis: int = 0

    def text(self) -> str:
        return self.name if self.ref is None else f"{self.name}={self.ref}:{self.axis}"


def is_kind_field(text: str) -> bool:
    """Whether one ``:``-separated field of ``--input`` starts the kind."""
    return text.split("=", 1)[0].strip().lower() in KINDS


def parse_kind(text: str, what: str) -> Kind:
    """``offsets=indices``, ``index=x:0``, ``lengths=audio:1``, ``mask``, ``arange``."""
    name, eq, rest = text.strip().partition("=")
    name = name.strip().lower()
    if name not in KINDS:
        raise SpecError(f"unknown value kind {text!r} in {what}", hint=f"use {_SYNTAX}")
    if name not in _REFERRING:
        if eq:
            raise SpecError(f"value kind {name!r} in {what} takes no reference", hint=f"write just :{name}")
        return Kind(name)
    ref, _, axis = rest.partition(":")
    ref = ref.strip()
    if not _NAME.match(ref):
        raise SpecError(f"value kind {name!r} in {what} needs the input it is bounded by",
                        hint=f"write {name}=INPUT[:AXIS], e.g. {name}=x:0")
    try:
        return Kind(name, ref, int(axis) if axis.strip() else 0)
    except ValueError as exc:
        raise SpecError(f"bad axis {axis!r} in {what}", hint=f"write {name}=INPUT:AXIS with an integer axis") from exc


def check_kinds(spec: Any) -> None:
    """Every kind of ``spec`` fits: its reference exists and has the axis, the tensor has the rank
    the kind needs, the dtype can hold it, and references form no cycle."""
    shapes = {t.name: t.shape for t in spec.inputs}
    refs: dict[str, str] = {}
    for t in spec.inputs:
        if t.kind is None:
            continue
        kind = parse_kind(t.kind, f"input {t.name!r}")
        where = f"input {t.name!r} ({kind.text()})"
        if kind.ref is not None:
            if kind.ref not in shapes:
                raise SpecError(f"{where} refers to no input named {kind.ref!r} (inputs: {', '.join(shapes)})",
                                hint="name one of the model's inputs after '='")
            rank = len(shapes[kind.ref])
            if not -rank <= kind.axis < rank:
                raise SpecError(f"{where}: input {kind.ref!r} has rank {rank}, no axis {kind.axis}",
                                hint=f"use an axis in 0..{rank - 1}")
            refs[t.name] = kind.ref
        if kind.name == "offsets" and len(t.shape) != 1:
            raise SpecError(f"{where} has shape {t.shape}; offsets are 1-D", hint="give offsets a shape like 4")
        if t.dtype == "bool" and kind.name != "mask":
            raise SpecError(f"{where} cannot be bool", hint="give it an integer dtype, e.g. int64")
    _check_cycles(refs)


def _check_cycles(refs: dict[str, str]) -> None:
    for start in refs:
        path, node = [start], refs[start]
        while node in refs and node not in path:
            path.append(node)
            node = refs[node]
        if node in path:
            loop = path[path.index(node):] + [node]
            raise SpecError(f"value kinds refer in a cycle: {' -> '.join(loop)}",
                            hint="bound each kind by an input that is not itself bounded by it")


def fill(t: Any, shapes: dict[str, tuple[int, ...]], rng: np.random.Generator) -> np.ndarray:
    """Values of kind input ``t`` at the sizes ``shapes`` (every input's shape in this case)."""
    kind = parse_kind(t.kind, f"input {t.name!r}")
    shape = shapes[t.name]
    bound = 0
    if kind.ref is not None:
        if kind.ref not in shapes or not -len(shapes[kind.ref]) <= kind.axis < len(shapes[kind.ref]):
            raise SpecError(f"input {t.name!r} ({kind.text()}) refers to a missing input or axis",
                            hint="fix the value kind")
        bound = shapes[kind.ref][kind.axis]
    values = _FILL[kind.name](shape, bound, rng)
    return values.astype(t.dtype)


def _offsets(shape: tuple[int, ...], length: int, rng: np.random.Generator) -> np.ndarray:
    bags = shape[0]
    if bags - 1 <= length - 1:  # distinct starts: no empty bag
        rest = np.sort(rng.choice(np.arange(1, length), size=bags - 1, replace=False))
    else:  # more bags than values: some bags are empty
        rest = np.sort(rng.integers(0, length, size=bags - 1))
    return np.concatenate([[0], rest]).astype(np.int64)


def _index(shape: tuple[int, ...], size: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, size, size=shape)


def _lengths(shape: tuple[int, ...], size: int, rng: np.random.Generator) -> np.ndarray:
    values = rng.integers(1, size + 1, size=shape).reshape(-1)
    if values.size:
        values[0] = size
    return np.sort(values)[::-1].reshape(shape)


def _mask(shape: tuple[int, ...], _: int, rng: np.random.Generator) -> np.ndarray:
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    width = shape[-1]
    keep = rng.integers(1, width + 1, size=rows)
    keep[0] = width
    return (np.arange(width)[None, :] < keep[:, None]).reshape(shape)


def _arange(shape: tuple[int, ...], _: int, rng: np.random.Generator) -> np.ndarray:
    return np.broadcast_to(np.arange(shape[-1]), shape).copy()


_FILL: dict[str, Callable[[tuple[int, ...], int, np.random.Generator], np.ndarray]] = {
    "offsets": _offsets, "index": _index, "lengths": _lengths, "mask": _mask, "arange": _arange}


# --- the sampler hook ----------------------------------------------------------------------------


class Sampler:
    """``--sampler MODULE:FN``: user code that draws some inputs' values, checked on every call."""

    def __init__(self, text: str, fn: Callable[..., Any]):
        self.text, self.fn = text, fn

    def __call__(self, spec: Any, shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
        try:
            got = self.fn(dict(shapes), np.random.default_rng(seed))
        except Exception as exc:
            raise SpecError(f"sampler {self.text} raised {first_line(exc)} at shapes {shapes}",
                            hint="fix the sampler") from exc
        return self.check(spec, shapes, got)

    def check(self, spec: Any, shapes: dict[str, tuple[int, ...]], got: Any) -> dict[str, np.ndarray]:
        """The sampler's arrays, or one clear error: unknown names, wrong shapes or dtypes."""
        if not isinstance(got, dict):
            raise SpecError(f"sampler {self.text} returned a {type(got).__name__}, not a dict",
                            hint="return {input name: numpy array}")
        dtypes = {t.name: t.dtype for t in spec.inputs}
        out = {}
        for name, arr in got.items():
            if name not in dtypes:
                raise SpecError(f"sampler {self.text} returned {name!r}, which is not an input "
                                f"(inputs: {', '.join(dtypes)})", hint="name the arrays after the inputs")
            arr = np.asarray(arr)
            if tuple(arr.shape) != tuple(shapes[name]):
                raise SpecError(f"sampler {self.text} returned {name!r} of shape {tuple(arr.shape)}, this case needs "
                                f"{tuple(shapes[name])}", hint="draw arrays of the shapes the sampler is given")
            if str(arr.dtype) != dtypes[name]:
                raise SpecError(f"sampler {self.text} returned {name!r} as {arr.dtype}, the spec says {dtypes[name]}",
                                hint=f"return .astype(numpy.{dtypes[name]}), or change the --input dtype")
            out[name] = np.ascontiguousarray(arr)
        return out


def load_sampler(text: str) -> Sampler:
    """Import ``MODULE:FN`` (from the current folder or an installed package): runs its code."""
    from interop.trust import import_entry_point

    _, fn = import_entry_point(text, "--sampler", SpecError, "name a function FN(shapes, rng) -> {input name: array}")
    return Sampler(text, fn)
