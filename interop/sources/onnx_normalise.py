"""Normalise an ONNX graph other tools wrote before it is converted to PyTorch (onnx2torch).

Foreign exporters leave shapes the converter does not take: the TorchScript exporter feeds shared
weights to Conv / Gemm through ``Identity`` nodes (onnx2torch wants initializers there: "KeyError:
'onnx::Conv_160'"), leaves constant subgraphs unfolded (``do_constant_folding=False``), lists
initializers as graph inputs, and builds an LSTM's zero initial states from the batch size at run
time (``ConstantOfShape(Shape(x)...)``), which a trace then bakes at the example batch.

Each step is a maintained tool's pass, and a step is kept only if ONNX Runtime, on probe inputs
drawn from the input spec at every shape case, computes on the stepped graph what it computes on
the source file (``agrees``); otherwise the graph before that step goes on. The steps, in order:

1. ``onnx-ir``: identity elimination, initializers removed from the inputs, unused nodes removed
   (dynamic shapes untouched).
2. ``zero-initial-states``: an LSTM / GRU / RNN ``initial_h`` / ``initial_c`` that is all zeros
   by construction (ConstantOfShape with value 0, or a zero constant, through shape-only ops) is
   dropped: ONNX defines a missing initial state as zeros, so the batch axis stays free.
3. ``dequantize`` (sources/onnx_quant.py): quantize_dynamic's MatMulInteger / ConvInteger -> Cast
   -> Mul(scales) chains as MatMul / Conv of DequantizeLinear'd operands (an int32 sum does not
   fit Core ML's fp16), and each int8 weight's DequantizeLinear folded into the float initializer
   it computes (onnx2torch reads Conv / Gemm weights from initializers).
4. ``onnxsim``: constant folding and shape inference (symbolic input dims kept).
5. ``onnxslim``: asked only where onnxsim failed or changed numerics.

What was tried, kept and why not is recorded (report key ``normalisation``)."""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np

RTOL, ATOL = 1e-4, 1e-5  # as onnxsim checks its own result; relative to each output's magnitude
_SHAPE_ONLY = ("Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Transpose", "Flatten")
_RECURRENT = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}


def normalise(model: Any, probes: list[dict[str, np.ndarray]]) -> tuple[Any, dict[str, Any]]:
    """The normalised ModelProto (the source itself where no step held) and what happened."""
    from interop.support.quiet import Noise, captured

    info: dict[str, Any] = {"steps": [], "kept": None, "nodes_before": len(model.graph.node)}
    reference = _run(model, probes)
    if reference is None:  # ONNX Runtime cannot run the source on the probes: nothing to compare with
        info["skipped"] = "ONNX Runtime could not run the source on the probe inputs"
        return model, info
    current, kept = model, []
    steps: list[tuple[str, Callable[[Any], Any]]] = [("onnx-ir", _onnx_ir), ("zero-initial-states", _zero_states),
                                                     ("dequantize", _dequantize),
                                                     ("onnxsim", _onnxsim), ("onnxslim", _onnxslim)]
    for name, step in steps:
        if name == "onnxslim" and "onnxsim" in kept:
            continue
        try:
            with captured(Noise()):
                candidate = step(copy.deepcopy(current))
        except Exception as exc:
            info["steps"].append({"step": name, "kept": False, "why": f"{type(exc).__name__}: {str(exc)[:160]}"})
            continue
        if candidate is None:
            info["steps"].append({"step": name, "kept": False, "why": "nothing to do"})
            continue
        why = agrees(candidate, probes, reference)
        info["steps"].append({"step": name, "kept": why is None, "why": why,
                              "nodes": len(candidate.graph.node)})
        if why is None:
            current = candidate
            kept.append(name)
    info["kept"] = "+".join(kept) or None
    info["nodes_after"] = len(current.graph.node)
    info["_probes"], info["_reference"] = probes, reference  # for converted_agrees; not reported
    return current, info


def converted_agrees(module: Any, model: Any, info: dict[str, Any]) -> str | None:
    """None when the converted torch ``module`` computes what ONNX Runtime computes on the source
    for the probes (or there are no probes), else why not: which graph to convert is chosen by it."""
    import torch

    probes, reference = info.get("_probes"), info.get("_reference")
    if not probes or reference is None:
        return None
    names = [i.name for i in model.graph.input if i.name in probes[0]]
    got = []
    try:
        with torch.no_grad():
            for probe in probes:
                out = module(*[torch.from_numpy(probe[n]) for n in names])
                out = out if isinstance(out, (tuple, list)) else (out,)
                got.append([o.detach().numpy() for o in out])
    except Exception as exc:
        return f"the converted module fails on the probes: {type(exc).__name__}: {str(exc)[:120]}"
    return _same(reference, got)


def agrees(candidate: Any, probes: list[dict[str, np.ndarray]], reference: list[list[np.ndarray]]) -> str | None:
    """None when ONNX Runtime computes ``reference`` on ``candidate`` for every probe, else why not."""
    got = _run(candidate, probes)
    if got is None:
        return "ONNX Runtime cannot run the normalised graph"
    return _same(reference, got)


def _same(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> str | None:
    for i, (ref, out) in enumerate(zip(reference, got)):
        if len(ref) != len(out):
            return "the normalised graph has other outputs"
        for j, (a, b) in enumerate(zip(ref, out)):
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape:
                return f"output {j} has shape {b.shape}, the source {a.shape} (probe {i})"
            if a.dtype.kind in "fc":
                scale = max(1.0, float(np.max(np.abs(a)))) if a.size else 1.0
                if not np.allclose(b, a, rtol=RTOL, atol=ATOL * scale, equal_nan=True):
                    return f"output {j} differs by {float(np.max(np.abs(b - a))):.2e} (probe {i})"
            elif not np.array_equal(a, b):
                return f"output {j} differs (probe {i})"
    return None


def _run(model: Any, probes: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]] | None:
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        wanted = {i.name for i in sess.get_inputs()}
        return [sess.run(names, {k: v for k, v in p.items() if k in wanted}) for p in probes]
    except Exception:
        return None


# --- the steps -------------------------------------------------------------------------------


def _onnx_ir(model: Any) -> Any:
    import onnx_ir as ir
    from onnx_ir.passes import common

    had_identity = any(n.op_type == "Identity" for n in model.graph.node)
    inits = {i.name for i in model.graph.initializer}
    had_init_inputs = any(i.name in inits for i in model.graph.input)
    if not (had_identity or had_init_inputs):
        return None
    irm = ir.serde.deserialize_model(model)
    ir.passes.PassManager([common.RemoveInitializersFromInputsPass(), common.IdentityEliminationPass(),
                           common.RemoveUnusedNodesPass()])(irm)
    return ir.serde.serialize_model(irm)


def _zero_states(model: Any) -> Any:
    """Drop recurrent initial states that are zeros by construction (ONNX: missing = zeros)."""
    from onnx import numpy_helper

    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}

    def zero(name: str, depth: int = 0) -> bool:
        if name in inits:
            return not np.any(numpy_helper.to_array(inits[name]))
        node = producers.get(name)
        if node is None or depth > 8:
            return False
        if node.op_type == "ConstantOfShape":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            return value is None or not np.any(numpy_helper.to_array(value))
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            return value is not None and not np.any(numpy_helper.to_array(value))
        return node.op_type in _SHAPE_ONLY and bool(node.input) and zero(node.input[0], depth + 1)

    changed = False
    for node in model.graph.node:
        for index in _RECURRENT.get(node.op_type, ()):
            if len(node.input) > index and node.input[index] and zero(node.input[index]):
                node.input[index] = ""
                changed = True
    if not changed:
        return None
    while node_count := len(model.graph.node):  # the zero-state subgraphs are now unused
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        keep = [n for n in model.graph.node if any(o in used for o in n.output)]
        if len(keep) == node_count:
            break
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return model


def _dequantize(model: Any) -> Any:
    from interop.sources.onnx_quant import dequantize_for_conversion

    return dequantize_for_conversion(model)


def _onnxsim(model: Any) -> Any:
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim's own check failed")
    return simplified


def _onnxslim(model: Any) -> Any:
    import onnxslim

    return onnxslim.slim(model)


# --- probes ----------------------------------------------------------------------------------

_NP = {1: np.float32, 10: np.float16, 11: np.float64, 7: np.int64, 6: np.int32, 5: np.int16, 3: np.int8,
       2: np.uint8, 9: np.bool_}
PROBE_SIZES = (2, 3)  # every symbolic dim at each of these: two probes, so a baked size shows


def probes_from_graph(model: Any, seed: int = 0) -> list[dict[str, np.ndarray]] | None:
    """Seeded inputs at the graph's declared shapes, symbolic dims at each of PROBE_SIZES; integers
    0 or 1 (safe as indices into any table); None for a graph input type it cannot fill."""
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    out = []
    for size in PROBE_SIZES:
        probe = {}
        for inp in model.graph.input:
            if inp.name in inits:
                continue
            tt = inp.type.tensor_type
            if not inp.type.HasField("tensor_type") or tt.elem_type not in _NP:
                return None
            shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else size for d in tt.shape.dim]
            dtype = _NP[tt.elem_type]
            if np.issubdtype(dtype, np.floating):
                probe[inp.name] = rng.uniform(0.0, 1.0, size=shape).astype(dtype)
            else:
                probe[inp.name] = rng.integers(0, 2, size=shape).astype(dtype)
        out.append(probe)
    return out


def normalise_for_conversion(model: Any) -> tuple[Any, dict[str, Any]]:
    """:func:`normalise` on probes drawn from the graph itself (loading has no spec yet)."""
    probes = probes_from_graph(model)
    if probes is None:
        return model, {"steps": [], "kept": None, "skipped": "a graph input type the probes cannot fill"}
    try:
        return normalise(model, probes)
    except Exception as exc:  # normalisation is an aid: the source graph goes on unchanged
        return model, {"steps": [], "kept": None, "skipped": f"{type(exc).__name__}: {str(exc)[:160]}"}
