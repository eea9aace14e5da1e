"""ONNX variants, each one call into onnxruntime's own tools (no quantizer of interop's own):

* ``int8``: weight-only 8-bit ``MatMulNBits`` (``MatMulNBitsQuantizer``, block 32) for MatMul, then
  ``quantize_dynamic`` (int8 per channel) for Conv / LSTM / Gather. Dynamic quantization of the
  MatMuls too (activations quantized on the fly) measured 33 dB on the zoo's BERT: below the gate;
* ``int4``: ``MatMulNBitsQuantizer`` — block-wise 4-bit ``MatMulNBits`` (block 32, symmetric);
  layers it cannot take stay as they are, and the variant says what fraction of the weights is 4-bit;
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


@register_variant("onnx", "int8", "onnxruntime.quantization: MatMulNBitsQuantizer (8 bits, block 32, weight-only) "
                                  "then quantize_dynamic (QInt8, per channel) for Conv / LSTM / Gather")
def int8(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    """Weight-only where ONNX Runtime has the form (8-bit ``MatMulNBits``: activations stay fp32);
    Conv and LSTM weights through dynamic quantization (``ConvInteger``, ``DynamicQuantizeLSTM``),
    embedding tables (Gather) as int8 + DequantizeLinear. Gemm layers stay fp32 (neither tool takes them)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet():
        quantizer = MatMulNBitsQuantizer(onnx.load(str(base)), bits=8, block_size=32, is_symmetric=True)
        quantizer.process()
        quantize_dynamic(quantizer.model.model, str(out), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["Conv", "LSTM", "Gather"])
    return {"fraction_int8": _fraction_quantized(base, out)}


@register_variant("onnx", "int4", "onnxruntime.quantization MatMulNBitsQuantizer (4 bits, block 32, symmetric)")
def int4(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet():
        quantizer = MatMulNBitsQuantizer(onnx.load(str(base)), bits=4, block_size=32, is_symmetric=True)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    fraction = _fraction_quantized(base, out)
    info: dict[str, Any] = {"fraction_int4": fraction}
    if not fraction:
        info["note"] = "no layer could be stored as 4-bit MatMulNBits (it takes MatMul with constant weights)"
    elif fraction < 1:
        info["note"] = f"{fraction:.0%} of the weights are 4-bit; the layers MatMulNBits cannot take stay float"
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
