"""Why coremltools could not convert a model, said as the cause: the op it has no translation
for (with its module path, and whether interop patches it), a scripted module it cannot read
(trace it instead), or else the converters' own first lines."""

from __future__ import annotations

import re
from typing import Any, Callable

from interop.errors import ExportError, UnsupportedOpError

_MISSING = (re.compile(r"convert function for op '([\w.]+)' not implemented"),
            re.compile(r"Unsupported fx node ([\w.]+)"))


def missing_ops(reasons: list[str]) -> list[str]:
    """The torch op names (``upsample_bicubic2d``) coremltools said it cannot translate."""
    found: list[str] = []
    for reason in reasons:
        for pattern in _MISSING:
            for m in pattern.finditer(reason):
                name = m[1].split(".")[0]
                if name not in found:
                    found.append(name)
    return found


def op_paths(traced: Callable[[], Any], op: str) -> list[str]:
    """Module paths where ``aten::op`` occurs in the shared trace (empty when it cannot be traced)."""
    from interop.stages.preflight import graph_ops

    try:
        graph = traced().inlined_graph
    except Exception:
        return []
    uses = graph_ops(graph)
    return uses.get(f"aten::{op}", uses.get(f"aten::{op}_", []))


def _scripted_control_flow(traced: Callable[[], Any]) -> bool:
    try:
        graph = traced().inlined_graph
    except Exception:
        return False
    return any(n.kind() in ("prim::If", "prim::Loop") for n in graph.nodes())


def conversion_error(rejected: list[dict[str, str]], traced: Callable[[], Any], capture: str,
                     exported: Any = None) -> ExportError:
    """The error a failed Core ML conversion raises, with the hint that matches its cause
    (module paths from the shared trace, else from the shared torch.export capture)."""
    from interop.targets.coreml.ops import PATCHED

    reasons = "; ".join(f"{r['path']}: {r['reason']}" for r in rejected)
    ops = missing_ops([r["reason"] for r in rejected])
    if ops:
        parts = []
        for op in ops:
            where = op_paths(traced, op) or (exported.op_paths(op) if exported is not None else [])
            patched = "patched by interop" if op in PATCHED else "not patched by interop (interop/targets/coreml/ops.py)"
            parts.append(f"aten::{op} (in {', '.join(where[:3]) or 'the model'}; {patched})")
        return UnsupportedOpError(f"coremltools has no translation for {', '.join(parts)} ({reasons})",
                                  hint="`--targets onnx` ships the ONNX model alone; or replace the op in the model "
                                       "with ops Core ML has")
    if _scripted_control_flow(traced):
        return ExportError(f"coremltools could not convert the scripted model ({reasons})",
                           hint="coremltools converts traced graphs: save torch.jit.trace(model, example) (or the "
                                "nn.Module) instead of torch.jit.script; `--targets onnx` ships the ONNX model alone")
    # --no-torchscript rules the trace path out: no other path to suggest
    other = " or the other --coreml-capture path" if capture != "auto" and not isinstance(traced, _no_trace()) else ""
    return ExportError(f"coremltools could not convert the model ({reasons})",
                       hint=f"`interop check` lists the ops each target lacks; `--targets onnx` ships the ONNX model "
                            f"alone{other}")


def _no_trace() -> type:
    from interop.stages.export_capture import NoTrace

    return NoTrace


def capture_difference(capture: str, prep: Any, spec: Any, case: str, index: int) -> str | None:
    """When Core ML disagrees: does the captured graph (the jit.trace, or a torch.export program)
    itself differ from eager PyTorch on that sample? Then eager PyTorch took another path (e.g.
    nn.TransformerEncoder's fast path, zeros at padded positions) and the difference is in the
    capture, not in Core ML. Says where, per output; None when the capture agrees."""
    import numpy as np

    from interop.compare import metrics
    from interop.runtimes.torch_ref import run_torch

    sample, eager = prep.ref.samples[case][index], prep.ref.outputs[case][index]
    graph = _captured_graph(capture, prep, spec)
    if graph is None:
        return None
    try:
        got = run_torch(graph, sample, spec.names())
    except Exception:
        return None
    for name, ref, out in zip(prep.names, eager, got):
        if ref.shape != out.shape or metrics(ref, out)["rel_l2"] <= 1e-4:
            continue
        bad = np.argwhere(np.abs(ref.astype(np.float64) - out) > 1e-3 * (np.abs(ref).max() + 1e-12))
        where = ", ".join(str(tuple(int(i) for i in b)) for b in bad[:4]) + (" …" if len(bad) > 4 else "")
        share = len(bad) / max(ref.size, 1)
        return (f"capture difference: the {capture} graph itself differs from eager PyTorch at output {name!r} "
                f"({share:.0%} of elements, e.g. at {where}) — eager PyTorch takes another path than the captured "
                f"graph (a fast path such as nn.TransformerEncoder's with src_key_padding_mask, zeros at padded "
                f"positions); compare on inputs where both paths agree (--samples FILE.npz with your real masks)")
    return None


def _captured_graph(capture: str, prep: Any, spec: Any) -> Any:
    if capture == "torch.jit.trace":
        return None if prep.trace.error is not None else prep.trace.traced
    try:
        return prep.capture.coreml_program().module()  # the program Core ML converted (shared, not re-exported)
    except Exception:
        return None
