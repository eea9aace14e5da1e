"""Diagnose before converting: every op without a translation, for both targets at once, with
the module path where it occurs; and trace hazards (data-dependent control flow baked into a
trace). Runs on the one trace the build uses, in seconds, without converting anything."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from interop.compare import metrics
from interop.errors import ExportError, first_line

TRACE_CONSISTENCY_REL_L2 = 1e-4
# TracerWarnings whose baked-in decision depends on a tensor's size only, never its values
SHAPE_ONLY_WARNINGS = ("Iterating over a tensor",)


@dataclass
class OpUse:
    """One source op and, per target, 'ok' or why that target cannot translate it."""

    op: str
    where: list[str] = field(default_factory=list)
    support: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "where": self.where, **self.support}

    def blocking(self) -> list[str]:
        """The targets this op stops (their status says it is missing)."""
        return [t for t, s in self.support.items() if s.startswith("missing")]


@dataclass
class Hazard:
    """A reason to distrust the trace. ``blocking`` ones fail the build: a trace proven to depart
    from the model, or data-dependent control flow in the user's own code. TracerWarnings raised in
    installed libraries (torch's own shape checks in nn.LSTM, transformers' size checks) are
    reported but do not block once the trace agreed with the model on every case."""

    message: str
    location: str = ""
    blocking: bool = True
    shape_only: bool = False  # the warned decision depends on a size only (iterating over a tensor)
    case: str = ""  # the case a departure was found at
    unrolled: bool = False  # a departure traced to Python run a size-dependent number of times

    def line(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


def graph_ops(graph: Any) -> dict[str, list[str]]:
    """aten:: ops, ops of other namespaces (``torch.library`` custom ops, ``quantized::``) and
    custom autograd Functions of a TorchScript graph -> module paths using them."""
    found: dict[str, list[str]] = {}
    for node in graph.nodes():
        kind = node.kind()
        if kind == "prim::PythonOp":
            kind = f"prim::PythonOp({node.pyname()})"
        elif kind.startswith(("prim::", "onnx::")) or "::" not in kind:
            continue
        where = _module_path(node.scopeName())
        paths = found.setdefault(kind, [])
        if where and where not in paths:
            paths.append(where)
    return found


def _module_path(scope: str) -> str:
    """``__module.inner/__module.inner.h.0/__module.inner.h.0.attn`` -> ``h.0.attn``."""
    last = scope.split("/")[-1].replace("__module.", "") if scope else ""
    last = last.rpartition("::")[2]  # functional calls: ``pkg.Class::inner``
    if last.startswith("inner."):
        return last[len("inner."):]
    return "(top level forward)" if last in ("inner", "") else last


def op_report(graph: Any, opset: int | None, targets: list[Any] | None = None) -> list[OpUse]:
    """Ops that need attention (not 'ok' on every target), sorted by name; ``opset`` None: each
    target's default (the ONNX target: the opset a build exports at)."""
    if targets is None:
        from interop import targets as registry

        targets = registry.selected(registry.default_names())
    out = []
    for kind, where in sorted(graph_ops(graph).items()):
        use = OpUse(kind, where, {t.name: t.op_support(kind, opset) for t in targets})
        if any(s != "ok" for s in use.support.values()):
            out.append(use)
    return out


def trace_with_warnings(module: Any, args: tuple) -> tuple[Any, list[Hazard]]:
    """torch.jit.trace, keeping the TracerWarnings with the source line that raised them."""
    import torch

    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        traced = torch.jit.trace(module, args, strict=False, check_trace=False)
    hazards = []
    for w in caught:
        if w.category.__name__ == "TracerWarning":
            text = str(w.message).split(". ")[0]
            hazard = Hazard(text, f"{w.filename}:{w.lineno}{_source_line(w.filename, w.lineno)}",
                            blocking=not _in_library(w.filename), shape_only=text.startswith(SHAPE_ONLY_WARNINGS))
            if all(h.line() != hazard.line() for h in hazards):
                hazards.append(hazard)
    return traced, hazards


def _in_library(filename: str) -> bool:
    """Installed code (site-packages, the standard library) rather than the user's own model."""
    import sysconfig

    paths = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    return "site-packages" in filename or "dist-packages" in filename or any(filename.startswith(p) for p in paths)


def _source_line(filename: str, lineno: int) -> str:
    import linecache

    line = linecache.getline(filename, lineno).strip()
    return f" `{line}`" if line else ""


def trace_consistency(traced: Any, ref: Any, names: list[str], outputs: list[str] | None = None) -> list[Hazard]:
    """Run the trace on every case's samples: a trace that departs from the eager model on other
    inputs has baked in a data-dependent decision -- or eager PyTorch itself took another path
    (a fast path) than the one captured. Says where the outputs differ."""
    from interop.runtimes.torch_ref import run_torch

    hazards = []
    for case, samples in ref.samples.items():
        for i, sample in enumerate(samples):
            try:
                got = run_torch(traced, sample, names)
            except Exception as exc:  # the trace cannot even run these shapes
                hazards.append(Hazard(f"the trace fails on case {case}: {first_line(exc.__cause__ or exc)}", case=case))
                break
            for index, (r, g) in enumerate(zip(ref.outputs[case][i], got)):
                name = outputs[index] if outputs and index < len(outputs) else index
                where = (getattr(ref, "compare_where", None) or {}).get(name)
                if where and g.shape == r.shape:  # --compare-where: only the positions the user asked for
                    from interop.compare import masked

                    r, g, _ = masked(r, g, sample, *where)
                if g.shape != r.shape or metrics(r, g)["rel_l2"] > TRACE_CONSISTENCY_REL_L2:
                    name = outputs[index] if outputs and index < len(outputs) else index
                    hazards.append(Hazard(f"the traced graph differs from eager PyTorch on case {case} (output "
                                          f"{name}{_positions(r, g)}): it baked in a data-dependent decision, or "
                                          f"eager PyTorch takes another path (a fast path: nn.TransformerEncoder "
                                          f"with src_key_padding_mask returns zeros at padded positions)", case=case))
                    return hazards
    return hazards


def _positions(ref: Any, got: Any) -> str:
    """``, 12% of elements, e.g. at (0, 4, 0), (0, 5, 0)``: where two outputs differ."""
    import numpy as np

    if ref.shape != got.shape:
        return f", shape {tuple(got.shape)} instead of {tuple(ref.shape)}"
    scale = float(np.nanmax(np.abs(ref))) if ref.size else 0.0
    bad = np.argwhere(~np.isclose(ref, got, rtol=1e-3, atol=1e-3 * (scale or 1.0)))
    where = ", ".join(str(tuple(int(i) for i in b)) for b in bad[:3]) + (" …" if len(bad) > 3 else "")
    return f", {len(bad) / max(ref.size, 1):.0%} of elements, e.g. at {where}" if len(bad) else ""


def name_unrolled(departures: list[Hazard], module: Any, traced: Any, ref: Any, names: list[str]) -> None:
    """A departure at another size: name the user's lines whose Python ran a size-dependent number
    of times (stages/unrolled.py), the likely cause, in the first departure's message."""
    from interop.stages.unrolled import unrolled_lines

    first = next((h for h in departures if h.case and h.case != "example"), None)
    if first is None or module is None:
        return
    lines = unrolled_lines(module, traced, ref.samples[first.case][0], names)
    if lines:
        first.unrolled = True
        first.message += f"; the trace unrolled Python that runs a size-dependent number of times at {'; '.join(lines)}"


def settle_shape_hazards(warned: list[Hazard], departures: list[Hazard]) -> list[Hazard]:
    """A TracerWarning about a decision that depends only on a size (``q, k, v = qkv`` iterates over
    a static axis of 3) is a warning, not a stop, once the trace agreed with the model at every case
    -- every dynamic size at another value, so a size the unpacking depended on would have shown.
    Returns the hazards to keep: the warned ones (settled) and the departures."""
    if not departures:
        for hazard in warned:
            if hazard.shape_only and hazard.blocking:
                hazard.blocking = False
                hazard.message += " (the trace agreed with the model at every case, so the size it unrolls is static)"
    return warned + departures


_UNROLL = ("Iterating over a tensor", "Converting a tensor to a Python index", "Converting a tensor to a Python integer")


def fail_on_hazards(hazards: list[Hazard]) -> None:
    """Raise on blocking hazards; when the trace departs, name the warned lines too (library ones
    included): they are where the baked-in decision most likely is. The hint fits the warning: a
    loop or an unpacking over a size is unrolled at the example size; a branch on a value is baked."""
    if any(h.blocking for h in hazards):
        ordered = sorted(hazards, key=lambda h: not h.blocking)
        lines = "; ".join(h.line() for h in ordered[:3])
        warned = [h.message for h in hazards if h.location]
        if any(h.unrolled for h in hazards) or (warned and all(m.startswith(_UNROLL) for m in warned)):
            hint = ("a Python loop or unpacking over a tensor's size is unrolled at the example size, wrong at "
                    "others; compute it with tensor ops (a vectorised sum, torch.cumsum, a fixed-size unbind), "
                    "or keep that size static (no --dynamic on it)")
        else:
            hint = ("data-dependent control flow makes a traced artifact wrong for other inputs; make the branch "
                    "tensor-based (torch.where)")
        raise ExportError(f"trace hazard: {lines}", hint=f"{hint}, or pass --allow-trace-warnings if you know better")



FP16_MAX = 65504.0


def overflow_hint(where: str, precision: str) -> str:
    """What to do about values beyond fp16's range at ``where`` (an op, a module path), for a build
    at ``precision`` (the build's failed agreement and ``interop check`` say the same)."""
    if precision == "auto":
        return (f"fp16 overflow likely at {where}: --precision auto keeps the ops that overflow in fp32 "
                "(fp32 islands)")
    return (f"fp16 overflow likely at {where}: build with --precision auto (fp32 islands for the ops that "
            "overflow) or --precision fp32")


def fp16_overflow(module: Any, sample: dict[str, Any], names: list[str]) -> tuple[str, str, float] | None:
    """The first op (in execution order) of an eager run whose float output holds a finite value
    beyond fp16's range -- at ``--precision fp16`` Core ML turns it into Inf: (aten op, module
    path, max |value|), or None."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from interop.runtimes.torch_ref import to_torch

    stack: list[str] = []

    class Watch(TorchDispatchMode):
        found: tuple[str, str, float] | None = None

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]) if self.found is None else []:
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                    big = t.detach().abs().float()
                    big = big[torch.isfinite(big)]
                    if big.numel() and float(big.max()) > FP16_MAX:
                        self.found = (func._schema.name, stack[-1] if stack else "(top level forward)", float(big.max()))
                        break
            return out

    def leave(*_: Any) -> None:
        stack.pop()

    hooks = []
    for path, sub in module.named_modules():
        if isinstance(sub, torch.jit.ScriptModule):  # no hooks on TorchScript: no module path there
            continue
        label = _module_path(f"__module.{path}" if path else "")
        hooks.append(sub.register_forward_pre_hook(lambda *_, label=label: stack.append(label) and None))
        hooks.append(sub.register_forward_hook(leave))
    watch = Watch()
    try:
        with torch.no_grad(), watch:
            module(*to_torch(sample, names))
    except Exception:
        return None
    finally:
        for h in hooks:
            h.remove()
    return watch.found
