"""ONNX variants, each one call into onnxruntime's own tools (no quantizer of interop's own):

* ``int8``: weight-only 8-bit ``MatMulNBits`` (``MatMulNBitsQuantizer``, block 32) for MatMul and
  Gemm (rewritten to MatMul + Add first: :mod:`interop.targets.onnx.gemm`), then
  ``quantize_dynamic`` (int8 per channel) for Conv / LSTM / Gather. Dynamic quantization of the
  MatMuls too (activations quantized on the fly) measured 33 dB on the zoo's BERT: below the gate;
* ``int4``: ``MatMulNBitsQuantizer`` — block-wise 4-bit ``MatMulNBits`` for MatMul and Gemm, 4-bit
  ``GatherBlockQuantized`` for embeddings (block 32 or ``int4:block=N``, symmetric); Conv and LSTM
  have no 4-bit form in ONNX Runtime, so on a CNN or an LSTM the variant is ``not-applicable``;
  a mixed-precision recipe (:mod:`interop.variants.recipe`) keeps named weights at 8 bits;
* ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16`` with fp32 inputs and
  outputs (``keep_io_types``);
* ``int8-static``: ``quantize_static`` in QDQ form, calibrated (min/max) on the user's
  ``--calibration`` samples through a ``CalibrationDataReader``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interop.errors import ExportError
from interop.variants import VariantContext, register_variant

QUANT_OPS = ("MatMulNBits", "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM", "DequantizeLinear")


def _quiet():
    """onnxruntime.quantization logs advice ("consider pre-processing") through the root logger."""
    import contextlib
    import logging

    @contextlib.contextmanager
    def quiet():
        loggers = [logging.getLogger(), logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)

    return quiet()


def _float_weights(model: Any) -> dict[str, int]:
    """Element count of every float initializer of rank >= 2 (the weights a quantizer may take)."""
    from onnx import TensorProto

    kinds = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    return {t.name: int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in kinds and len(t.dims) >= 2}


def _fraction_quantized(base: Path, out: Path) -> float | None:
    """Share of the base model's weight elements (rank >= 2 float initializers) no longer stored as floats."""
    import onnx

    before = _float_weights(onnx.load(str(base), load_external_data=False))
    after = _float_weights(onnx.load(str(out), load_external_data=False))
    total = sum(before.values())
    if not total:
        return None
    kept = sum(n for name, n in before.items() if name in after)
    return round(1 - kept / total, 4)


def _prepared(base: Path) -> tuple[Any, dict[str, Any]]:
    """The base model with its Gemm layers rewritten to MatMul + Add (:mod:`interop.targets.onnx.gemm`)."""
    import onnx

    from interop.targets.onnx.gemm import gemm_to_matmul

    model = onnx.load(str(base))
    rewritten, refused = gemm_to_matmul(model)
    info: dict[str, Any] = {"gemm_rewritten": len(rewritten)}
    if refused:
        info["gemm_refused"] = refused
    return model, info


def _nbits(model: Any, bits: int, block: int, exclude: list[str] | None = None,
           include: list[str] | None = None, op_types: tuple[str, ...] = ("MatMul",)) -> Any:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    exclude = list(exclude or [])
    if include is not None:  # the quantizer's own nodes_to_include adds to op_types_to_quantize: exclude the rest
        exclude += [n.name for n in model.graph.node if n.name not in set(include)]
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=True,
                                     nodes_to_exclude=exclude, op_types_to_quantize=op_types)
    quantizer.process()
    return quantizer.model.model


def _scope(model: Any, vctx: VariantContext, op_types: tuple[str, ...]) -> list[str] | None:
    """Names of the ``op_types`` nodes to quantize: None for all of them, or only those reading
    ``vctx.only`` (a recipe's probe); [] when a probe leaves none of that kind."""
    from interop.targets.onnx.gemm import nodes_reading

    return nodes_reading(model, set(vctx.only), op_types) if vctx.only else None


def _dynamic(model: Any, out: Path, op_types: list[str], include: list[str] | None, exclude: list[str]) -> None:
    """``quantize_dynamic`` of ``op_types`` (``include`` None: all of them) into ``out``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if include == []:  # quantize_dynamic reads an empty list as "every node"
        onnx.save(model, str(out))
        return
    quantize_dynamic(model, str(out), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=op_types,
                     nodes_to_quantize=include, nodes_to_exclude=exclude)


@register_variant("onnx", "int8", "onnxruntime.quantization: MatMulNBitsQuantizer (8 bits, block 32, weight-only) "
                                  "for MatMul and Gemm (rewritten to MatMul + Add), then quantize_dynamic "
                                  "(QInt8, per channel) for Conv / LSTM / Gather", recipe=True)
def int8(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    """Weight-only where ONNX Runtime has the form (8-bit ``MatMulNBits``: activations stay fp32);
    Conv and LSTM weights through dynamic quantization (``ConvInteger``, ``DynamicQuantizeLSTM``),
    embedding tables (Gather) as int8 + DequantizeLinear. Weights a recipe keeps stay fp32."""
    from interop.targets.onnx.gemm import nodes_reading

    block = vctx.options.get("block", 32)
    model, info = _prepared(base)
    kept = nodes_reading(model, set(vctx.keep))
    with _quiet():
        matmuls = _scope(model, vctx, ("MatMul",))
        if matmuls != []:
            model = _nbits(model, 8, block, exclude=kept, include=matmuls)
        _dynamic(model, out, ["Conv", "LSTM", "Gather"], _scope(model, vctx, ("Conv", "LSTM", "Gather")), kept)
    weight_only = _weight_only_conv(out, set(vctx.keep)) if vctx.keep else []
    info = {"fraction_int8": _fraction_quantized(base, out), "block_size": block, **info}
    if kept:
        info["kept_float"] = sorted(set(vctx.keep) - set(weight_only))
    if weight_only:
        info["kept_weight_only_int8"] = weight_only
        info["kept_as"] = "fp32 (Conv weights: int8 weight-only, DequantizeLinear per channel)"
    return info


def _weight_only_conv(path: Path, names: set[str]) -> list[str]:
    """Conv weights among ``names`` (left float by quantize_dynamic, whose ConvInteger quantizes
    the activations too) stored as int8 per output channel, read through ``DequantizeLinear``:
    the Conv stays fp32 compute. The int8 values and scales are onnxruntime.quantization's own
    (``quant_utils.quantize_data``, symmetric, one call per output channel)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.quant_utils import quantize_data

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    convs = {n.input[1]: n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1}
    done, nodes = [], []
    for name in sorted(names & set(convs) & set(inits)):
        w = numpy_helper.to_array(inits[name])
        if w.dtype != np.float32:
            continue
        parts = [quantize_data(c.ravel(), TensorProto.INT8, True) for c in w]
        q = np.stack([np.asarray(p[2], np.int8).reshape(w.shape[1:]) for p in parts])
        scale = np.array([float(np.asarray(p[1]).ravel()[0]) for p in parts], np.float32)
        inits[name].CopyFrom(numpy_helper.from_array(q, f"{name}_int8"))
        model.graph.initializer.append(numpy_helper.from_array(scale, f"{name}_scale"))
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{name}_zero"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"], [name],
                                      name=f"{name}_DequantizeLinear", axis=0))
        done.append(name)
    if nodes:
        rest = list(model.graph.node)
        del model.graph.node[:]
        model.graph.node.extend(nodes + rest)
        onnx.save(model, str(path))
    return done


@register_variant("onnx", "int4", "onnxruntime.quantization MatMulNBitsQuantizer (4 bits, block 32, symmetric) for "
                                  "MatMul, Gemm (rewritten to MatMul + Add) and Gather (GatherBlockQuantized)",
                  recipe=True, smaller_blocks=(16,))  # MatMulNBits takes blocks of 16 or more
def int4(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    """4-bit ``MatMulNBits`` / ``GatherBlockQuantized`` in blocks of ``block`` (default 32) along the
    input axis; weights a recipe keeps are 8-bit ``MatMulNBits`` (MatMul) or int8 (Gather)."""
    from interop.targets.onnx.gemm import nodes_reading

    block = vctx.options.get("block", 32)
    model, info = _prepared(base)
    kept = nodes_reading(model, set(vctx.keep))
    kept_matmul = nodes_reading(model, set(vctx.keep), ("MatMul",))
    kept_gather = nodes_reading(model, set(vctx.keep), ("Gather",))
    with _quiet():
        scope = _scope(model, vctx, ("MatMul", "Gather"))
        if scope != []:
            model = _nbits(model, 4, block, exclude=kept, include=scope, op_types=("MatMul", "Gather"))
        if kept_matmul:
            model = _nbits(model, 8, block, include=kept_matmul)
        _dynamic(model, out, ["Gather"], kept_gather, [])
    fraction = _fraction_quantized(base, out)
    info = {"fraction_int4": fraction, "block_size": block, **info}
    if vctx.keep:
        info["kept_int8"] = sorted(vctx.keep)
    if not fraction:
        info["note"] = "no layer could be stored as 4-bit MatMulNBits (it takes MatMul, Gemm and Gather with constant weights)"
    elif fraction < 1:
        info["note"] = f"{fraction:.0%} of the weights are quantized; the layers MatMulNBits cannot take stay float"
    return info


@register_variant("onnx", "fp16", "onnxruntime.transformers.float16 (keep_io_types)")
def fp16(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet():
        model = convert_float_to_float16(onnx.load(str(base)), keep_io_types=True)
    onnx.save(model, str(out))
    return {}


class _Samples:
    """A CalibrationDataReader over the user's samples (only the inputs the graph declares)."""

    def __init__(self, samples: list[dict[str, np.ndarray]], names: list[str]):
        self._it = iter([{n: s[n] for n in names} for s in samples])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


@register_variant("onnx", "int8-static", "onnxruntime.quantization.quantize_static (QDQ, per channel, min/max)")
def int8_static(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not vctx.calibration:
        raise ExportError("int8-static needs calibration samples", hint="pass --calibration FILE.npz")
    names = [i.name for i in onnx.load(str(base), load_external_data=False).graph.input]
    reader = _Samples(vctx.calibration, names)
    CalibrationDataReader.register(_Samples)
    with _quiet():
        quantize_static(str(base), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    return {"fraction_int8": _fraction_quantized(base, out), "calibration_samples": len(vctx.calibration)}
