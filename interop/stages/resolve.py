"""Resolve the input spec of a build: CLI flags > config file > embedded spec > ExportedProgram
signature, then check it against the model's ``forward``."""

from __future__ import annotations

from interop.settings import BuildConfig
from interop.errors import SpecError
from interop.sources.torch_files import Source
from interop.stages.spec import InputSpec, TensorSpec, apply_dynamic, parse_dynamic, parse_input, validate


def resolve_spec(config: BuildConfig, source: Source) -> InputSpec:
    hinted = InputSpec.from_json(source.hints) if source.hints.get("inputs") else None
    if config.inputs:
        spec = InputSpec([parse_input(text) for text in config.inputs])
        if hinted:  # flags replace shapes; keep the embedded ranges and dynamic axes where names match
            _inherit(spec, hinted)
    elif hinted:
        spec = hinted
    else:
        names = ", ".join(source.forward_names or []) or "x"
        raise SpecError(f"no input spec for {source.path}: the model does not carry one",
                        hint=f"pass --input for each of its inputs ({names}), e.g. --input x:1x3x224x224")
    for text in config.dynamic:
        name, dyn = parse_dynamic(text)
        apply_dynamic(spec, name, dyn)
    spec.output_names = list(config.output_names) or list(source.hints.get("outputs") or spec.output_names)
    validate(spec)
    _check_forward(spec, source)
    return spec


def _inherit(spec: InputSpec, hinted: InputSpec) -> None:
    by_name = {t.name: t for t in hinted.inputs}
    for t in spec.inputs:
        old: TensorSpec | None = by_name.get(t.name)
        if old is None:
            continue
        if t.kind is None and t.low is None and old.kind is not None and old.dtype == t.dtype:
            t.kind = old.kind
        if t.low is None and t.kind is None and old.low is not None and old.dtype == t.dtype:
            t.low, t.high = old.low, old.high
        if len(old.shape) == len(t.shape):
            for axis, d in old.dynamic.items():
                if d.min <= t.shape[axis] <= d.max:
                    t.dynamic[axis] = d


def _check_forward(spec: InputSpec, source: Source) -> None:
    """Count and names must fit forward(); names are only enforced when the user named inputs
    after forward's arguments in a different order (a likely mix-up)."""
    names = source.forward_names
    if names is None:
        return
    if len(spec.inputs) > len(names) and not _takes_varargs(source):
        raise SpecError(f"{len(spec.inputs)} inputs given ({', '.join(spec.names())}) but forward() takes "
                        f"{len(names)} ({', '.join(names)})", hint="give one --input per forward argument")
    required = _required_count(source)
    if len(spec.inputs) < required:
        raise SpecError(f"forward() needs {required} inputs ({', '.join(names[:required])}) but "
                        f"{len(spec.inputs)} given ({', '.join(spec.names())})", hint="add the missing --input")
    given = spec.names()
    if set(given) <= set(names) and given != names[: len(given)]:
        raise SpecError(f"inputs {given} are named after forward() arguments but in another order "
                        f"(forward takes {names})", hint="list --input in forward()'s order")


def _required_count(source: Source) -> int:
    import inspect

    try:
        if hasattr(source.module.forward, "schema"):
            return sum(1 for a in source.module.forward.schema.arguments[1:] if not a.has_default_value())
        params = inspect.signature(source.module.forward).parameters.values()
        return sum(1 for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    except (TypeError, ValueError, AttributeError):
        return 0


def _takes_varargs(source: Source) -> bool:
    import inspect

    try:
        return any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(source.module.forward).parameters.values())
    except (TypeError, ValueError):
        return False
