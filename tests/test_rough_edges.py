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
