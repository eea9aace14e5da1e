"""Model sources: registered plugins behind one interface, like targets.

A source kind says which models it takes (``claims``), which of its formats run code when loaded
(``formats``: a pickle does, a TorchScript archive does not -- what ``--trust`` is for, and what
``verify``/``bench`` refuse without their own ``--trust``), and how to load one (``load`` ->
``torch_files.Source``). A kind with no PyTorch module to export (an ``.onnx`` file) runs its own
build instead (``build``). The pipeline, ``check``, ``verify`` and ``bench`` find the kind with
:func:`for_model`; none names one.

Built-in kinds (registered by the modules in ``BUILTIN``; kinds are asked newest first, so a
plugin is asked before the built-ins and the catch-all ``pytorch`` last):

* ``onnx``: an ``.onnx`` file (sources/onnx_file.py: ONNX Runtime on the file as the reference, the
  graph converted to PyTorch by onnx2torch for the targets built from a module);
* ``huggingface``: a ``save_pretrained`` folder (sources/hf_folder.py: config.json + safetensors or
  weights-only ``pytorch_model.bin``; ``auto_map`` code only with ``--trust``);
* ``pytorch``: everything else (sources/torch_files.py: TorchScript, ``.pt2`` ExportedProgram,
  pickled module, state_dict + ``--factory``, ``MODULE:FN`` entry point).

A new kind: a ``SourceKind`` subclass with ``@register_source`` in its own module, and the
module's name appended to ``BUILTIN`` (or imported by whoever uses it: a test, another package).
"""

from __future__ import annotations

from typing import Any

from interop.support.registry import RegistrationError, Registry

BUILTIN = ("interop.sources.kinds", "interop.sources.hf_folder")
_REGISTRY = Registry("a source kind named", BUILTIN)


class SourceKind:
    """Base of every source plugin."""

    name: str = ""
    formats: dict[str, bool] = {}  # Source.format -> loading it runs code from the source

    def claims(self, model: str) -> bool:
        raise NotImplementedError

    def load(self, model: str, factory: str | None, trust: bool) -> Any:
        """The model as an ``interop.sources.torch_files.Source`` (module in eval mode, hints)."""
        raise NotImplementedError

    def resolve_spec(self, config: Any, source: Any) -> Any:
        """The build's input spec, when this kind resolves it its own way; None (the default):
        flags > config > what the source carries, by stages/resolve.py (the front end calls it)."""
        return None

    def artifact_stem(self, stem: str) -> str:
        """The stem of the artifacts built from a model with this file stem."""
        return stem

    def __repr__(self) -> str:
        return f"<source {self.name}>"


def register_source(cls: type) -> type:
    """Class decorator: register one instance of a SourceKind subclass under its ``name``."""
    kind = cls()
    if not kind.name:
        raise RegistrationError(f"{cls.__name__} needs a name")
    _REGISTRY.add(kind.name, kind)
    return cls


def unregister_source(name: str) -> None:
    _REGISTRY.remove(name)


def registered() -> dict[str, SourceKind]:
    return _REGISTRY.all()


def for_model(model: str) -> SourceKind:
    """The kind that takes ``model``: kinds registered later (plugins) are asked first, the
    catch-all ``pytorch`` last."""
    kinds = list(registered().values())
    for kind in reversed(kinds):
        if kind.claims(model):
            return kind
    raise LookupError(f"no source kind takes {model!r}")  # pytorch claims everything: a bug


def load(config: Any) -> Any:
    """Load the model a (resolved) BuildConfig names."""
    return for_model(config.model).load(config.model, config.factory, config.trust)


def runs_code(fmt: str | None) -> bool:
    """Whether loading a source of format ``fmt`` (a report's ``model.format``) runs code."""
    return any(kind.formats.get(fmt or "", False) for kind in registered().values())
