"""Converters onnx2torch lacks for ONNX ops that interop's own exports and common exporters emit,
registered into onnx2torch's registry (``onnx_convert._import_onnx2torch`` calls :func:`register`).

Each maps the ONNX op onto one torch operation with the same semantics for the attribute values
it accepts; anything else (peepholes, clip, non-default activations, sequence_lens) raises
NotImplementedError, which interop reports as the op the converter cannot handle. Every converter
is checked against ONNX Runtime in tests/test_onnx_source.py.
"""

from __future__ import annotations

from typing import Any

ONNX_LSTM_TO_TORCH = [0, 2, 3, 1]  # ONNX gates i,o,f,c -> torch i,f,g,o
ONNX_GRU_TO_TORCH = [1, 0, 2]  # ONNX gates z,r,h -> torch r,z,n


def _mapping(inputs: tuple, outputs: tuple) -> Any:
    from onnx2torch.utils.common import OnnxMapping

    return OnnxMapping(inputs=inputs, outputs=outputs)


def _result(module: Any, inputs: tuple, outputs: tuple) -> Any:
    from onnx2torch.utils.common import OperationConverterResult

    return OperationConverterResult(torch_module=module, onnx_mapping=_mapping(inputs, outputs))


def _const(graph: Any, name: str) -> Any:
    from onnx2torch.utils.common import get_const_value

    try:
        return get_const_value(name, graph)
    except KeyError as exc:
        raise NotImplementedError(f"input {name!r} must be a constant") from exc


def _opt(node: Any, index: int) -> str | None:
    values = node.input_values
    return values[index] if len(values) > index and values[index] else None


def _reorder(t: Any, order: list[int], hidden: int) -> Any:
    import torch

    return torch.cat([t[i * hidden:(i + 1) * hidden] for i in order], dim=0)


def _recurrent(kind: str, node: Any, graph: Any) -> Any:
    """ONNX LSTM / GRU (one layer, any direction) as torch.nn.LSTM / GRU with reordered gates."""
    import torch

    attrs = node.attributes
    hidden = int(attrs["hidden_size"])
    direction = attrs.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    defaults = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}[kind]
    acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    dirs = 2 if direction == "bidirectional" else 1
    if acts and acts != defaults * dirs:
        raise NotImplementedError(f"{kind} with activations {acts}")
    if attrs.get("clip") is not None or attrs.get("input_forget", 0) or _opt(node, 4) or (kind == "LSTM" and _opt(node, 7)):
        raise NotImplementedError(f"{kind} with clip, input_forget, sequence_lens or peepholes")
    if kind == "GRU" and int(attrs.get("linear_before_reset", 0)) != 1:
        raise NotImplementedError("GRU with linear_before_reset=0 (torch's GRU applies the reset after the product)")
    W, R = _const(graph, node.input_values[1]), _const(graph, node.input_values[2])
    gates = 4 if kind == "LSTM" else 3
    B = _const(graph, _opt(node, 3)) if _opt(node, 3) else torch.zeros(dirs, 2 * gates * hidden)
    order = ONNX_LSTM_TO_TORCH if kind == "LSTM" else ONNX_GRU_TO_TORCH
    cls = torch.nn.LSTM if kind == "LSTM" else torch.nn.GRU
    rnn = cls(W.shape[-1], hidden, bidirectional=dirs == 2)
    with torch.no_grad():
        for d in range(dirs):
            sfx = "_l0" + ("_reverse" if d == 1 else "")
            getattr(rnn, "weight_ih" + sfx).copy_(_reorder(W[d], order, hidden))
            getattr(rnn, "weight_hh" + sfx).copy_(_reorder(R[d], order, hidden))
            getattr(rnn, "bias_ih" + sfx).copy_(_reorder(B[d][: gates * hidden], order, hidden))
            getattr(rnn, "bias_hh" + sfx).copy_(_reorder(B[d][gates * hidden:], order, hidden))
    states = [n for n in (_opt(node, 5), _opt(node, 6) if kind == "LSTM" else None)]
    module = OnnxRecurrent(rnn, kind, direction == "reverse", int(attrs.get("layout", 0)),
                           [s is not None for s in states])
    inputs = (node.input_values[0],) + tuple(s for s in states if s is not None)
    return _result(module, inputs, node.output_values)


def _module_base() -> Any:
    import torch
    from onnx2torch.utils.common import OnnxToTorchModule

    class Base(torch.nn.Module, OnnxToTorchModule):
        pass

    return Base


class _Lazy:
    """Module classes are built on first use (torch and onnx2torch import lazily)."""

    cache: dict[str, Any] = {}


def OnnxRecurrent(rnn: Any, kind: str, reverse: bool, layout: int, given: list[bool]) -> Any:  # noqa: N802
    if "recurrent" not in _Lazy.cache:
        Base = _module_base()

        class Recurrent(Base):
            def __init__(self, rnn: Any, kind: str, reverse: bool, layout: int, given: list[bool]):
                super().__init__()
                self.rnn, self.kind, self.reverse, self.layout, self.given = rnn, kind, reverse, layout, given

            def forward(self, x: Any, *states: Any) -> Any:
                if self.layout == 1:  # [batch, seq, input]
                    x = x.transpose(0, 1)
                    states = tuple(s.transpose(0, 1) for s in states)
                if self.reverse:
                    x = x.flip(0)
                h0 = c0 = None
                it = iter(states)
                if self.given[0]:
                    h0 = next(it)
                if self.kind == "LSTM" and len(self.given) > 1 and self.given[1]:
                    c0 = next(it)
                if self.kind == "LSTM":
                    if h0 is not None or c0 is not None:
                        zeros = x.new_zeros(self.rnn.num_layers * (2 if self.rnn.bidirectional else 1), x.shape[1],
                                            self.rnn.hidden_size)
                        out, (h, c) = self.rnn(x, (h0 if h0 is not None else zeros, c0 if c0 is not None else zeros))
                    else:
                        out, (h, c) = self.rnn(x)
                else:
                    out, h = self.rnn(x, h0) if h0 is not None else self.rnn(x)
                    c = None
                if self.reverse:
                    out = out.flip(0)
                dirs = 2 if self.rnn.bidirectional else 1
                y = out.reshape(out.shape[0], out.shape[1], dirs, self.rnn.hidden_size).permute(0, 2, 1, 3)
                if self.layout == 1:
                    y, h = y.permute(2, 0, 1, 3), h.transpose(0, 1)
                    c = c.transpose(0, 1) if c is not None else None
                return (y, h, c) if self.kind == "LSTM" else (y, h)

        _Lazy.cache["recurrent"] = Recurrent
    return _Lazy.cache["recurrent"](rnn, kind, reverse, layout, given)


def _function_module(fn: Any) -> Any:
    Base = _module_base()

    class Function(Base):
        def forward(self, *args: Any) -> Any:
            return fn(*args)

    return Function()


def _compare(op: Any) -> Any:
    def converter(node: Any, graph: Any) -> Any:
        from onnx2torch.utils.common import onnx_mapping_from_node
        from onnx2torch.utils.common import OperationConverterResult

        return OperationConverterResult(torch_module=_function_module(op), onnx_mapping=onnx_mapping_from_node(node))

    return converter


def _clip(node: Any, graph: Any) -> Any:
    """Clip whose min / max are computed tensors (onnx2torch takes constants only)."""
    import torch

    names = [n for n in node.input_values[1:3]]
    lo, hi = (names + [None, None])[:2]
    present = [n for n in (lo, hi) if n]

    def clamp(x: Any, *bounds: Any) -> Any:
        it = iter(bounds)
        a = next(it) if lo else None
        b = next(it) if hi else None
        return torch.clamp(x, a, b)

    return _result(_function_module(clamp), (node.input_values[0],) + tuple(present), node.output_values)


def _reshape_allowzero(original: Any) -> Any:
    """Reshape with allowzero=1 is plain Reshape when the target shape holds no 0."""

    def converter(node: Any, graph: Any) -> Any:
        import copy

        from onnx2torch.onnx_node import OnnxNode

        if not node.attributes.get("allowzero", 0):
            return original(node, graph)
        try:
            shape = _const(graph, node.input_values[1])
        except NotImplementedError:  # torch.reshape's own semantics are allowzero=1's: 0 is a 0-sized axis
            import torch

            module = _function_module(lambda x, s: torch.reshape(x, torch.Size(s)))
            return _result(module, tuple(node.input_values[:2]), node.output_values)
        if any(int(v) == 0 for v in shape.flatten().tolist()):
            raise NotImplementedError("Reshape with allowzero=1 and a 0 in the shape")
        proto = copy.deepcopy(node.proto)
        keep = [a for a in proto.attribute if a.name != "allowzero"]
        del proto.attribute[:]
        proto.attribute.extend(keep)
        return original(OnnxNode(proto, node.unique_name), graph)

    return converter


def _flatten(node: Any, graph: Any) -> Any:
    """ONNX Flatten, including axis == rank (onnx2torch 1.5.15 fails there: [2, 8] axis 2 -> [16, 1])."""
    import torch

    axis = int(node.attributes.get("axis", 1))

    def flatten(x: Any) -> Any:
        a = axis if axis >= 0 else axis + x.dim()
        if a == 0:
            return x.reshape(1, -1)
        left = torch.flatten(x, 0, a - 1)
        return left.unsqueeze(-1) if a == x.dim() else torch.flatten(left, 1)

    return _result(_function_module(flatten), (node.input_values[0],), node.output_values)


def _split_num_outputs(original: Any) -> Any:
    """Split (opset 18) with ``num_outputs``: chunks of ceil(dim / n), the last one smaller."""

    def converter(node: Any, graph: Any) -> Any:
        import torch

        count = node.attributes.get("num_outputs")
        if count is None or _opt(node, 1):
            return original(node, graph)
        axis = int(node.attributes.get("axis", 0))

        def split(x: Any) -> Any:
            size = x.shape[axis]
            return tuple(torch.split(x, (size + count - 1) // count, dim=axis))

        return _result(_function_module(split), (node.input_values[0],), node.output_values)

    return converter


def _layer_norm(original: Any) -> Any:
    """LayerNormalization whose input has symbolic dims: onnx2torch 1.5.15 reads the normalized shape
    from the input's value_info (a symbolic dim reads as 0); the scale's shape is that shape."""

    def converter(node: Any, graph: Any) -> Any:
        import torch

        names = node.input_values
        if not all(n in graph.initializers for n in names[1:] if n):
            return original(node, graph)
        scale = graph.initializers[names[1]].to_torch()
        axis = int(node.attributes.get("axis", -1))
        info = graph.value_info.get(names[0]) if hasattr(graph.value_info, "get") else None
        rank = len(info.type.tensor_type.shape.dim) if info is not None else None
        covered = -axis if axis < 0 else (rank - axis if rank is not None else None)
        if covered != scale.dim():  # a broadcast scale: the normalized shape is not the scale's
            return original(node, graph)
        bias = graph.initializers[names[2]].to_torch() if len(names) > 2 and names[2] else None
        module = torch.nn.LayerNorm(list(scale.shape), eps=float(node.attributes.get("epsilon", 1e-5)),
                                    elementwise_affine=True, bias=bias is not None)
        with torch.no_grad():
            module.weight.copy_(scale)
            if bias is not None:
                module.bias.copy_(bias)
        return _result(module, (names[0],), node.output_values)

    return converter


def _attention(node: Any, graph: Any) -> Any:
    """ONNX Attention (opset 23) on 4-D [batch, heads, seq, head_size] inputs without a KV cache:
    softmax(Q K^T * scale + mask) V, a boolean mask keeping where True, is_causal, and K/V heads
    repeated for grouped queries. A KV cache, softcap or extra outputs are refused."""
    import math

    import torch

    attrs = node.attributes
    names = list(node.input_values) + [""] * 6
    if any(names[4:6]) or len(node.output_values) > 1 or float(attrs.get("softcap", 0.0) or 0.0) \
            or int(attrs.get("qk_matmul_output_mode", 0) or 0):
        raise NotImplementedError("Attention with a KV cache, softcap or extra outputs")
    causal = bool(int(attrs.get("is_causal", 0) or 0))
    given_scale = attrs.get("scale")

    def attend(q: Any, k: Any, v: Any, mask: Any = None) -> Any:
        if q.dim() != 4:
            raise NotImplementedError("Attention on 3-D inputs (q_num_heads / kv_num_heads)")
        if k.shape[1] != q.shape[1]:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        scale = float(given_scale) if given_scale is not None else 1.0 / math.sqrt(q.shape[-1])
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        if causal:
            keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~keep, float("-inf"))
        return torch.matmul(torch.softmax(scores, dim=-1), v)

    inputs = tuple(n for n in names[:4] if n)
    if not names[3] and len(inputs) < 3:
        raise NotImplementedError("Attention without K / V")
    return _result(_function_module(attend), inputs, node.output_values)


def register() -> None:
    import torch
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

    def add(op: str, version: int, converter: Any, replace: bool = False) -> None:
        key = OperationDescription(domain="", operation_type=op, version=version)
        if replace or key not in _CONVERTER_REGISTRY:
            _CONVERTER_REGISTRY[key] = converter

    from interop.sources import onnx_quant, onnx_resize

    onnx_resize.register(add)
    onnx_quant.register(add)
    add("Attention", 23, _attention)
    for version in (7, 14, 22):
        add("LSTM", version, lambda n, g: _recurrent("LSTM", n, g))
        add("GRU", version, lambda n, g: _recurrent("GRU", n, g))
    for version in (1, 9, 11, 13, 21, 23):
        add("Flatten", version, _flatten, replace=True)
    key = OperationDescription(domain="", operation_type="LayerNormalization", version=17)
    if key in _CONVERTER_REGISTRY:
        add("LayerNormalization", 17, _layer_norm(_CONVERTER_REGISTRY[key]), replace=True)
    for version in (18,):
        key = OperationDescription(domain="", operation_type="Split", version=version)
        if key in _CONVERTER_REGISTRY:
            add("Split", version, _split_num_outputs(_CONVERTER_REGISTRY[key]), replace=True)
    for version in (12, 16):
        add("GreaterOrEqual", version, _compare(torch.ge))
        add("LessOrEqual", version, _compare(torch.le))
    for version in (13, 20):
        add("IsNaN", version, _compare(torch.isnan))
        add("IsInf", version, _compare(torch.isinf))
    for version in (11, 12, 13):
        key = OperationDescription(domain="", operation_type="Clip", version=version)
        constant_only = _CONVERTER_REGISTRY.get(key)

        def clip(node: Any, graph: Any, constant_only: Any = constant_only) -> Any:
            try:
                return constant_only(node, graph)
            except NotImplementedError:
                return _clip(node, graph)

        add("Clip", version, clip, replace=True)
    for version in (14, 19, 21, 23):
        key = OperationDescription(domain="", operation_type="Reshape", version=version)
        if key in _CONVERTER_REGISTRY:
            add("Reshape", version, _reshape_allowzero(_CONVERTER_REGISTRY[key]), replace=True)
