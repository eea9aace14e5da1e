"""`interop build model.onnx`: both targets from an ONNX file. The reference is ONNX Runtime on
the source; the graph converted to PyTorch (onnx2torch) is checked at every case, and a converter
fault is reported as the converter's. Files: ONNX that interop itself writes for zoo models,
torch's dynamo exporter, graphs built with onnx.helper at opset 13 and the newest opset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from interop import BuildConfig, build
from interop.cli import app
from tests import zoo

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
FAST_ZOO = ["cnn", "bert"]  # flexible shapes (cnn) and run-time shape arithmetic (bert)
SLOW_ZOO = [name for name, e in zoo.ZOO.items() if name not in FAST_ZOO and name != "custom_function" and not e.slow]


def _onnx_of(name: str, tmp: Path) -> Path:
    entry = zoo.ZOO[name]
    report = build(entry.config(out=str(tmp / "src"), targets=["onnx"], allow_trace_warnings=True))
    assert report.passed, report.data["targets"]
    return Path(report.data["targets"]["onnx"]["path"])


def _build_onnx(path: Path, out: Path, *flags: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["build", str(path), "--out", str(out), "--json", *flags])
    return result.exit_code, json.loads(result.stdout)


def _assert_both_agree(code: int, report: dict) -> None:
    assert code == 0, {t: (e["status"], e.get("error")) for t, e in report["targets"].items()}
    assert report["conversion"]["passed"] and report["conversion"]["name"] == "onnx2torch"
    assert {a["target"] for a in report["agreement"]} == {"onnx", "coreml"}
    assert all(a["passed"] for a in report["agreement"])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The fast zoo models' ONNX files (written by interop) and the reports of building from them."""
    out = {}
    for name in FAST_ZOO:
        tmp = tmp_path_factory.mktemp(name)
        out[name] = _build_onnx(_onnx_of(name, tmp), tmp / "out")
    return out


@pytest.mark.parametrize("name", FAST_ZOO)
def test_zoo_onnx_converts_to_core_ml_and_agrees(name, built):
    code, report = built[name]
    _assert_both_agree(code, report)
    onnx_cases = {a["case"] for a in report["agreement"] if a["target"] == "onnx"}
    assert len(onnx_cases) >= 2  # the ONNX artifact keeps and is checked at its dynamic axes


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_ZOO)
def test_rest_of_zoo_onnx_converts(name, tmp_path):
    _assert_both_agree(*_build_onnx(_onnx_of(name, tmp_path), tmp_path / "out"))


def test_names_and_flexible_dims_carry_over(built):
    code, report = built["cnn"]
    _assert_both_agree(code, report)
    package = Path(report["targets"]["coreml"]["path"])
    info = json.loads(runner.invoke(app, ["inspect", str(package), "--json"]).stdout)
    assert [i["name"] for i in info["inputs"]] == ["image"] and [o["name"] for o in info["outputs"]] == ["output"]
    coreml_cases = {a["case"] for a in report["agreement"] if a["target"] == "coreml"}
    assert {"batch=5", "height=33", "width=33"} <= coreml_cases  # flexible, checked at the other sizes
    assert "declared_shapes" not in report["targets"]["coreml"]


def test_run_time_shape_arithmetic_falls_back_to_fixed_shapes_loudly(built):
    code, report = built["bert"]
    _assert_both_agree(code, report)
    assert report["targets"]["coreml"]["declared_shapes"] == "fixed"
    assert any("FIXED input shapes" in w for w in report["warnings"])
    assert {a["case"] for a in report["agreement"] if a["target"] == "coreml"} == {"example"}


def _small_net() -> "object":
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 5)

        def forward(self, image):
            return self.fc(torch.relu(self.conv(image)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    return Net().eval()


def test_dynamo_exported_onnx(tmp_path):
    import torch

    path = tmp_path / "dyn.onnx"
    batch = torch.export.Dim("batch", min=1, max=16)
    torch.onnx.export(_small_net(), (torch.randn(2, 3, 16, 16),), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_shapes={"image": {0: batch}}, dynamo=True)
    code, report = _build_onnx(path, tmp_path / "out", "--dynamic", "image:0=batch:1..16")
    _assert_both_agree(code, report)
    assert {a["case"] for a in report["agreement"] if a["target"] == "coreml"} >= {"example"}


def _helper_graph(opset: int) -> onnx.ModelProto:
    """x (batch, 8) -> MatMul -> Add -> Gelu or Relu -> ReduceMean (axes as input from 18) -> Softmax."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["h"])]
    if opset >= 20:
        nodes.append(helper.make_node("Gelu", ["h"], ["a"]))
    else:
        nodes.append(helper.make_node("Relu", ["h"], ["a"]))
    inits = [w, b]
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"))
        nodes.append(helper.make_node("ReduceMean", ["a", "axes"], ["m"], keepdims=1))
    else:
        nodes.append(helper.make_node("ReduceMean", ["a"], ["m"], axes=[1], keepdims=1))
    nodes += [helper.make_node("Sub", ["a", "m"], ["c"]), helper.make_node("Softmax", ["c"], ["probs"], axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("opset", [11, 13, 21, 23])
def test_onnx_helper_graphs_at_old_and_new_opsets(opset, tmp_path):
    path = tmp_path / f"g{opset}.onnx"
    onnx.save(_helper_graph(opset), str(path))
    code, report = _build_onnx(path, tmp_path / "out", "--dynamic", "x:0=batch:1..32")
    _assert_both_agree(code, report)
    assert [i["name"] for i in report["inputs"]] == ["x"] and report["outputs"][0]["name"] == "probs"


def _unconvertible(path: Path) -> None:
    """An op onnx2torch has no converter for (Hardmax) between two it has."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first_relu"),
             helper.make_node("Hardmax", ["r"], ["h"], name="the_hardmax", axis=-1),
             helper.make_node("Relu", ["h"], ["y"], name="last_relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_unconvertible_op_ships_onnx_and_names_the_op(tmp_path):
    path = tmp_path / "hard.onnx"
    _unconvertible(path)
    code, report = _build_onnx(path, tmp_path / "out")
    assert code == 1
    assert report["targets"]["onnx"]["status"] == "ok" and report["targets"]["onnx"]["shipped"]
    assert report["targets"]["coreml"]["status"] == "failed"
    assert "Hardmax" in report["targets"]["coreml"]["error"] and "onnx2torch" in report["targets"]["coreml"]["error"]
    assert (tmp_path / "out" / "hard.interop.onnx").exists()


def test_check_lists_onnx_ops_the_converter_lacks_with_nodes_and_counts(tmp_path):
    path = tmp_path / "hard.onnx"
    _unconvertible(path)
    result = runner.invoke(app, ["check", str(path), "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and data["would_fail"]
    assert data["onnx_ops"] == [{"op": "Hardmax", "domain": "ai.onnx", "count": 1, "nodes": ["the_hardmax"],
                                 "converter": "onnx2torch"}]
    assert data["blocked_targets"] == ["coreml"]


def test_converter_fault_is_blamed_on_the_converter(tmp_path, monkeypatch):
    import torch

    from interop.sources import onnx_convert

    real = onnx_convert.convert

    class OffByOne(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args) + 1.0

    monkeypatch.setattr(onnx_convert, "convert", lambda model: OffByOne(real(model)).eval())
    path = tmp_path / "g.onnx"
    onnx.save(_helper_graph(13), str(path))
    code, report = _build_onnx(path, tmp_path / "out", "--dynamic", "x:0=batch:1..8")
    assert code == 1
    assert not report["conversion"]["passed"]
    coreml = report["targets"]["coreml"]
    assert coreml["status"] == "failed" and "converter (onnx2torch) disagrees with ONNX Runtime" in coreml["error"]
    assert report["targets"]["onnx"]["status"] == "ok"  # the ONNX artifact does not depend on the converter


def test_image_classifier_flow_from_onnx(tmp_path):
    """The seed flow on a small CNN: raw-pixel image input and class labels from an ONNX file."""
    import torch

    path = tmp_path / "cls.onnx"
    torch.onnx.export(_small_net(), (torch.randn(1, 3, 16, 16),), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}}, opset_version=17, dynamo=False)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class{i}" for i in range(5)) + "\n")
    code, report = _build_onnx(path, tmp_path / "out", "--image", "image", "--mean", "0.5,0.5,0.5", "--std",
                               "0.25,0.25,0.25", "--labels", str(labels))
    _assert_both_agree(code, report)
    info = json.loads(runner.invoke(app, ["inspect", report["targets"]["coreml"]["path"], "--json"]).stdout)
    assert {o["name"] for o in info["outputs"]} == {"classLabel", "classLabelProbs"}
    assert "image" in info["inputs"][0]["type"]


@pytest.mark.slow
def test_mobilenet_v2_seed_flow_from_onnx(tmp_path):
    import subprocess
    import sys

    import torch

    sample = ROOT / "samples" / "mobilenet_v2.pt"
    if not sample.exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_samples.py"), "--only-large"], check=True)
    path = tmp_path / "mobilenet_v2.onnx"
    torch.onnx.export(torch.jit.load(str(sample)).eval(), (torch.rand(1, 3, 224, 224),), str(path),
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}},
                      opset_version=17, dynamo=False)
    code, report = _build_onnx(path, tmp_path / "out", "--image", "image", "--mean", "0.485,0.456,0.406", "--std",
                               "0.229,0.224,0.225", "--labels", str(ROOT / "samples" / "mobilenet_v2.labels.txt"))
    _assert_both_agree(code, report)


def test_verify_replays_an_onnx_source_build_and_catches_an_edited_package(tmp_path):
    import shutil

    path = tmp_path / "g.onnx"
    onnx.save(_helper_graph(13), str(path))
    code, report = _build_onnx(path, tmp_path / "out", "--dynamic", "x:0=batch:1..8", "--precision", "fp32")
    _assert_both_agree(code, report)
    report_path = tmp_path / "out" / "g.interop.report.json"
    again = runner.invoke(app, ["verify", str(report_path), "--json"])
    assert again.exit_code == 0, again.output
    assert {a["target"] for a in json.loads(again.stdout)["agreement"]} == {"onnx", "coreml"}
    weights = next((tmp_path / "out" / "g.interop.mlpackage").rglob("weight.bin"))
    blob = bytearray(weights.read_bytes())
    for i in range(len(blob) - 256, len(blob)):  # the last weights, whatever they are
        blob[i] ^= 0x40
    weights.write_bytes(bytes(blob))
    broken = runner.invoke(app, ["verify", str(report_path), "--json"])
    assert broken.exit_code == 1
    assert json.loads(broken.stdout)["targets"]["coreml"]["status"] in ("disagrees", "not-executed", "failed")
    shutil.rmtree(tmp_path / "out")
