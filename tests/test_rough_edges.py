"""Issue 29's classes, each through a model of its class (tests/rough_models.py): what used to
stop a build or a check and must not, and what used to pass unseen and must not."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from interop.cli import app

runner = CliRunner()


def build_json(tmp_path, *args: str):
    result = runner.invoke(app, ["build", *args, "--out", str(tmp_path / "out"), "--json"])
    return result, json.loads(result.stdout)


def test_a_text_classifier_with_labels_and_a_dynamic_batch_ships_core_ml(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("neg\nneu\npos\n")
    result, report = build_json(tmp_path, "tests.rough_models:text_classifier", "--input", "ids:2x8:int64:0..99",
                                "--dynamic", "ids:0=batch:1..4", "--labels", str(labels), "--targets", "coreml")
    assert result.exit_code == 0, report["targets"]["coreml"]
    cases = {row["case"] for row in report["agreement"] if row["runtime"] == "interop-mil" and row["passed"]}
    assert len(cases) >= 2  # the example and another batch size, each executed and agreeing


# --- trace hazards: a static unpack is a warning; a size-dependent one still stops, with its cause


def test_unpacking_a_static_axis_is_a_warning_and_both_artifacts_ship(tmp_path):
    result, report = build_json(tmp_path, "tests.rough_models:static_unpack_attention", "--input", "x:2x8x16",
                                "--dynamic", "x:1=seq:4..32")
    assert result.exit_code == 0, report.get("error") or report["targets"]
    assert {report["targets"][t]["status"] for t in ("onnx", "coreml")} == {"ok"}
    assert any("static size" in w and "rough_models.py" in w for w in report["warnings"]), report["warnings"]


def test_unpacking_the_dynamic_axis_still_stops_with_the_cause(tmp_path):
    result, report = build_json(tmp_path, "tests.rough_models:dynamic_unpack", "--input", "x:3x4",
                                "--dynamic", "x:0=n:2..8", "--targets", "onnx")
    assert result.exit_code == 1 and report["error"]["kind"] == "export"
    message = report["error"]["message"]
    assert "Iterating over a tensor" in message and "Expected 3 elements in a list but found" in message


def test_a_loop_over_a_dynamic_length_names_the_exception_the_line_and_fits_the_hint(tmp_path):
    result, report = build_json(tmp_path, "tests.rough_models:length_loop", "--input", "x:2x8x4",
                                "--dynamic", "x:1=length:4..64", "--targets", "onnx")
    assert result.exit_code == 1
    message, hint = report["error"]["message"], report["error"]["hint"]
    assert "must match the size of tensor b" in message  # the exception's own text
    assert "rough_models.py:" in message and "self.cell(x[:, t], h)" in message  # the user's line
    assert "loop" in hint and "torch.where" not in hint


def test_check_does_not_block_a_static_unpack():
    result = runner.invoke(app, ["check", "tests.rough_models:static_unpack_attention", "--input", "x:2x8x16",
                                 "--dynamic", "x:1=seq:4..32", "--json"])
    data = json.loads(result.stdout)
    assert data["hazards"] == [] and data["would_fail"] is False, data
