"""verify of variants and generation, --compare-where and the generation knobs, against crafted
reports and flags: a prompt id outside the vocabulary, a FIFO as a variant or generation artifact,
a report that forges a verdict or loosens its tolerance, a mask that selects nothing, decode steps
and context lengths that would run unbounded. Refused with one line and exit 2, or failed (exit 1)
where the verdict is what is at stake."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interop.cli import app
from tests.conftest import SAMPLES
from tests.security.test_fleet_attacks import exit_2

runner = CliRunner()
LSTM = str(SAMPLES / "lstm_sum.pt")


@pytest.fixture
def lstm_report(built_lstm, tmp_path):
    """A private copy of the LSTM build (report paths pointing at the copy): (report path, data)."""
    out, _ = built_lstm
    folder = tmp_path / "build"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns(".*"))
    path = folder / "lstm_sum.report.json"
    data = json.loads(path.read_text())
    for entry in data["targets"].values():
        if entry.get("path"):
            entry["path"] = str(folder / Path(entry["path"]).name)
    path.write_text(json.dumps(data))
    return path, data


# --- a report forging or loosening its verdict ----------------------------------------------------
@pytest.mark.parametrize("tolerance", ["*:rel_l2=1e9", "*:rel_l2=nan", "*:max_rel=inf"])
def test_a_report_never_loosens_verify(lstm_report, tolerance):
    path, data = lstm_report
    data["settings"]["tolerance"] = [tolerance]
    path.write_text(json.dumps(data))
    result = runner.invoke(app, ["verify", str(path), "--json"])
    replay = json.loads(result.stdout)
    assert result.exit_code == 1 and replay["passed"] is False, result.output
    assert any(tolerance in w and "looser" in w for w in replay["warnings"])


def test_a_report_claiming_passed_is_judged_again(lstm_report):
    """Artifacts damaged, and the report's own verdict, rows and text say PASSED: verify recomputes."""
    import onnx
    from onnx import numpy_helper

    path, data = lstm_report
    onnx_path = Path(data["targets"]["onnx"]["path"])
    model = onnx.load(str(onnx_path))
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data) or 0)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 2.5, weight.name))
    onnx.save(model, str(onnx_path))
    data["passed"] = True
    for row in data["agreement"]:
        row.update(passed=True, rel_l2=0.0, note="**PASSED** — every target verified")
    data["warnings"] = ["\n**PASSED** — every target verified"]
    path.write_text(json.dumps(data))
    result = runner.invoke(app, ["verify", str(path), "--json"])
    replay = json.loads(result.stdout)
    assert result.exit_code == 1 and not replay["passed"] and replay["targets"]["onnx"]["status"] == "disagrees"


# --- FIFOs named by a report ------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_a_variant_artifact_that_is_a_fifo_is_never_opened(lstm_report, tmp_path):
    path, data = lstm_report
    fifo = tmp_path / "lstm_sum.int8.onnx"
    os.mkfifo(fifo)
    data["variants"] = [{"target": "onnx", "variant": "int8", "shipped": True, "passed": True, "path": str(fifo),
                         "gate": {"psnr_db": 30}}]
    path.write_text(json.dumps(data))
    exit_2(runner.invoke(app, ["verify", str(path)]), "regular file")


# --- generation verify ------------------------------------------------------------------------------
def generation_report(folder: Path, tokens, targets: dict | None = None, **settings) -> Path:
    """A generation report as interop writes it (its start, for the tiny Llama), with ``tokens`` as
    the recorded prompt and ``targets`` as the artifacts it claims."""
    from interop.generation.build import start_report
    from interop.settings import BuildConfig, resolve
    from interop.sources.torch_files import load_source

    config = resolve(BuildConfig(model="tests.generation_models:tiny_llama", task="text-generation", targets=["onnx"],
                                 max_context=48, decode_steps=4, out=str(folder)))
    report = start_report(config, load_source(config.model))
    report.data["generation_prompt"] = {"tokens": tokens}
    report.data["targets"] = targets or {"onnx": {"status": "skipped"}}
    report.data["settings"].update(settings)
    path = folder / "tiny_llama.report.json"
    path.write_text(json.dumps(report.data))
    return path


@pytest.mark.parametrize("tokens, words", [
    ([1, 2, 256], "outside the model's vocabulary"),
    ([-1, 3], "outside the model's vocabulary"),
    ([10 ** 12], "outside the model's vocabulary"),
    (["a", "b"], "not a list of token ids"),
    ([], "not a list of token ids"),
    ([1.5], "not a list of token ids"),
    ([1] * 100_000, "leaves room"),
])
def test_a_prompt_the_model_cannot_take_is_exit_2(tmp_path, tokens, words):
    path = generation_report(tmp_path, tokens)
    exit_2(runner.invoke(app, ["verify", str(path), "--trust"]), words)


@pytest.mark.parametrize("settings, words", [
    ({"decode_steps": 10 ** 9}, "--decode-steps"),
    ({"max_context": 10 ** 9}, "--max-context"),
    ({"decode_steps": -3}, "decode"),
])
def test_a_report_asking_for_unbounded_generation_is_exit_2(tmp_path, settings, words):
    path = generation_report(tmp_path, [1, 2, 3], **settings)
    exit_2(runner.invoke(app, ["verify", str(path), "--trust"]), words)


@pytest.mark.timeout(180)
def test_a_generation_artifact_that_is_a_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "tiny_llama.onnx"
    os.mkfifo(fifo)
    path = generation_report(tmp_path, [1, 2, 3], {"onnx": {"status": "ok", "path": str(fifo)}})
    exit_2(runner.invoke(app, ["verify", str(path), "--trust"]), "regular file")


@pytest.mark.parametrize("flags, words", [
    (["--decode-steps", "1000000000"], "--decode-steps"),
    (["--max-context", "1000000000"], "--max-context"),
    (["--decode-steps", "0"], "decode"),
])
def test_unbounded_generation_flags_are_exit_2_before_loading(tmp_path, flags, words):
    result = runner.invoke(app, ["build", "tests.generation_models:tiny_llama", "--task", "text-generation",
                                 "--targets", "onnx", "--out", str(tmp_path / "out"), *flags])
    exit_2(result, words)
    assert not any((tmp_path / "out").glob("*.onnx"))


def test_unbounded_generation_from_a_config_file_is_exit_2(tmp_path):
    (tmp_path / "gen.toml").write_text("decode_steps = 1000000000\n")
    result = runner.invoke(app, ["build", "tests.generation_models:tiny_llama", "--task", "text-generation",
                                 "--targets", "onnx", "--config", str(tmp_path / "gen.toml"), "--out", str(tmp_path)])
    exit_2(result, "--decode-steps")


# --- --compare-where: a mask that selects nothing proves nothing ------------------------------------
def test_an_empty_compare_where_mask_fails(tmp_path):
    result = runner.invoke(app, ["build", "tests.security.attack_models:masked", "--input", "x:2x4",
                                 "--input", "m:2x4:int64:0..0", "--output-name", "y", "--compare-where", "y:m",
                                 "--targets", "onnx", "--num-samples", "1", "--out", str(tmp_path), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and not report["passed"], result.output
    rows = [a for a in report["agreement"] if a["output"] == "y"]  # judged at export already, or in agreement
    said = report["targets"]["onnx"].get("error") or " ".join(a["note"] for a in rows)
    assert "selects no position" in said and all(not a["passed"] for a in rows)
