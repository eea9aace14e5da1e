"""Quantized ONNX graphs (what onnxruntime.quantization writes) -> PyTorch, registered into
onnx2torch's registry by ``onnx_extra_ops.register``.

quantize_static writes QDQ graphs: ``QuantizeLinear`` / ``DequantizeLinear`` pairs around each
activation and ``DequantizeLinear`` on each int8 weight (per tensor, or per channel with
``axis``). quantize_dynamic writes ``DynamicQuantizeLinear`` -> ``MatMulInteger`` / ``ConvInteger``
-> ``Cast`` -> ``Mul`` by the product of the two scales.

The converters compute what the ONNX operators define, in floating point (Core ML has no integer
matmul): a weight's DequantizeLinear becomes its float constant ((q - zero_point) * scale, as
ONNX Runtime computes it); QuantizeLinear becomes ``clamp(round(x / scale) + zero_point, qmin,
qmax)`` (round half to even, as ONNX specifies), carried as a float tensor holding integers (a
graph output is cast to its integer type); DequantizeLinear of such a tensor is
``(q - zero_point) * scale``. An integer matmul's int32 sum does not fit fp16 (Core ML's default
compute precision), so before conversion :func:`dequantize_integer_ops` rewrites each
``MatMulInteger`` / ``ConvInteger`` -> ``Cast`` -> ``Mul(a_scale * b_scale)`` chain into
``MatMul`` / ``Conv`` of the two DequantizeLinear'd operands (the same product, scaled before the
sum); onnx_normalise keeps that rewrite only where ONNX Runtime agrees with the source.

Refused (NotImplementedError, so the report names the node): blocked quantization (opset 21
``block_size``), float8 / int4 types, and non-constant per-channel parameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# ONNX elem_type -> (qmin, qmax, torch dtype name) for the integer types Q/DQ carry here
_QRANGE = {2: (0, 255, "uint8"), 3: (-128, 127, "int8"), 4: (0, 65535, "int32"), 5: (-32768, 32767, "int16"),
           6: (-2 ** 31, 2 ** 31 - 1, "int32")}
VERSIONS = (10, 13, 19, 21, 23)


def _module(fn: Any, **buffers: Any) -> Any:
    import torch
    from onnx2torch.utils.common import OnnxToTorchModule

    class Quant(torch.nn.Module, OnnxToTorchModule):
        def __init__(self) -> None:
            super().__init__()
            for name, value in buffers.items():
                self.register_buffer(name, value)

        def forward(self, *args: Any) -> Any:
            return fn(self, *args)

    return Quant()


def _result(module: Any, inputs: tuple, outputs: tuple) -> Any:
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=inputs, outputs=outputs))


def _const(graph: Any, name: str | None) -> Any:
    """The constant tensor named ``name`` (None for an absent optional input), or "computed"."""
    from onnx2torch.utils.common import get_const_value

    if not name:
        return None
    try:
        return get_const_value(name, graph)
    except KeyError:
        return "computed"


def _elem_type(graph: Any, name: str) -> int | None:
    """The ONNX element type of tensor ``name`` (initializer or value_info), or None."""
    if name in graph.initializers:
        return int(graph.initializers[name].proto.data_type)
    info = graph.value_info.get(name) if hasattr(graph.value_info, "get") else None
    if info is None:
        for vi in list(graph.proto.input) + list(graph.proto.output):
            if vi.name == name:
                info = vi
    return int(info.type.tensor_type.elem_type) if info is not None else None


def _check_supported(node: Any) -> int:
    attrs = node.attributes
    if int(attrs.get("block_size", 0) or 0):
        raise NotImplementedError(f"{node.proto.op_type} with block_size (blocked quantization)")
    return int(attrs.get("axis", 1))


def _broadcast(param: Any, axis: int, rank: int) -> Any:
    """A per-channel (1-D) parameter shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    if param.dim() == 0 or param.numel() == 1:
        return param.reshape(())
    a = axis % rank
    return param.reshape([-1] + [1] * (rank - a - 1))


def _zero(graph: Any, name: str | None, like: Any) -> Any:
    import torch

    value = _const(graph, name)
    if value is None:
        return torch.zeros((), dtype=torch.float32)
    if isinstance(value, str):
        raise NotImplementedError("a computed (non-constant) zero point")
    del like
    return value.to(torch.float32)


def dequantize_linear(node: Any, graph: Any) -> Any:
    import torch

    axis = _check_supported(node)
    names = list(node.input_values) + [""] * 2
    x, scale = _const(graph, names[0]), _const(graph, names[1])
    if isinstance(scale, str):
        return _dynamic_dequantize(node, graph, names)
    zero = _zero(graph, names[2], x)
    out_dtype = scale.dtype
    if isinstance(x, torch.Tensor):  # a weight: its float value, computed once
        rank = x.dim()
        value = ((x.to(torch.float32) - _broadcast(zero, axis, rank)) * _broadcast(scale.float(), axis, rank))
        return _result(_module(lambda self: self.value, value=value.to(out_dtype)), (), node.output_values)

    def forward(self: Any, q: Any) -> Any:
        rank = q.dim()
        return ((q.to(torch.float32) - _broadcast(self.zero, axis, rank))
                * _broadcast(self.scale, axis, rank)).to(self.scale.dtype)

    return _result(_module(forward, zero=zero, scale=scale.to(out_dtype)), (names[0],), node.output_values)


def _dynamic_dequantize(node: Any, graph: Any, names: list[str]) -> Any:
    """DequantizeLinear with a computed (per-tensor) scale and zero point, as DynamicQuantizeLinear
    produces them."""
    import torch

    inputs = tuple(n for n in names[:3] if n)

    def forward(self: Any, q: Any, scale: Any, zero: Any = None) -> Any:
        z = zero.to(scale.dtype) if zero is not None else 0.0
        return (q.to(scale.dtype) - z) * scale

    return _result(_module(forward), inputs, node.output_values)


def quantize_linear(node: Any, graph: Any) -> Any:
    import torch

    axis = _check_supported(node)
    names = list(node.input_values) + [""] * 2
    scale = _const(graph, names[1])
    if isinstance(scale, str):
        raise NotImplementedError("QuantizeLinear with a computed (non-constant) scale")
    zero_type = _elem_type(graph, names[2]) if names[2] else None
    out_type = int(node.attributes.get("output_dtype", 0) or 0) or zero_type or 2  # default uint8
    if out_type not in _QRANGE:
        raise NotImplementedError(f"QuantizeLinear to ONNX element type {out_type} (float8 / int4 are not converted)")
    qmin, qmax, dtype = _QRANGE[out_type]
    zero = _zero(graph, names[2], None)
    is_output = node.output_values[0] in {o.name for o in graph.proto.output}

    def forward(self: Any, x: Any) -> Any:
        rank = x.dim()
        s, z = _broadcast(self.scale, axis, rank), _broadcast(self.zero, axis, rank)
        q = torch.clamp(torch.round(x.to(torch.float32) / s) + z, qmin, qmax)
        return q.to(getattr(torch, dtype)) if is_output else q

    return _result(_module(forward, scale=scale.float(), zero=zero), (names[0],), node.output_values)


def dynamic_quantize_linear(node: Any, graph: Any) -> Any:
    """DynamicQuantizeLinear (uint8): scale from the tensor's range including 0, zero point rounded."""
    import torch

    outputs = {o.name for o in graph.proto.output}
    cast = [o in outputs for o in node.output_values]

    def forward(self: Any, x: Any) -> Any:
        x = x.to(torch.float32)
        lo = torch.clamp(torch.min(x), max=0.0)
        hi = torch.clamp(torch.max(x), min=0.0)
        scale = (hi - lo) / 255.0
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        zero = torch.clamp(torch.round(-lo / safe), 0, 255)
        q = torch.clamp(torch.round(x / safe) + zero, 0, 255)
        q_out = q.to(torch.uint8) if cast[0] else q
        z_out = zero.to(torch.uint8) if len(cast) > 2 and cast[2] else zero
        return q_out, scale, z_out

    return _result(_module(forward), (node.input_values[0],), node.output_values)


def _integer_operand(graph: Any, name: str, zero_name: str | None, column: bool) -> tuple[tuple, dict]:
    """An operand of MatMulInteger / ConvInteger minus its zero point: a constant folded here, or
    an input with a constant zero point (per row / per column broadcast where 1-D)."""
    import torch

    value = _const(graph, name)
    zero = _const(graph, zero_name)
    if isinstance(zero, str):
        raise NotImplementedError("an integer op with a computed (non-constant) zero point")
    zero = torch.zeros(()) if zero is None else zero.to(torch.float32)
    if isinstance(value, torch.Tensor):
        v = value.to(torch.float32)
        z = zero if zero.numel() == 1 else (zero.reshape(-1) if column else zero.reshape([-1] + [1] * (v.dim() - 1)))
        return (), {"value": v - z}
    return (name,), {"zero": zero}


def integer_op(kind: str) -> Any:
    """MatMulInteger / ConvInteger computed in float32 on the integer values (exact below 2**24)."""

    def converter(node: Any, graph: Any) -> Any:
        import torch

        names = list(node.input_values) + [""] * 4
        a_in, a_buf = _integer_operand(graph, names[0], names[2], column=False)
        b_in, b_buf = _integer_operand(graph, names[1], names[3], column=(kind == "MatMulInteger"))
        attrs = node.attributes
        conv = {"stride": list(attrs.get("strides", [1, 1])), "dilation": list(attrs.get("dilations", [1, 1])),
                "groups": int(attrs.get("group", 1))}
        pads = list(attrs.get("pads", []))
        if kind == "ConvInteger":
            if _text(attrs.get("auto_pad", "NOTSET")) != "NOTSET" or (pads and pads[: len(pads) // 2]
                                                                    != pads[len(pads) // 2:]):
                raise NotImplementedError("ConvInteger with auto_pad or asymmetric pads")
            conv["padding"] = pads[: len(pads) // 2] if pads else 0
        buffers = {f"a_{k}": v for k, v in a_buf.items()} | {f"b_{k}": v for k, v in b_buf.items()}

        def operand(self: Any, prefix: str, given: list) -> Any:
            if hasattr(self, f"{prefix}_value"):
                return getattr(self, f"{prefix}_value")
            x = given.pop(0).to(torch.float32)
            z = getattr(self, f"{prefix}_zero")
            if z.numel() > 1:  # MatMulInteger: A's zero point per row, B's per column
                z = z.reshape(-1, 1) if prefix == "a" else z.reshape(-1)
            return x - z

        def forward(self: Any, *given: Any) -> Any:
            rest = list(given)
            a = operand(self, "a", rest)
            b = operand(self, "b", rest)
            if kind == "MatMulInteger":
                return torch.matmul(a, b)
            return torch.nn.functional.conv2d(a, b, **conv) if a.dim() == 4 else \
                torch.nn.functional.conv1d(a, b, **conv)

        return _result(_module(forward, **buffers), a_in + b_in, node.output_values)

    return converter


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def register(add: Any) -> None:
    for version in VERSIONS:
        add("QuantizeLinear", version, quantize_linear)
        add("DequantizeLinear", version, dequantize_linear)
    add("DynamicQuantizeLinear", 11, dynamic_quantize_linear)
    add("MatMulInteger", 10, integer_op("MatMulInteger"))
    add("ConvInteger", 10, integer_op("ConvInteger"))


# --- the rewrite before conversion -----------------------------------------------------------


def dequantize_integer_ops(model: Any) -> Any:
    """``MatMulInteger`` / ``ConvInteger`` -> ``Cast(float)`` -> ``Mul(S)``, where ``S`` is
    ``Mul(a_scale, b_scale)`` and ``a_scale`` comes from the DynamicQuantizeLinear (or constant)
    that quantized the first operand, rewritten to ``MatMul`` / ``Conv`` of ``DequantizeLinear(a)``
    and ``DequantizeLinear(b)``: the same product, with no int32-sized intermediate. None when the
    graph has no such chain."""
    from onnx import helper

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name: i for i in graph.initializer}
    drop: set[int] = set()
    added: list[tuple[Any, list[Any]]] = []  # (node to replace, new nodes)
    for node in graph.node:
        if node.op_type not in ("MatMulInteger", "ConvInteger"):
            continue
        chain = _scaled_chain(node, producers, consumers, inits)
        if chain is None:
            continue
        cast, mul, a_scale, b_scale = chain
        ins = list(node.input) + [""] * 4
        tag = node.name or node.output[0]
        a_dq, b_dq = f"{tag}/a_dequantized", f"{tag}/b_dequantized"
        b_axis = 1 if node.op_type == "MatMulInteger" else 0
        new = [helper.make_node("DequantizeLinear", [ins[0], a_scale] + ([ins[2]] if ins[2] else []), [a_dq],
                                name=f"{tag}/DequantizeA"),
               helper.make_node("DequantizeLinear", [ins[1], b_scale] + ([ins[3]] if ins[3] else []), [b_dq],
                                name=f"{tag}/DequantizeB",
                                **({"axis": b_axis} if _numel(inits, b_scale) > 1 else {})),
               helper.make_node("MatMul" if node.op_type == "MatMulInteger" else "Conv", [a_dq, b_dq], [mul.output[0]],
                                name=f"{tag}/dequantized",
                                **({a.name: helper.get_attribute_value(a) for a in node.attribute}))]
        drop |= {id(cast), id(mul)}
        added.append((node, new))
    if not added:
        return None
    replaced = {id(n): new for n, new in added}
    nodes = []
    for n in graph.node:
        if id(n) in drop:
            continue
        nodes.extend(replaced.get(id(n), [n]))
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _numel(inits: dict[str, Any], name: str) -> int:
    return int(np.prod(inits[name].dims)) if name in inits else 1


def _scaled_chain(node: Any, producers: dict, consumers: dict, inits: dict) -> tuple | None:
    """(cast, mul, a_scale, b_scale) when ``node``'s only consumer is a Cast to float whose only
    consumer multiplies by ``Mul(a_scale, b_scale)``, a_scale being the first operand's scale (a
    DynamicQuantizeLinear output) and b_scale a constant of the second's shape."""
    from onnx import TensorProto

    out = node.output[0]
    users = consumers.get(out, [])
    if len(users) != 1 or users[0].op_type != "Cast":
        return None
    cast = users[0]
    if next((a.i for a in cast.attribute if a.name == "to"), None) != TensorProto.FLOAT:
        return None
    users = consumers.get(cast.output[0], [])
    if len(users) != 1 or users[0].op_type != "Mul":
        return None
    mul = users[0]
    other = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
    scales = producers.get(other)
    quant = producers.get(node.input[0])
    if scales is None or scales.op_type != "Mul" or quant is None or quant.op_type != "DynamicQuantizeLinear":
        return None
    a_scale = quant.output[1]
    if a_scale not in scales.input:
        return None
    b_scale = scales.input[1] if scales.input[0] == a_scale else scales.input[0]
    if b_scale not in inits:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] != quant.output[2]:
        return None
    return cast, mul, a_scale, b_scale


def fold_weight_dequantize(model: Any) -> Any:
    """Each DequantizeLinear of a constant (an int8 weight with constant scale and zero point)
    replaced by the float initializer it computes, ``(q - zero_point) * scale`` in float32 as
    ONNX Runtime computes it: onnx2torch's Conv / Gemm read their weights from initializers.
    None when there is none."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    keep, folded = [], []
    for node in graph.node:
        ins = list(node.input) + [""] * 3
        attrs = {a.name: a for a in node.attribute}
        if (node.op_type != "DequantizeLinear" or not all(n in inits for n in ins[:2])
                or (ins[2] and ins[2] not in inits) or ("block_size" in attrs and attrs["block_size"].i)):
            keep.append(node)
            continue
        q = numpy_helper.to_array(inits[ins[0]])
        if q.dtype.kind not in "iu":
            keep.append(node)
            continue
        scale = numpy_helper.to_array(inits[ins[1]])
        zero = numpy_helper.to_array(inits[ins[2]]) if ins[2] else np.zeros((), q.dtype)
        axis = int(attrs["axis"].i) if "axis" in attrs else 1
        if scale.size > 1:
            shape = [1] * q.ndim
            shape[axis % q.ndim] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        value = ((q.astype(np.int32) - zero.astype(np.int32)).astype(np.float32) * scale.astype(np.float32))
        folded.append(numpy_helper.from_array(value.astype(scale.dtype), node.output[0]))
    if not folded:
        return None
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(folded)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    unused = [i for i in graph.initializer if i.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    return model


def dequantize_for_conversion(model: Any) -> Any:
    """:func:`dequantize_integer_ops` then :func:`fold_weight_dequantize`; None when neither applied."""
    rewritten = dequantize_integer_ops(model)
    folded = fold_weight_dequantize(rewritten if rewritten is not None else model)
    return folded if folded is not None else rewritten
