"""Every change interop makes to the internals of a third-party library, declared in one place:
what it changes, why, the version it was checked against, and when it is in effect.

Most are applied only while interop needs them and undone afterwards (``applied``); a few stay for
the rest of the process (``install``: the CLI's typer fix, and callers of
``targets.coreml.ops.register`` such as tests and scripts). ``interop doctor`` lists them
(``listing``). A new patch: a ``Patch`` appended to ``PATCHES`` with its ``apply`` (the dotted
``module:function`` that applies it and returns the undo), and ``with patches.applied("its-name"):`` where it is needed -- never an assignment into
a library elsewhere in interop.

This module imports none of the patched libraries until a patch is applied (the CLI imports it).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

Undo = Callable[[], None]
_MISSING = object()


@dataclass(frozen=True)
class Patch:
    name: str
    library: str  # the distribution it changes
    changes: str  # what, exactly
    reason: str
    checked: str  # the library version it was written and tested against
    scope: str  # when it is in effect
    where: str  # the code implementing it
    # "module:function" that applies it and returns the undo, imported only when the patch is applied
    # (the implementation lives beside the code it serves; this inventory imports none of it);
    # None: applied by ``where`` itself (declared here)
    apply: str | None = None


def swap(owner: Any, attr: str, value: Any) -> Undo:
    """Set ``owner.attr`` to ``value``; the returned function puts back what was there (or removes
    the attribute when ``owner`` had none of its own)."""
    before = owner.__dict__.get(attr, _MISSING) if hasattr(owner, "__dict__") else getattr(owner, attr, _MISSING)
    setattr(owner, attr, value)

    def undo() -> None:
        if before is _MISSING:
            with contextlib.suppress(AttributeError):
                delattr(owner, attr)
        else:
            setattr(owner, attr, before)

    return undo


@contextlib.contextmanager
def swapped(owner: Any, attr: str, value: Any) -> Iterator[None]:
    """``swap`` for the duration of a block."""
    undo = swap(owner, attr, value)
    try:
        yield
    finally:
        undo()


# --- the patches -------------------------------------------------------------------------------------


def _typer_help_flag() -> Undo:
    """typer coerces every parameter value through a pydantic TypeAdapter, including the implicit
    --help flag's ``None`` on every run where --help is not given: importing pydantic for that
    costs ~0.12 s CPU, half of `interop doctor`. That value only feeds the help callback, which
    ignores ``None``: pass it through. A no-op where typer has no such hook."""
    param = getattr(sys.modules.get("typer.core"), "_TyperParameter", None)
    original = getattr(param, "process_value", None)
    if original is None:
        return lambda: None

    def process_value(self: Any, ctx: Any, value: Any) -> Any:
        if value is None and self.name == "help":
            return None
        return original(self, ctx, value)

    return swap(param, "process_value", process_value)


CONFORMANCE = "the coremltools op-test session only (pytest -p interop.runtimes.mil.conformance_plugin)"

PATCHES: tuple[Patch, ...] = (
    Patch("typer-help-flag", "typer", "typer.core._TyperParameter.process_value passes --help's None through",
          "typer coerces the unused --help value through pydantic on every command: ~0.12 s of CPU per run",
          "typer 0.29.2", "the `interop` command's process", "interop/patches.py:_typer_help_flag", "interop.patches:_typer_help_flag"),
    Patch("coremltools-torch-ops", "coremltools",
          "adds torch op translations coremltools lacks and replaces four that fail on real models "
          "(targets/coreml/ops.py: PATCHED, OVERRIDES)",
          "aten::diff, new_ones, __and__, where.Scalar* have no translation; adaptive pools, permute and transpose "
          "fail on dynamic or rank-6 shapes, group_norm on a flexible batch (each reason in coreml_ops.OVERRIDES; "
          "group_norm's shared _group_norm_impl is swapped too)",
          "coremltools 9.0", "during Core ML conversion (interop build); process-wide after coreml_ops.register()",
          "interop/targets/coreml/ops.py", "interop.targets.coreml.patches:coremltools_torch_ops"),
    Patch("coremltools-fp16-overflow-check", "coremltools",
          "FP16ComputePrecision.fp16_overflow: the same test, a chunk at a time",
          "coremltools' own builds np.where over the whole constant: 560 MB for BERT-base's embedding table, "
          "the peak of the whole build", "coremltools 9.0", "during Core ML conversion (interop build)",
          "interop/targets/coreml/target.py:_fp16_overflow", "interop.targets.coreml.patches:fp16_overflow_check"),
    Patch("torch-onnx-export-params", "torch",
          "torch._C.Graph._export_onnx is wrapped to leave large parameters out of the serialized model",
          "the TorchScript exporter serializes a second copy of every weight; interop stores one copy itself",
          "torch 2.13.0", "during the TorchScript ONNX export (interop build, bench)",
          "interop/targets/onnx/weights.py:export_params_apart",
          "interop.targets.onnx.weights:export_params_apart"),
    Patch("onnx2torch-import-and-converters", "onnx2torch",
          "a placeholder torchvision module while onnx2torch is imported (removed right after); converters "
          "added to its registry for the ops and opset versions it lacks (sources/onnx_extra_ops.py, "
          "onnx_convert.VERSION_ALIASES)",
          "onnx2torch imports torchvision only for NMS/RoiAlign, and torchvision cannot be installed beside the "
          "CPU torch; it has no LSTM, GRU or Gelu-20 and stops at opset ~16",
          "onnx2torch 1.5.15", "from the first conversion of an .onnx source on (process-wide)",
          "interop/sources/onnx_convert.py:_import_onnx2torch"),
    Patch("conformance-macos", "coremltools",
          "coremltools._deps._IS_MACOS, testing_utils._IS_MACOS, models' _is_macos / _macos_version, "
          "model._MLModelProxy = None", "coremltools' op tests predict only on macOS; here they run on the "
          "reference runtime", "coremltools 9.0", CONFORMANCE,
          "interop/runtimes/mil/conformance_plugin.py:pretend_macos", "interop.runtimes.mil.conformance_plugin:pretend_macos"),
    Patch("conformance-predict", "coremltools",
          "MLModel.predict, MLModel.make_state, model._create_mlpackage, converters_entry.gc, "
          "op testing_utils.compare_backend", "predictions go to the reference runtime; stateful cases skip; "
          "temporary packages are removed per case; a young-generation gc per conversion; failures classified",
          "coremltools 9.0", CONFORMANCE, "interop/runtimes/mil/conformance_plugin.py:predict_here",
          "interop.runtimes.mil.conformance_plugin:predict_here"),
    Patch("conformance-fusion-patterns", "coremltools",
          "the gelu / prelu fusion passes' pattern builders are cached (functools.cache)",
          "rebuilding the patterns is a third of converting a one-op test program", "coremltools 9.0", CONFORMANCE,
          "interop/runtimes/mil/conformance_plugin.py:cache_fusion_patterns",
          "interop.runtimes.mil.conformance_plugin:cache_fusion_patterns"),
)

COREML_CONVERSION = ("coremltools-torch-ops", "coremltools-fp16-overflow-check")

_BY_NAME = {p.name: p for p in PATCHES}
_ACTIVE: dict[str, Undo | None] = {}  # name -> its undo (None: installed for the process)


def get(name: str) -> Patch:
    return _BY_NAME[name]


def is_active(name: str) -> bool:
    return name in _ACTIVE


@contextlib.contextmanager
def applied(*names: str) -> Iterator[None]:
    """Apply the named patches for the duration of a block, then undo them (in reverse order).
    A patch already in effect (installed, or applied by an enclosing block) is left to its owner."""
    mine: list[str] = []
    try:
        for name in names:
            if name not in _ACTIVE:
                _ACTIVE[name] = _apply(name)
                mine.append(name)
        yield
    finally:
        for name in reversed(mine):
            undo = _ACTIVE.pop(name)
            if undo is not None:
                undo()


@contextlib.contextmanager
def applying(name: str, *args: Any) -> Iterator[None]:
    """Apply one patch whose implementation takes per-use state (``apply(*args) -> undo``) for
    the duration of a block, then undo it (e.g. the ONNX export's parameters handed to a holder)."""
    undo = _apply(name, *args)
    _ACTIVE[name] = undo
    try:
        yield
    finally:
        _ACTIVE.pop(name, None)
        undo()


def install(name: str) -> None:
    """Apply a patch for the rest of the process (idempotent)."""
    if name not in _ACTIVE:
        _apply(name)
        _ACTIVE[name] = None


def _apply(name: str, *args: Any) -> Undo:
    patch = _BY_NAME[name]
    if patch.apply is None:
        raise ValueError(f"patch {name!r} is applied by {patch.where}, not through interop.patches")
    module, _, function = patch.apply.partition(":")
    return getattr(importlib.import_module(module), function)(*args)


def listing() -> list[dict[str, Any]]:
    """The declared patches as ``interop doctor`` shows them (nothing is imported)."""
    return [{"name": p.name, "library": p.library, "changes": p.changes, "reason": p.reason,
             "checked_against": p.checked, "scope": p.scope, "where": p.where} for p in PATCHES]
