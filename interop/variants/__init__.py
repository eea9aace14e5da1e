"""Compressed variants of the registered targets: a layer over the targets, not a target.

A variant takes a target's verified base artifact (in the build's work folder) and writes
``<stem>.<variant><suffix>`` beside it with the library's own compression API (onnxruntime.
quantization, coremltools.optimize). Variants are registered by ``(target, variant)``, like
targets by name: ``@register_variant(<target name>, "int8")`` on a function ``make(base, out, vctx)
-> info``, in a module of the target's folder that the target lists in ``variant_modules``
(imported on first use). A pair nobody registered is reported as skipped with the target's
``not_applicable`` note (or a generic one).

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


def _target_variant_modules() -> tuple[str, ...]:
    """The modules registering variants: each registered target's ``variant_modules`` (its folder)."""
    from interop import targets

    return tuple(m for t in targets.registered().values() for m in t.variant_modules)


_REGISTRY = Registry("variant", _target_variant_modules)


@dataclass
class VariantContext:
    """What a variant maker may use besides its base artifact."""

    spec: Any  # InputSpec
    calibration: list[dict[str, Any]] = field(default_factory=list)  # the user's --calibration samples
    work: Path | None = None
    options: dict[str, int] = field(default_factory=dict)  # --compress int4:block=64 -> {"block": 64}
    keep: tuple[str, ...] = ()  # weights a mixed-precision recipe keeps at 8 bits (interop.variants.recipe)
    only: tuple[str, ...] = ()  # when set, compress only these weights (the recipe's one-weight probes)
    deployment_target: str = "iOS16"  # the base Core ML package's (--deployment-target)


@dataclass
class Variant:
    target: str
    name: str
    make: Callable[[Path, Path, VariantContext], dict[str, Any]]
    library: str = ""  # the API that does the compression (printed in the report)
    recipe: bool = False  # takes VariantContext.keep: a gate-driven mixed-precision recipe may retry it
    smaller_blocks: tuple[int, ...] = ()  # block sizes retried, in order, when the default block misses its gate


def register_variant(target: str, name: str, library: str = "", recipe: bool = False,
                     smaller_blocks: tuple[int, ...] = ()) -> Callable:
    def register(make: Callable) -> Callable:
        if name not in KNOWN:
            raise RuntimeError(f"variant {name!r} is not one of {KNOWN}")
        _REGISTRY.add((target, name), Variant(target, name, make, library, recipe, tuple(smaller_blocks)),
                      owner=make.__module__)
        return make

    return register


def registered() -> dict[tuple[str, str], Variant]:
    return _REGISTRY.all()


def get(target: str, name: str) -> Variant | None:
    return registered().get((target, name))


def skip_note(target: str, name: str) -> str:
    """Why a (target, variant) nobody registered is skipped: the target's own ``not_applicable``
    note, or a generic one."""
    from interop import targets

    owner = targets.registered().get(target)
    note = owner.not_applicable.get(name) if owner is not None else None
    return note or f"interop has no {name} variant of {target} artifacts: skipped"


OPTIONS: dict[str, dict[str, str]] = {  # variant -> option -> what it sets
    "int4": {"block": "block size along the input axis (Core ML iOS18 per_block, ONNX MatMulNBits)"},
    "int8": {"block": "ONNX MatMulNBits block size (Core ML int8 stays per channel)"},
    **{f"palettize{b}": {"group": "output channels per lookup table (Core ML iOS18 per_grouped_channel)"}
       for b in (4, 6, 8)},
}
BLOCK_SIZES = (16, 32, 64, 128, 256)  # MatMulNBits takes powers of two >= 16


def _option(name: str, text: str, item: str) -> tuple[str, int]:
    key, eq, value = item.partition("=")
    key = key.strip()
    allowed = OPTIONS.get(name, {})
    if not eq or key not in allowed:
        hint = (f"{name} takes " + ", ".join(f"{k}=N ({v})" for k, v in allowed.items())) if allowed else \
            f"{name} takes no options"
        raise SpecError(f"bad --compress {text!r}: unknown option {item!r}", hint=hint)
    try:
        number = int(value)
    except ValueError as exc:
        raise SpecError(f"bad --compress {text!r}: {value!r} is not a whole number", hint=f"e.g. {name}:{key}=32") from exc
    if key == "block" and number not in BLOCK_SIZES:
        raise SpecError(f"bad --compress {text!r}: block must be one of {', '.join(map(str, BLOCK_SIZES))}",
                        hint=f"e.g. {name}:block=64")
    if key == "group" and number < 1:
        raise SpecError(f"bad --compress {text!r}: group must be 1 or more", hint=f"e.g. {name}:group=16")
    return key, number


def parse_compress_specs(values: list[str]) -> list[tuple[str, dict[str, int]]]:
    """``--compress int8,int4:block=64,palettize4:group=16`` (repeatable) -> (variant, options) in
    the order given. A variant named twice with different options is refused: its artifact name
    (``<stem>.<variant><suffix>``) would be ambiguous."""
    specs: dict[str, dict[str, int]] = {}
    for text in values:
        for item in (n.strip() for n in text.split(",")):
            if not item:
                continue
            name, *opts = [p.strip() for p in item.split(":")]
            if name not in KNOWN:
                raise SpecError(f"unknown --compress variant(s) {name}", hint=f"use one or more of {','.join(KNOWN)}")
            options = dict(_option(name, item, o) for o in opts if o)
            if name in specs and specs[name] != options:
                raise SpecError(f"--compress names {name} twice with different options",
                                hint=f"build one {name} per output folder")
            specs[name] = options
    return list(specs.items())


def parse_compress(values: list[str]) -> list[str]:
    """``--compress int8,int4`` (repeatable) -> variant names in the order given, without repeats
    (options such as ``int4:block=64`` are parsed and checked, see :func:`parse_compress_specs`)."""
    return [name for name, _ in parse_compress_specs(values)]


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
