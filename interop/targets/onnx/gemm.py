"""ONNX graph preparation for onnxruntime's weight-only quantizers (no quantization here).

``MatMulNBitsQuantizer`` takes ``MatMul`` nodes with a constant weight only, and exporters write
most ``nn.Linear`` layers as ``Gemm``: :func:`gemm_to_matmul` rewrites each ``Gemm`` whose
weight ``B`` is a constant into the equivalent ``MatMul`` (``B`` transposed in place when
``transB``, ``alpha`` folded into it) followed by an ``Add`` of the bias (``beta`` folded into a
constant bias), so the quantizer can take it. The ``MatMul`` keeps the Gemm's node name and the
``Add`` writes the Gemm's output, so every tensor name of the base graph survives; the weight
initializer keeps its name (a recipe names weights by it). A ``Gemm`` it cannot rewrite (a
computed weight, ``transA``, a weight shared with another node) stays and is listed with why.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def name_nodes(model: Any) -> None:
    """Give every unnamed node a unique name (the quantizers address nodes by name)."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def gemm_to_matmul(model: Any) -> tuple[list[str], dict[str, str]]:
    """Rewrite ``model`` in place; returns (Gemm node names rewritten, {name: why not} for the rest)."""
    from onnx import helper, numpy_helper

    name_nodes(model)
    inits = {t.name: t for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    done, refused = [], {}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "Gemm":
            nodes.append(node)
            continue
        why = _why_not(node, inits, readers)
        if why:
            refused[node.name] = why
            nodes.append(node)
            continue
        a = _attrs(node)
        weight = inits[node.input[1]]
        w = numpy_helper.to_array(weight)
        w = (w.T if a.get("transB", 0) else w) * np.asarray(a.get("alpha", 1.0), w.dtype)
        weight.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w), weight.name))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias is None:
            nodes.append(helper.make_node("MatMul", [node.input[0], weight.name], list(node.output), name=node.name))
        else:
            beta = float(a.get("beta", 1.0))
            if beta != 1.0:
                c = inits[bias]
                c.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(c) * np.asarray(beta, w.dtype), c.name))
            tmp = f"{node.output[0]}_matmul"
            nodes.append(helper.make_node("MatMul", [node.input[0], weight.name], [tmp], name=node.name))
            nodes.append(helper.make_node("Add", [tmp, bias], list(node.output), name=f"{node.name}_bias"))
        done.append(node.name)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return done, refused


def _why_not(node: Any, inits: dict[str, Any], readers: dict[str, int]) -> str | None:
    a = _attrs(node)
    if a.get("transA", 0):
        return "transA=1"
    if len(node.input) < 2 or node.input[1] not in inits:
        return "its weight is computed, not a constant"
    if readers.get(node.input[1], 0) > 1:
        return "its weight is shared with another node"
    if len(inits[node.input[1]].dims) != 2:
        return "its weight is not a matrix"
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None and float(a.get("beta", 1.0)) != 1.0 and (bias not in inits or readers.get(bias, 0) > 1):
        return "beta != 1 on a computed or shared bias"
    return None


def nodes_reading(model: Any, weights: set[str], op_types: tuple[str, ...] | None = None) -> list[str]:
    """Names of the nodes that read one of the initializers ``weights`` (optionally of ``op_types``)."""
    return [n.name for n in model.graph.node if set(n.input) & weights and (op_types is None or n.op_type in op_types)]
