"""Real-world model patterns (issue 14): each gets the right outcome per target — both artifacts
where both can convert, otherwise the one that passed plus the exact reason for the other."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from interop.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def build_json(tmp_path, *args: str):
    result = invoke("build", *args, "--out", str(tmp_path), "--json")
    return result, json.loads(result.stdout)


# --- keep what passed -------------------------------------------------------------------------


def test_coreml_conversion_failure_ships_the_verified_onnx(tmp_path):
    result, report = build_json(tmp_path, "tests.patterns:bicubic", "--input", "x:1x3x8x8")
    assert result.exit_code == 1
    onnx, coreml = report["targets"]["onnx"], report["targets"]["coreml"]
    assert onnx["status"] == "ok" and onnx["shipped"] is True and (tmp_path / "bicubic.onnx").exists()
    assert coreml["status"] == "failed" and not (tmp_path / "bicubic.mlpackage").exists()
    # the exact reason: the op, where it is, whether interop patches it, and how to ship ONNX alone
    assert "aten::upsample_bicubic2d" in coreml["error"] and "not patched by interop" in coreml["error"]
    assert "--targets onnx" in coreml["error"] and "--precision fp32" not in coreml["error"]
    assert (tmp_path / "bicubic.report.json").exists()


def test_console_says_which_target_shipped_and_why_the_other_did_not(tmp_path):
    result = invoke("build", "tests.patterns:bicubic", "--input", "x:1x3x8x8", "--out", str(tmp_path))
    assert result.exit_code == 1
    text = " ".join(result.stdout.split())
    assert "✓ onnx: shipped" in text and "✗ coreml failed: coremltools has no translation for aten::upsample_bicubic2d" in text
    assert "shipped onnx only" in text
    assert "has not been tested with this torch version" not in result.output  # doctor and the report say it


def test_fp16_overflow_ships_onnx_and_names_the_mil_op(tmp_path):
    result, report = build_json(tmp_path, "tests.fixtures.models:explodes", "--input", "x:2x4:float32:1..3")
    assert result.exit_code == 1
    assert report["targets"]["onnx"]["shipped"] is True and (tmp_path / "explodes.onnx").exists()
    coreml = report["targets"]["coreml"]
    assert coreml["status"] == "disagrees" and not (tmp_path / "explodes.mlpackage").exists()
    assert "MIL op mul" in coreml["error"] and "--precision fp32" in coreml["error"]


@pytest.mark.parametrize("model,inputs", [("tests.patterns:bicubic", "x:1x3x8x8"),
                                          ("tests.fixtures.models:explodes", "x:2x4:float32:1..3")])
def test_all_or_nothing_writes_no_artifact(tmp_path, model, inputs):
    result, report = build_json(tmp_path, model, "--input", inputs, "--all-or-nothing")
    assert result.exit_code == 1
    assert report["targets"]["onnx"]["status"] == "ok" and report["targets"]["onnx"]["shipped"] is False
    assert report["settings"]["all_or_nothing"] is True
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.mlpackage"))
    console = invoke("build", model, "--input", inputs, "--all-or-nothing", "--out", str(tmp_path))
    assert "passed but was not shipped: --all-or-nothing" in " ".join(console.stdout.split())
