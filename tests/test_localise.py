"""Localisation: the report names where an artifact departs from PyTorch."""

import numpy as np
import onnx
from onnx import numpy_helper

from interop import BuildConfig, build
from interop.stages.localise import departure_layer, first_onnx_departure
from interop.stages.outputs import flat_module
from tests.fixtures.models import three_layers


def test_fp16_overflow_is_located_at_the_op_that_overflows(tmp_path):
    report = build(BuildConfig(model="tests.fixtures.models:explodes", inputs=["x:2x4:float32:1..3"],
                               targets=["coreml"], out=str(tmp_path)))
    assert not report.passed
    where = report.data["targets"]["coreml"]["departure"]
    assert "big" in where and "Inf" in where  # `big = self.fc(x) * 30000.0` in the model's source


def test_onnx_departure_names_the_corrupted_layer(tmp_path):
    report = build(BuildConfig(model="tests.fixtures.models:three_layers", inputs=["x:2x6"], targets=["onnx"],
                               out=str(tmp_path)))
    assert report.passed
    path = tmp_path / "three_layers.onnx"
    model = onnx.load(str(path))
    fc2 = next(i for i in model.graph.initializer if numpy_helper.to_array(i).shape == (8, 8))
    fc2.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(fc2) * 3.0, fc2.name))
    onnx.save(model, str(path))
    sample = {"x": np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)}
    where = first_onnx_departure(path, flat_module(three_layers()), sample, ["x"])
    assert where is not None and "'fc2'" in where


def test_departure_layer_skips_fused_layers():
    a, b, c = np.ones((2, 3)), np.full((2, 3), 2.0), np.full((2, 3), 3.0)
    torch_values = {"conv": a * 7, "bn": a, "relu": b, "head": c}  # conv was fused into bn: its value is absent
    assert departure_layer(torch_values, [a, b, c * 2]) == "head"
    assert departure_layer(torch_values, [a, b, c]) is None


def test_degenerate_model_is_flagged_not_silently_green(tmp_path):
    report = build(BuildConfig(model="tests.fixtures.models:vanishing", inputs=["x:2x4"], targets=["onnx"],
                               out=str(tmp_path)))
    assert all(a["degenerate"] for a in report.data["agreement"])
    assert any("not evidence" in w for w in report.data["warnings"])
    assert "not evidence" in (tmp_path / "vanishing.report.md").read_text()
