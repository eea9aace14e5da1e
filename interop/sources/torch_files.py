"""Every model source -> (module in eval mode, hints), safely.

Sources: TorchScript archives, ``torch.export`` programs (``.pt2``), pickled ``nn.Module``s (only
with ``trust``: unpickling runs code), ``state_dict`` files with a factory, and ``module:factory``
entry points. Hints are the input spec, output names and labels carried by the source: an
``interop.json`` extra file in a TorchScript archive, a ``<stem>.interop.json`` sidecar, or the
example inputs of an ExportedProgram.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interop.errors import LoadError, first_line

SPEC_EXTRA_FILE = "interop.json"


@dataclass
class Source:
    module: Any
    format: str
    path: str
    sha256: str | None = None
    hints: dict[str, Any] = field(default_factory=dict)
    forward_names: list[str] | None = None

    @property
    def parameters(self) -> int:
        try:
            return int(sum(p.numel() for p in self.module.parameters()))
        except Exception:
            return 0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_source(model: str, factory: str | None = None, trust: bool = False, named_by_user: bool = True) -> Source:
    """Load ``model`` (a path or ``module:fn``) into a :class:`Source`. Whatever could run code
    from the file goes through :mod:`interop.trust` first. ``named_by_user``: ``model`` and
    ``factory`` come from the user's command line (a ``MODULE:FN`` there is code the user chose to
    run); False when they come from a file (a report), where importing them needs ``trust``."""
    from interop import trust as boundary

    path = Path(model)
    entry_point = factory or (model if not os.path.lexists(path) and _looks_like_factory(model) else None)
    if entry_point and not (named_by_user or trust):
        raise boundary.Untrusted(f"the entry point {boundary.shown(entry_point)} comes from a file, not from your "
                                 "command line; importing it runs code", hint=boundary.TRUST_HINT)
    if not os.path.lexists(path):
        if _looks_like_factory(model) and factory is None:
            return _from_factory(model)  # code the user named on the command line
        raise LoadError(f"model file {boundary.shown(model)} does not exist", hint="check the path")
    if path.is_dir():
        raise LoadError(f"{boundary.shown(model)} is a folder, not a model file", hint="pass a .pt, .pt2 or .pth file")
    boundary.regular_file(path, "model file")
    if path.stat().st_size == 0:
        raise LoadError(f"model file {boundary.shown(model)} is empty",
                        hint="re-save the model (torch.jit.save or torch.save)")
    kind = _archive_kind(path)
    source = _load_by_kind(kind, path, factory, trust)
    source.path = os.path.abspath(path)  # reports name the source so verify finds it from any folder
    source.sha256 = file_sha256(path)
    sidecar = path.with_name(path.stem + ".interop.json")
    if sidecar.is_file() and not source.hints:
        boundary.regular_file(sidecar, "spec sidecar")
        source.hints = _read_hints(sidecar.read_text(errors="replace"), str(sidecar))
    source.module = _eval(source.module)
    if source.forward_names is None:
        source.forward_names = forward_names(source.module)
    return source


def _load_by_kind(kind: str, path: Path, factory: str | None, trust: bool) -> Source:
    if kind == "torchscript":
        return _load_torchscript(path, trust)
    if kind == "exported_program":
        return _load_exported(path, trust)
    if kind in ("pickle", "legacy_pickle"):
        return _load_pickle(path, factory, trust)
    raise LoadError(f"{path} is not a PyTorch model file (not a TorchScript, torch.save or torch.export archive)",
                    hint="save the model with torch.jit.save, torch.export.save or torch.save")


def _archive_kind(path: Path) -> str:
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(2)
        return "legacy_pickle" if head[:1] == b"\x80" else "unknown"
    from interop.trust import check_zip

    check_zip(path)  # damaged archives and zip bombs are refused before anything is read
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    if any(n.endswith("/archive_format") for n in names) or any("/models/" in n and n.endswith(".json") for n in names):
        return "exported_program"
    if any(n.endswith("/constants.pkl") for n in names) or any("/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle"
    return "unknown"


def _load_torchscript(path: Path, trust: bool) -> Source:
    """TorchScript is code: its source is checked before loading (loading runs ``__setstate__``)
    and its graphs after, for ops outside tensor computation (see interop.trust)."""
    import torch

    from interop import trust as boundary

    boundary.check_torchscript_archive(path, trust)
    extra = {SPEC_EXTRA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        raise LoadError(f"cannot load TorchScript archive {boundary.shown(path)}: {first_line(exc)}",
                        hint="the file is damaged or was saved by an incompatible torch; re-save it") from exc
    if not trust:
        boundary.check_program(boundary.torchscript_ops(module), path, trust)
    text = extra[SPEC_EXTRA_FILE]
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    hints = _read_hints(text, str(path)) if text else {}
    return Source(module, "torchscript", str(path), hints=hints)


def _load_exported(path: Path, trust: bool) -> Source:
    """Without trust, every pickle inside the archive goes through torch's weights_only
    unpickler (torch.export.load's fallback to unrestricted unpickling is switched off), and the
    graph's ops are checked like TorchScript's."""
    import torch

    from interop import trust as boundary

    boundary.check_pt2_archive(path, trust)
    guard = contextlib.nullcontext() if trust else boundary.no_code_unpickling(boundary.shown(path))
    try:
        with guard:
            program = torch.export.load(str(path))
    except LoadError:
        raise
    except Exception as exc:
        raise LoadError(f"cannot load ExportedProgram {boundary.shown(path)}: {first_line(exc)}",
                        hint="re-save it with torch.export.save") from exc
    if not trust:
        boundary.check_program(boundary.exported_ops(program), path, trust)
    hints: dict[str, Any] = {}
    args = program.example_inputs[0] if program.example_inputs else ()
    names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if args and all(hasattr(a, "shape") for a in args):
        hints["inputs"] = [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype).replace("torch.", "")}
                           for n, a in zip(names, args)]
    return Source(_eval_safe(program.module()), "exported_program", str(path), hints=hints, forward_names=names)


def _eval_safe(module: Any) -> Any:
    """An ExportedProgram's module is in eval mode already and refuses ``train()``/``eval()``
    (NotImplementedError), which breaks any wrapper calling ``.eval()`` over it: make them no-ops."""
    import types

    module.train = types.MethodType(lambda self, mode=True: self, module)
    return module


def scan_pickle_globals(path: Path) -> list[str]:
    """The ``module.name`` globals a pickle (or every pickle inside a zip) would import, found by
    reading opcodes only — nothing is executed."""
    from interop.trust import risky_globals

    return risky_globals(path, ())


_SAFE_PREFIXES = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.dict", "builtins.list",
                  "numpy.core.multiarray._reconstruct", "numpy.dtype", "numpy.ndarray", "_codecs.encode")


def _load_pickle(path: Path, factory: str | None, trust: bool) -> Source:
    import torch

    try:  # weights_only never runs code: tensors, dicts and friends only
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as safe_exc:
        if not trust:
            from interop import trust as boundary

            risky = boundary.risky_globals(path, _SAFE_PREFIXES)
            if not risky and "weights_only" not in str(safe_exc) and "Unsupported" not in str(safe_exc):
                raise LoadError(f"cannot read {boundary.shown(path)}: {first_line(safe_exc)}",
                                hint="the file is truncated or not a torch.save file") from safe_exc
            boundary.refuse_pickle(path, risky)
        import os
        import sys

        added = [p for p in dict.fromkeys((str(path.resolve().parent), os.getcwd())) if p not in sys.path]
        sys.path[:0] = added  # the model's classes may live beside it or in the current folder
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise LoadError(f"cannot unpickle {path}: {first_line(exc)}",
                            hint="the classes it needs must be importable: beside the model file, in the current "
                                 "folder, or on PYTHONPATH") from exc
        finally:
            for p in added:
                sys.path.remove(p)
    if isinstance(obj, torch.nn.Module):
        return Source(obj, "pickle", str(path))
    if isinstance(obj, dict):
        if factory is None:
            raise LoadError(f"{path} holds a state_dict (weights only), not a model",
                            hint="pass --factory MODULE:FN that builds the model to load it into")
        return _state_dict_into(obj, factory, path)
    raise LoadError(f"{path} holds a {type(obj).__name__}, not a model", hint="save an nn.Module")


def _state_dict_into(state: dict, factory: str, path: Path) -> Source:
    source = _from_factory(factory)
    try:
        source.module.load_state_dict(state)
    except Exception as exc:
        raise LoadError(f"the state_dict in {path} does not fit the model from {factory}: {first_line(exc)}",
                        hint="use the factory the weights were trained with") from exc
    return Source(source.module, "state_dict", str(path), hints=source.hints)


def _looks_like_factory(text: str) -> bool:
    mod, _, fn = text.partition(":")
    return bool(mod and fn and all(p.isidentifier() for p in mod.split(".")) and fn.isidentifier())


def _from_factory(spec: str) -> Source:
    from interop.trust import import_entry_point

    if not _looks_like_factory(spec):
        raise LoadError(f"bad factory {spec!r}", hint="write MODULE:FN, e.g. mypkg.models:build")
    module, fn = import_entry_point(spec, "factory", LoadError, "name a function that returns an nn.Module")
    try:
        model = fn()
    except Exception as exc:
        raise LoadError(f"factory {spec} raised {first_line(exc)}", hint="fix the factory") from exc
    hints = getattr(fn, "interop_spec", None) or getattr(module, "INTEROP_SPEC", None) or {}
    import torch

    if not isinstance(model, torch.nn.Module):
        raise LoadError(f"factory {spec} returned a {type(model).__name__}, not an nn.Module", hint="return the model")
    return Source(model, "factory", spec, hints=dict(hints))


def _read_hints(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LoadError(f"the interop spec in {where} is not valid JSON: {exc}", hint="fix or delete it") from exc
    if not isinstance(data, dict):
        raise LoadError(f"the interop spec in {where} is not a JSON object", hint="fix or delete it")
    return data


def _eval(module: Any) -> Any:
    try:
        module.eval()
    except (AttributeError, NotImplementedError):  # an ExportedProgram's module() is eval already
        pass
    return module


def forward_names(module: Any) -> list[str] | None:
    """The argument names of ``forward`` (without self), for naming inputs; None if unknown."""
    try:
        if hasattr(module, "forward") and hasattr(module.forward, "schema"):
            return [a.name for a in module.forward.schema.arguments[1:]]
        params = inspect.signature(module.forward).parameters.values()
        return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError, AttributeError):
        return None

