"""ONNX files other tools wrote (tests/foreign_corpus.py) build a Core ML package that agrees with
ONNX Runtime on the file: the fast subset by default, the whole corpus as slow tests, each
asserting the verdict the corpus expects (EXPECTED_FAIL names what still cannot convert and why);
and the seed MobileNetV2 exported by torch.onnx (TorchScript exporter and dynamo) becomes a Core
ML classifier that classifies like the PyTorch source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from interop import BuildConfig, build
from interop.cli import app
from tests import foreign_corpus

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

# item -> a phrase of the reason it does not convert (the producer's own failure, or the report's)
EXPECTED_FAIL = {
    "bert-torchscript11": "producer: scaled_dot_product_attention needs opset 14",
    "vit-torchscript11": "producer: scaled_dot_product_attention needs opset 14",
    "lstm-qdyn17": "DynamicQuantizeLSTM",  # com.microsoft's quantized LSTM: no converter
    # measured by scripts/foreign_onnx_coverage.py, still open (docs/coverage.md):
    "lstm-dynamo18": "must be a constant", "lstm-dynamo20": "must be a constant", "lstm-dynamo23": "must be a constant",
    "mobilenet-qdq17": "", "bert-qdq17": "",  # Core ML (fp16) departs by more than fp16's tolerance
    "cnn-qdyn17": "Concat", "cnn-qdyn17-perchannel": "Concat", "bert-qdyn17": "Concat", "vit-qdyn17": "Concat",
    "mobilenet-qdyn17": "ConvInteger node",
}
# items whose Core ML package declares fixed shapes although the file's batch axis is dynamic
# (the graph computes shapes at run time; the report says so)
FIXED_SHAPES = {"bert-torchscript17", "vit-torchscript17", "bert-dynamo18", "vit-dynamo18", "bert-dynamo23",
                "vit-dynamo23", "bert-qdq17", "bert-qdyn17", "vit-qdyn17",
                # Resize by the ONNX formula: the build falls back to fixed shapes (open)
                "resize-linear-asymmetric-onnx.helper13", "resize-nearest-half_pixel-round_prefer_floor-onnx.helper13",
                "resize-nearest-align_corners-round_prefer_ceil-onnx.helper13",
                "resize-nearest-half_pixel-ceil-onnx.helper13", "resize-cubic-half_pixel-onnx.helper13",
                "resize-cubic-align_corners-onnx.helper13", "resize-cubic-half_pixel-onnx.helper11",
                "resize-cubic-half_pixel-onnx.helper19", "resize-nearest-half_pixel-round_prefer_floor-onnx.helper11",
                "resize-nearest-half_pixel-round_prefer_floor-onnx.helper19"}


def _check(item: foreign_corpus.Item, tmp: Path) -> None:
    expected = EXPECTED_FAIL.get(item.name, "")
    if expected.startswith("producer:"):
        with pytest.raises(Exception):
            foreign_corpus.make(item, tmp / "src")
        return
    path = foreign_corpus.make(item, tmp / "src")
    data = build(BuildConfig(model=str(path), out=str(tmp / "out"))).data
    coreml = data["targets"]["coreml"]
    assert data["targets"]["onnx"]["status"] == "ok"  # the ONNX artifact never depends on the converter
    if expected:
        assert coreml["status"] != "ok" and expected in (coreml.get("error") or ""), coreml.get("error")
        return
    assert coreml["status"] == "ok", coreml.get("error")
    rows = [a for a in data["agreement"] if a["target"] == "coreml"]
    assert rows and all(a["passed"] for a in rows)
    names = foreign_corpus.MODELS[item.model].inputs if item.model in foreign_corpus.MODELS else ()
    assert [i["name"] for i in data["inputs"]] == [n[0] for n in names] or not names
    if item.dynamic and item.name not in FIXED_SHAPES:
        assert coreml.get("declared_shapes") != "fixed" and coreml["shapes"]["mode"] != "fixed"
        assert len({a["case"] for a in rows}) > 1  # checked at more than one batch size


@pytest.mark.parametrize("name", [i.name for i in foreign_corpus.FAST])
def test_fast_foreign_files(name, tmp_path):
    _check(foreign_corpus.BY_NAME[name], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [i.name for i in foreign_corpus.CORPUS if not i.fast])
def test_whole_foreign_corpus(name, tmp_path):
    _check(foreign_corpus.BY_NAME[name], tmp_path)


def test_expected_lists_name_corpus_items():
    assert set(EXPECTED_FAIL) | FIXED_SHAPES <= set(foreign_corpus.BY_NAME)


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo"])
def test_seed_mobilenet_v2_onnx_classifies_like_the_source(dynamo, tmp_path):
    """The seed flow: MobileNetV2 -> torch.onnx.export(image / classLabelProbs names) -> interop build
    --image --labels -> a Core ML classifier whose top-1 on the samples is the PyTorch source's."""
    import torch

    from samples.models import MobileNetV2
    from tests.zoo import _with_random_bn

    torch.manual_seed(0)
    model = _with_random_bn(MobileNetV2(classes=10, width=0.5)).eval()
    path = tmp_path / "mobilenet_v2.onnx"
    example = (torch.rand(1, 3, 96, 96),)
    if dynamo:
        program = torch.onnx.export(model, example, input_names=["image"], output_names=["classLabelProbs"],
                                    dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=8)}},
                                    opset_version=18, dynamo=True)
        program.save(str(path))
    else:
        torch.onnx.export(model, example, str(path), input_names=["image"], output_names=["classLabelProbs"],
                          dynamic_axes={"image": {0: "batch"}}, opset_version=17, dynamo=False)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    result = runner.invoke(app, ["build", str(path), "--out", str(tmp_path / "out"), "--json", "--image", "image",
                                 "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)),
                                 "--labels", str(labels)])
    report = json.loads(result.stdout)
    assert result.exit_code == 0, {t: (e["status"], e.get("error")) for t, e in report["targets"].items()}
    rows = [a for a in report["agreement"] if a["target"] == "coreml"]
    assert rows and all(a["passed"] for a in rows)
    info = json.loads(runner.invoke(app, ["inspect", report["targets"]["coreml"]["path"], "--json"]).stdout)
    assert {o["name"] for o in info["outputs"]} == {"classLabel", "classLabelProbs"}
    assert "image" in info["inputs"][0]["type"]
    # the Core ML classifier's label on raw pixels is the PyTorch source's top-1
    from interop.runtimes import mil

    rng = np.random.default_rng(3)
    for _ in range(3):
        pixels = rng.integers(0, 256, size=(1, 3, 96, 96)).astype(np.float32)
        x = (torch.from_numpy(pixels) / 255.0 - torch.tensor(mean).reshape(1, 3, 1, 1)) / torch.tensor(std).reshape(
            1, 3, 1, 1)
        with torch.no_grad():
            expected = f"class{int(model(x).argmax(1))}"
        got = mil.predict(report["targets"]["coreml"]["path"], {"image": pixels})
        assert got["classLabel"] == expected
