"""Compressed variants of the registered targets: a layer over the targets, not a target.

A variant takes a target's verified base artifact (in the build's work folder) and writes
``<stem>.<variant><suffix>`` beside it with the library's own compression API (onnxruntime.
quantization, coremltools.optimize). Variants are registered by ``(target, variant)``, like
targets by name: ``@register_variant("onnx", "int8")`` on a function ``make(base, out, vctx) ->
info``. A pair nobody registered is reported as skipped with the note in ``NOT_APPLICABLE`` (or a
generic one); the modules in ``BUILTIN`` are imported on first use.

The build side (verdict, localisation, report rows) is :mod:`interop.variants.build`; gates are
data in :mod:`interop.variants.gates`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from interop.errors import SpecError
from interop.support.registry import Registry

KNOWN = ("int8", "int4", "palettize4", "palettize6", "palettize8", "fp16", "int8-static")
NEEDS_CALIBRATION = ("int8-static",)
BUILTIN = ("interop.variants.onnx_variants", "interop.variants.coreml_variants")
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("onnx", "palettize4"): "palettization (k-means lookup tables) has no ONNX form: skipped",
    ("onnx", "palettize6"): "palettization (k-means lookup tables) has no ONNX form: skipped",
    ("onnx", "palettize8"): "palettization (k-means lookup tables) has no ONNX form: skipped",
    ("coreml", "fp16"): "Core ML's default precision already is fp16 (the base package, --precision fp16): skipped",
}
_REGISTRY = Registry("variant", BUILTIN)


@dataclass
class VariantContext:
    """What a variant maker may use besides its base artifact."""

    spec: Any  # InputSpec
    calibration: list[dict[str, Any]] = field(default_factory=list)  # the user's --calibration samples
    work: Path | None = None


@dataclass
class Variant:
    target: str
    name: str
    make: Callable[[Path, Path, VariantContext], dict[str, Any]]
    library: str = ""  # the API that does the compression (printed in the report)


def register_variant(target: str, name: str, library: str = "") -> Callable:
    def register(make: Callable) -> Callable:
        if name not in KNOWN:
            raise RuntimeError(f"variant {name!r} is not one of {KNOWN}")
        _REGISTRY.add((target, name), Variant(target, name, make, library), owner=make.__module__)
        return make

    return register


def registered() -> dict[tuple[str, str], Variant]:
    return _REGISTRY.all()


def get(target: str, name: str) -> Variant | None:
    return registered().get((target, name))


def skip_note(target: str, name: str) -> str:
    return NOT_APPLICABLE.get((target, name), f"interop has no {name} variant of {target} artifacts: skipped")


def parse_compress(values: list[str]) -> list[str]:
    """``--compress int8,int4`` (repeatable) -> variant names in the order given, without repeats."""
    names: list[str] = []
    for text in values:
        for name in (n.strip() for n in text.split(",")):
            if name and name not in names:
                names.append(name)
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise SpecError(f"unknown --compress variant(s) {', '.join(unknown)}", hint=f"use one or more of {','.join(KNOWN)}")
    return names


def check_choices(config: Any) -> None:
    """Exit-2 checks of the compression settings, before anything is built."""
    from interop.variants.gates import gate_overrides

    names = parse_compress(list(getattr(config, "compress", []) or []))
    if names and str(config.model).lower().endswith(".onnx"):
        raise SpecError("--compress is not available for an ONNX source model yet",
                        hint="build from the PyTorch model, or drop --compress")
    overrides = gate_overrides(list(getattr(config, "gate", []) or []))
    stray = [v for v in overrides if v != "*" and v not in names]
    if stray:
        raise SpecError(f"--gate for variant(s) {', '.join(stray)} that --compress does not build",
                        hint="add them to --compress, or drop the --gate")
    needs = [n for n in names if n in NEEDS_CALIBRATION]
    if needs and not getattr(config, "calibration", None):
        raise SpecError(f"--compress {needs[0]} needs calibration samples", hint="pass --calibration FILE.npz "
                        "(arrays named after the inputs, a leading axis of samples)")
    if getattr(config, "calibration", None) and not Path(config.calibration).is_file():
        raise SpecError(f"calibration file {config.calibration} does not exist", hint="check the --calibration path")
