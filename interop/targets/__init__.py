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

BUILTIN = ("interop.targets.onnx.target", "interop.targets.coreml.target", "interop.targets.coreai.target")
_REGISTRY = Registry("a target named", BUILTIN)


def register_target(cls: type) -> type:
    """Class decorator: register one instance of a Target subclass under its ``name``."""
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


def flatten_outputs(out: Any) -> list[Any]:
    """Tensors of a model output in a stable order: tensors, (nested) tuples/lists, dicts and
    HF ``ModelOutput``s (by key order); None entries are dropped."""
    if out is None:
        return []
    if hasattr(out, "shape") and hasattr(out, "dtype"):
        return [out]
    if isinstance(out, dict) or hasattr(out, "to_tuple"):
        items = out.items() if isinstance(out, dict) else zip(out.keys(), out.to_tuple())
        return [t for _, v in items for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    raise TypeError(f"unsupported model output of type {type(out).__name__}")


def output_keys(out: Any) -> list[str] | None:
    """Names for a dict-like output whose values are single tensors (e.g. ``logits``)."""
    if isinstance(out, dict) or hasattr(out, "to_tuple"):
        keys = list(out.keys())
        values = [out[k] for k in keys]
        if all(hasattr(v, "shape") for v in values):
            return [str(k) for k in keys]
    return None


def flat_module(module: Any) -> Any:
    """Wrap ``module`` so it returns a flat tuple of tensors (what both exporters want).

    TorchScript modules are returned as they are: wrapping them in a traced module breaks both
    torch.onnx's tracer and coremltools, and their outputs are tensors or tuples already."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return module

    class FlatOutputs(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> tuple:
            return tuple(flatten_outputs(self.inner(*args)))

    flat = FlatOutputs(module)
    try:
        return flat.eval()
    except NotImplementedError:  # an ExportedProgram's module() refuses train()/eval(): it is in eval already
        flat.training = False
        return flat
