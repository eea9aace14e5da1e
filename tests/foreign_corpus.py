"""A corpus of ONNX files written by other tools, never by interop: torch.onnx's TorchScript
exporter (opsets 11-17, with and without constant folding, initializers as inputs), its dynamo
exporter (opsets 18-23), graphs built with onnx.helper, and QDQ models from
onnxruntime.quantization.quantize_static. Each item is made on demand into a folder
(:func:`make`); tests/test_foreign_corpus.py builds a fast subset (FAST), scripts/foreign_onnx_coverage.py
the whole corpus (docs/coverage.md, "Foreign ONNX files").

Models: a residual CNN, a MobileNetV2 (the seed's layout, narrow), the seed LSTM, a U-Net that
upsamples with bilinear interpolation (Resize), a small BERT and ViT (transformers configs), and
helper-built Resize graphs in every mode / coordinate transformation the ONNX spec lists."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

TORCHSCRIPT_OPSETS = tuple(range(11, 18))
DYNAMO_OPSETS = tuple(range(18, 24))


_OPTION_TAGS = {"do_constant_folding": "nofold", "keep_initializers_as_inputs": "initinputs", "dynamic": "dyn",
                "per_channel": "perchannel"}


@dataclass(frozen=True)
class Item:
    """One foreign file: which model, which producer, which opset, which exporter options."""

    model: str
    producer: str  # torchscript | dynamo | onnx.helper | qdq (quantize_static) | qdyn (quantize_dynamic)
    opset: int
    options: tuple = ()
    fast: bool = False  # part of the fast test subset

    @property
    def name(self) -> str:
        extra = "".join(f"-{_OPTION_TAGS.get(k, k)}" for k, _v in self.options)
        return f"{self.model}-{self.producer}{self.opset}{extra}"

    @property
    def dynamic(self) -> bool:
        """Whether the file declares its batch axis dynamic."""
        return self.producer in ("torchscript", "dynamo", "qdq", "qdyn") or dict(self.options).get("dynamic", False)


# --- the models ------------------------------------------------------------------------------


def _unet_bilinear() -> Any:
    import torch
    from torch import nn

    from tests.zoo import _double_conv, _with_random_bn

    class UNetBilinear(nn.Module):
        """Two-level U-Net whose decoder upsamples with bilinear interpolation (an ONNX Resize)."""

        def __init__(self, classes: int = 3):
            super().__init__()
            self.enc1, self.enc2 = _double_conv(3, 8), _double_conv(8, 16)
            self.mid = _double_conv(16, 16)
            self.dec2, self.dec1 = _double_conv(32, 8), _double_conv(16, 8)
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.out = nn.Conv2d(8, classes, 1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            e1 = self.enc1(image)
            e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
            m = self.mid(nn.functional.max_pool2d(e2, 2))
            d2 = self.dec2(torch.cat([self.up(m), e2], dim=1))
            d1 = self.dec1(torch.cat([self.up(d2), e1], dim=1))
            return self.out(d1)

    return _with_random_bn(UNetBilinear())


def _mobilenet() -> Any:
    from samples.models import MobileNetV2
    from tests.zoo import _with_random_bn

    return _with_random_bn(MobileNetV2(classes=10, width=0.35))


def _zoo(name: str) -> Callable[[], Any]:
    def make() -> Any:
        from tests import zoo

        return zoo.ZOO[name].module()

    return make


@dataclass(frozen=True)
class Model:
    make: Callable[[], Any]
    inputs: tuple  # (name, shape, dtype, low, high)
    outputs: tuple
    batch_only: bool = True


MODELS: dict[str, Model] = {
    "cnn": Model(_zoo("cnn"), (("image", (2, 3, 32, 32), "float32", 0, 1),), ("logits",)),
    "mobilenet": Model(_mobilenet, (("image", (1, 3, 64, 64), "float32", 0, 1),), ("logits",)),
    "lstm": Model(_zoo("lstm_sum"), (("x", (2, 6, 1), "float32", 0, 10),), ("logits",)),
    "unet": Model(_unet_bilinear, (("image", (2, 3, 32, 32), "float32", 0, 1),), ("mask",)),
    "bert": Model(_zoo("bert"), (("input_ids", (2, 8), "int64", 0, 99), ("attention_mask", (2, 8), "int64", 1, 1)),
                  ("logits",)),
    "vit": Model(_zoo("vit"), (("pixel_values", (2, 3, 32, 32), "float32", 0, 1),), ("logits",)),
}


def example(model: Model, seed: int = 0) -> tuple:
    import torch

    rng = np.random.default_rng(seed)
    out = []
    for _name, shape, dtype, low, high in model.inputs:
        if dtype == "int64":
            out.append(torch.from_numpy(rng.integers(low, high + 1, size=shape).astype(np.int64)))
        else:
            out.append(torch.from_numpy(rng.uniform(low, high, size=shape).astype(np.float32)))
    return tuple(out)


# --- the producers ---------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _torchscript(item: Item, path: Path, model: Model) -> None:
    import torch

    opts = dict(item.options)
    module = model.make().eval()
    names = [i[0] for i in model.inputs]
    dynamic_axes = {n: {0: "batch"} for n in names + list(model.outputs)}
    with _quiet():
        torch.onnx.export(module, example(model), str(path), input_names=names, output_names=list(model.outputs),
                          dynamic_axes=dynamic_axes, opset_version=item.opset, dynamo=False,
                          do_constant_folding=opts.get("do_constant_folding", True),
                          keep_initializers_as_inputs=opts.get("keep_initializers_as_inputs", False))


def _dynamo(item: Item, path: Path, model: Model) -> None:
    import torch

    module = model.make().eval()
    names = [i[0] for i in model.inputs]
    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = {n: {0: batch} for n in names}
    with _quiet():
        program = torch.onnx.export(module, example(model), input_names=names, output_names=list(model.outputs),
                                    dynamic_shapes=shapes, opset_version=item.opset, dynamo=True, optimize=True)
        program.save(str(path))


def _qdq(item: Item, path: Path, model: Model) -> None:
    """quantize_static (QDQ format, int8, per tensor or with the per_channel option per channel)
    over a TorchScript export of the model."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    float_path = path.with_name(path.stem + ".float.onnx")
    _torchscript(Item(item.model, "torchscript", item.opset), float_path, model)
    names = [i[0] for i in model.inputs]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{n: t.numpy() for n, t in zip(names, example(model, seed))} for seed in range(4)])

        def get_next(self) -> Any:
            return next(self.batches, None)

    with _quiet():
        quantize_static(str(float_path), str(path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        per_channel=dict(item.options).get("per_channel", False))
    float_path.unlink()


def _qdyn(item: Item, path: Path, model: Model) -> None:
    """quantize_dynamic (int8 weights; DynamicQuantizeLinear + MatMulInteger / ConvInteger) over a
    TorchScript export of the model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = path.with_name(path.stem + ".float.onnx")
    _torchscript(Item(item.model, "torchscript", item.opset), float_path, model)
    with _quiet():
        quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8,
                         per_channel=dict(item.options).get("per_channel", False))
    float_path.unlink()


RESIZE_CASES: dict[str, dict[str, Any]] = {
    # name -> Resize attributes (opset 11+ semantics); scales or sizes chosen per case
    "resize-linear-half_pixel": {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
    "resize-linear-align_corners": {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
    "resize-linear-asymmetric": {"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
    "resize-linear-pytorch_half_pixel": {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
    "resize-nearest-asymmetric-floor": {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                        "nearest_mode": "floor"},
    "resize-nearest-half_pixel-round_prefer_floor": {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
                                                     "nearest_mode": "round_prefer_floor"},
    "resize-nearest-align_corners-round_prefer_ceil": {"mode": "nearest",
                                                       "coordinate_transformation_mode": "align_corners",
                                                       "nearest_mode": "round_prefer_ceil"},
    "resize-nearest-half_pixel-ceil": {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
                                       "nearest_mode": "ceil"},
    "resize-cubic-half_pixel": {"mode": "cubic", "coordinate_transformation_mode": "half_pixel",
                                "cubic_coeff_a": -0.75},
    "resize-cubic-align_corners": {"mode": "cubic", "coordinate_transformation_mode": "align_corners",
                                   "cubic_coeff_a": -0.75},
    "resize-linear-sizes": {"mode": "linear", "coordinate_transformation_mode": "half_pixel", "_sizes": True},
    "resize-nearest-downscale": {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                 "nearest_mode": "floor", "_scale": 0.5},
    "resize-linear-fractional": {"mode": "linear", "coordinate_transformation_mode": "half_pixel", "_scale": 1.5},
}


def resize_graph(case: str, opset: int, dynamic: bool = True) -> Any:
    """x (N, 4, 8, 8) -> Conv 1x1 -> Resize(case) -> y: a hand-built graph, batch axis symbolic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    attrs = dict(RESIZE_CASES[case])
    use_sizes, scale = attrs.pop("_sizes", False), attrs.pop("_scale", 2.0)
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w")
    inits = [w, numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    # constant sizes fix all four dims (batch 2 included): a symbolic batch would be a file ONNX
    # Runtime refuses at any other batch, not a foreign file a tool writes
    batch = "batch" if dynamic and not use_sizes else 2
    out_hw = [16, 12] if use_sizes else [int(8 * scale), int(8 * scale)]
    if use_sizes:
        inits.append(numpy_helper.from_array(np.array([2, 4, *out_hw], np.int64), "sizes"))
        resize_inputs = ["c", "roi", "", "sizes"]
    else:
        inits.append(numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales"))
        resize_inputs = ["c", "roi", "scales"]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Resize", resize_inputs, ["y"], name="the_resize", **attrs)]
    out_batch = 2 if use_sizes else batch
    graph = helper.make_graph(nodes, case, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [out_batch, 4, *out_hw])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx.helper")
    onnx.checker.check_model(model, full_check=True)
    return model


def _helper(item: Item, path: Path) -> None:
    import onnx

    if item.model.startswith("resize-"):
        model = resize_graph(item.model, item.opset, dynamic=dict(item.options).get("dynamic", True))
    elif item.model == "identity-chain":
        model = identity_chain_graph(item.opset)
    else:
        raise KeyError(item.model)
    onnx.save(model, str(path))


def identity_chain_graph(opset: int) -> Any:
    """Conv and MatMul weights reached through Identity chains (as the TorchScript exporter feeds
    shared weights), one weight shared by two nodes, and a Gemm head: what normalisation folds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
             (("conv.weight", (4, 4, 3, 3)), ("conv.bias", (4,)), ("fc.weight", (3, 4)), ("fc.bias", (3,)))]
    nodes = [helper.make_node("Identity", ["conv.weight"], ["onnx::Conv_1"], name="Identity_0"),
             helper.make_node("Identity", ["onnx::Conv_1"], ["onnx::Conv_2"], name="Identity_1"),
             helper.make_node("Identity", ["conv.bias"], ["onnx::Conv_3"], name="Identity_2"),
             helper.make_node("Conv", ["x", "onnx::Conv_2", "onnx::Conv_3"], ["c1"], name="/conv/Conv", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="/Relu"),
             helper.make_node("Conv", ["r1", "onnx::Conv_1", "conv.bias"], ["c2"], name="/conv_1/Conv", pads=[1] * 4),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="/pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="/flatten"),
             helper.make_node("Identity", ["fc.weight"], ["onnx::Gemm_4"], name="Identity_3"),
             helper.make_node("Gemm", ["f", "onnx::Gemm_4", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1)]
    graph = helper.make_graph(nodes, "identity_chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx.helper")
    onnx.checker.check_model(model, full_check=True)
    return model


def make(item: Item, folder: Path) -> Path:
    """Write ``item`` into ``folder``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{item.name}.onnx"
    if item.producer == "onnx.helper":
        _helper(item, path)
    elif item.producer == "torchscript":
        _torchscript(item, path, MODELS[item.model])
    elif item.producer == "dynamo":
        _dynamo(item, path, MODELS[item.model])
    elif item.producer == "qdq":
        _qdq(item, path, MODELS[item.model])
    elif item.producer == "qdyn":
        _qdyn(item, path, MODELS[item.model])
    else:
        raise KeyError(item.producer)
    return path


def _corpus() -> list[Item]:
    items: list[Item] = []
    fast_ts = {("cnn", 11)}  # the fast subset: one file per producer, the smallest models
    for opset in TORCHSCRIPT_OPSETS:
        items.append(Item("cnn", "torchscript", opset, fast=("cnn", opset) in fast_ts))
    for model in ("mobilenet", "lstm", "unet", "bert", "vit"):
        for opset in (11, 17) if model in ("bert", "vit") else (11, 14, 17):
            items.append(Item(model, "torchscript", opset, fast=(model, opset) in fast_ts))
    items.append(Item("cnn", "torchscript", 13, (("do_constant_folding", False),)))
    items.append(Item("cnn", "torchscript", 13, (("keep_initializers_as_inputs", True),)))
    items.append(Item("mobilenet", "torchscript", 13, (("do_constant_folding", False),
                                                      ("keep_initializers_as_inputs", True))))
    for opset in DYNAMO_OPSETS:
        items.append(Item("cnn", "dynamo", opset, fast=opset == 23))
    for model in ("mobilenet", "lstm", "unet", "bert", "vit"):
        for opset in (18, 23) if model in ("bert", "vit") else (18, 20, 23):
            items.append(Item(model, "dynamo", opset))
    for case in RESIZE_CASES:
        items.append(Item(case, "onnx.helper", 13, fast=case == "resize-cubic-half_pixel"))
    for case in ("resize-linear-align_corners", "resize-cubic-half_pixel", "resize-nearest-half_pixel-round_prefer_floor"):
        items.append(Item(case, "onnx.helper", 11))
        items.append(Item(case, "onnx.helper", 19))
    items.append(Item("identity-chain", "onnx.helper", 13, fast=True))
    items.append(Item("identity-chain", "onnx.helper", 21))
    items.append(Item("cnn", "qdq", 17, fast=False))
    items.append(Item("mobilenet", "qdq", 17))
    for model in ("cnn", "mobilenet"):
        items.append(Item(model, "qdq", 17, (("per_channel", True),), fast=model == "cnn"))
    items.append(Item("bert", "qdq", 17))
    for model in ("cnn", "mobilenet", "bert", "vit", "lstm"):
        items.append(Item(model, "qdyn", 17))
    items.append(Item("cnn", "qdyn", 17, (("per_channel", True),)))
    return items


CORPUS: list[Item] = _corpus()
BY_NAME: dict[str, Item] = {i.name: i for i in CORPUS}
FAST: list[Item] = [i for i in CORPUS if i.fast]
