"""Targets: registered plugins, one module each (``onnx``, ``coreml``, ...). Each exports the
prepared source model into the build's work folder and returns a result the pipeline reports and
moves into place. Nothing outside a target's own module names it: the pipeline, the report,
``verify``, ``bench``, ``inspect`` and ``check`` loop over :func:`registered`.

A target registers itself with ``@register_target`` on its class; the modules listed in
``BUILTIN`` are imported on first use (adding a built-in target is its module and one line here).
Targets from elsewhere (tests, other packages) register by importing their module."""

from __future__ import annotations

from typing import Any

from interop.errors import SpecError
from interop.support.registry import RegistrationError, Registry
from interop.stages.outputs import flat_module, flatten_outputs, output_keys  # noqa: F401  (moved; kept importable here)

BUILTIN = ("interop.targets.onnx.plugin", "interop.targets.coreml.target", "interop.targets.coreai.target")
_REGISTRY = Registry("a target named", BUILTIN)


def register_target(cls: type) -> type:
    """Class decorator: register one instance of a Target subclass under its ``name``."""
    registered()  # built-ins first, whenever a plugin registers (the registry loads them lazily)
    target = cls()
    if not target.name or not target.suffix:
        raise RegistrationError(f"{cls.__name__} needs a name and a suffix")
    _REGISTRY.add(target.name, target)
    return cls


def unregister_target(name: str) -> None:
    """Remove a registered target (tests register throwaway targets)."""
    _REGISTRY.remove(name)


def registered() -> dict[str, Any]:
    """Every registered target by name, in registration order (built-ins first)."""
    return _REGISTRY.all()


def get(name: str) -> Any:
    targets = registered()
    if name not in targets:
        raise SpecError(f"unknown target {name!r}", hint=f"use one or more of {', '.join(targets)}")
    return targets[name]


def selected(names: list[str]) -> list[Any]:
    """The targets a build asked for, in registration order; unknown names are exit 2."""
    targets = registered()
    unknown = [n for n in names if n not in targets]
    if unknown or not names:
        raise SpecError(f"unknown target(s) {', '.join(unknown) or '(none)'}",
                        hint=f"use --targets with one or more of {','.join(targets)}")
    chosen = [t for n, t in targets.items() if n in names]
    for target in chosen:
        target.ensure_available()  # a chosen target this installation cannot build is exit 2
    return chosen


def default_names() -> list[str]:
    return [n for n, t in registered().items() if t.default]


def for_path(path: Any) -> Any | None:
    """The target whose artifacts look like ``path`` (by suffix), or None."""
    for target in registered().values():
        if target.owns(path):
            return target
    return None


def packages(default_only: bool = False) -> list[str]:
    """The distributions the registered targets (or only the default ones) convert and run with."""
    found: list[str] = []
    for target in registered().values():
        if target.default or not default_only:
            found += [p for p in target.packages if p not in found]
    return found
