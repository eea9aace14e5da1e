"""The Core ML target users ship: image inputs with exact normalisation, classifiers, capture
fallbacks, flexible shapes, int64 inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from interop import BuildConfig, build
from interop.errors import SpecError
from tests.conftest import ROOT, SAMPLES

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="session")
def mobilenet(tmp_path_factory):
    """The MobileNetV2 sample (built on first use, ~9 MB), built with no flags."""
    model = SAMPLES / "mobilenet_v2.pt"
    if not model.exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_samples.py"), "--only-large"], check=True)
    out = tmp_path_factory.mktemp("mobilenet")
    report = build(BuildConfig(model=str(model), out=str(out), num_samples=1))
    return out, report


def test_mobilenet_is_an_image_classifier(mobilenet):
    from interop.commands.inspect import inspect_artifact

    out, report = mobilenet
    assert report.passed, report.to_json_text()
    info = inspect_artifact(str(out / "mobilenet_v2.mlpackage"))
    assert info["inputs"][0]["name"] == "image" and info["inputs"][0]["type"] == "image RGB"
    assert info["inputs"][0]["shape"] == [224, 224]
    assert [o["name"] for o in info["outputs"]] == ["classLabel", "classLabelProbs"]
    assert info["outputs"][1]["type"] == "dictionary"
    onnx_info = inspect_artifact(str(out / "mobilenet_v2.onnx"))
    assert json.loads(onnx_info["metadata"]["interop.labels"])[0] == "tench"


def test_onnx_and_coreml_take_identical_raw_pixels(mobilenet):
    import onnxruntime as ort

    from interop.runtimes import mil

    out, _ = mobilenet
    pixels = np.random.default_rng(0).integers(0, 256, size=(1, 3, 224, 224)).astype(np.float32)
    onnx_probs = ort.InferenceSession(str(out / "mobilenet_v2.onnx")).run(None, {"image": pixels})[0]
    coreml = mil.predict(out / "mobilenet_v2.mlpackage", {"image": pixels})
    labels = (SAMPLES / "mobilenet_v2.labels.txt").read_text().split()
    coreml_probs = np.array([[coreml["classLabelProbs"][lab] for lab in labels]])
    net = torch.jit.load(str(SAMPLES / "mobilenet_v2.pt")).eval()
    normalised = (torch.from_numpy(pixels) / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(net(normalised), -1).numpy()
    np.testing.assert_allclose(onnx_probs, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(coreml_probs, expected, rtol=2e-2, atol=2e-3)
    assert coreml["classLabel"] == labels[int(expected.argmax())]


def test_per_channel_std_is_folded_exactly(tmp_path):
    """A non-trivial std (not expressible as Core ML's one scalar scale) must be exact in both."""
    import onnxruntime as ort

    from interop.runtimes import mil
    from tests.fixtures.models import normalised

    std = [0.1, 0.5, 2.0]
    report = build(BuildConfig(model="tests.fixtures.models:normalised", inputs=["image:1x3x16x16"], image="image",
                               mean="0.2,0.4,0.6", std="0.1,0.5,2.0", precision="fp32", out=str(tmp_path)))
    assert report.passed, report.to_json_text()
    pixels = np.random.default_rng(1).integers(0, 256, size=(1, 3, 16, 16)).astype(np.float32)
    x = (torch.from_numpy(pixels) / 255 - torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = normalised()(x).numpy()
    got_onnx = ort.InferenceSession(str(tmp_path / "normalised.onnx")).run(None, {"image": pixels})[0]
    got_coreml = mil.predict(tmp_path / "normalised.mlpackage", {"image": pixels})["output"]
    np.testing.assert_allclose(got_onnx, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_coreml, expected, rtol=1e-4, atol=1e-4)
    # the check can fail: a mean-std folding (the classic mistake) is far off
    wrong = normalised()((torch.from_numpy(pixels) / 255 - 0.4) / 0.867).detach().numpy()
    assert not np.allclose(got_coreml, wrong, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("flags, fragment", [
    (dict(image="image", mean="0.5,0.5"), "3 channels"),
    (dict(image="image", std="1,0,1"), "<= 0"),
    (dict(image="nope"), "no input named"),
    (dict(mean="0.5,0.5,0.5"), "without --image"),
])
def test_bad_image_flags(flags, fragment, tmp_path):
    with pytest.raises(SpecError, match=fragment):
        build(BuildConfig(model="tests.fixtures.models:normalised", inputs=["image:1x3x16x16"], out=str(tmp_path), **flags))


def test_labels_must_match_the_classes(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(SpecError, match="2 labels"):
        build(BuildConfig(model="tests.fixtures.models:normalised", inputs=["image:1x3x16x16"], labels=str(labels),
                          out=str(tmp_path)))


def test_custom_autograd_falls_back_to_torch_export(tmp_path):
    report = build(BuildConfig(model="tests.fixtures.models:custom_autograd", inputs=["x:2x4"],
                               dynamic=["x:0=batch:1..8"], targets=["coreml"], out=str(tmp_path)))
    coreml = report.data["targets"]["coreml"]
    assert report.passed, report.to_json_text()
    assert coreml["capture"] == "torch.export"
    assert coreml["rejected"][0]["path"] == "torch.jit.trace" and "pythonop" in coreml["rejected"][0]["reason"].lower()


def test_int64_inputs_become_int32_and_enumerated_shapes(tmp_path):
    from interop.commands.inspect import inspect_artifact

    report = build(BuildConfig(model="tests.fixtures.models:token_classifier", inputs=["ids:2x7:int64:0..99"],
                               dynamic=["ids:0=batch:1..4"], coreml_shapes="enumerated", targets=["coreml"],
                               out=str(tmp_path)))
    assert report.passed, report.to_json_text()
    assert any("int32" in n for n in report.data["targets"]["coreml"]["notes"])
    info = inspect_artifact(str(tmp_path / "token_classifier.mlpackage"))
    assert info["inputs"][0]["type"] == "multiArray int32"
    assert sorted(info["inputs"][0]["shape"]) == [[2, 7], [3, 7]]


def test_unknown_deployment_target(tmp_path):
    report_or_error = None
    with pytest.raises(SpecError, match="deployment target"):
        report_or_error = build(BuildConfig(model="tests.fixtures.models:tiny", inputs=["x:2x4"], targets=["coreml"],
                                            deployment_target="iOS99", out=str(tmp_path)))
    assert report_or_error is None
