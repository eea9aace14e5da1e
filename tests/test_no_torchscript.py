"""TorchScript-free builds (--no-torchscript / INTEROP_NO_TORCHSCRIPT=1): no torch.jit tracer or
scripter runs (both are made to fail here), ONNX comes from the dynamo exporter and Core ML from
torch.export, and the setting is recorded with where it came from."""

from __future__ import annotations

import pytest
import torch

from tests import zoo


@pytest.fixture
def no_jit(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("torch.jit used in a TorchScript-free build")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    monkeypatch.setattr(torch.jit, "script", refuse)


@pytest.mark.parametrize("name", ["cnn", "lstm"])
def test_zoo_model_builds_torchscript_free(name, no_jit, tmp_path):
    from interop import build

    report = build(zoo.ZOO[name].config(out=str(tmp_path), no_torchscript=True)).data
    assert report["passed"], report["targets"]
    assert report["targets"]["onnx"]["exporter"] == "dynamo"
    assert report["targets"]["coreml"]["capture"] == "torch.export"
    assert report["settings"]["no_torchscript"] is True and report["settings_source"]["no_torchscript"] == "flag"


def test_environment_sets_it_and_conflicting_choices_are_refused(monkeypatch):
    from interop.errors import SpecError
    from interop.settings import BuildConfig, resolve

    monkeypatch.setenv("INTEROP_NO_TORCHSCRIPT", "1")
    config = resolve(BuildConfig(model="tests.zoo:cnn_model"))
    assert config.no_torchscript and config.provenance["no_torchscript"] == "env"
    with pytest.raises(SpecError, match="TorchScript"):
        resolve(BuildConfig(model="tests.zoo:cnn_model", exporter="torchscript"))
    monkeypatch.setenv("INTEROP_NO_TORCHSCRIPT", "maybe")
    with pytest.raises(SpecError, match="INTEROP_NO_TORCHSCRIPT"):
        resolve(BuildConfig(model="tests.zoo:cnn_model"))
