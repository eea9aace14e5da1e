"""The CLI end to end (typer's CliRunner) on every committed sample, and one error case per
error kind: exit code, one line, no traceback, nothing written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interop.cli import app
from tests.conftest import SAMPLES

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("sample", ["lstm_sum", "small_cnn", "digit_net"])
def test_build_sample(sample, tmp_path):
    result = invoke("build", str(SAMPLES / f"{sample}.pt"), "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # --json prints exactly the report
    assert report["passed"] is True
    for suffix in (".onnx", ".mlpackage", ".report.json", ".report.md"):
        assert (tmp_path / f"{sample}{suffix}").exists()
    onnx = report["targets"]["onnx"]
    assert onnx["status"] == "ok" and onnx["opset"] >= 17 and onnx["exporter"] in ("torchscript", "dynamo")
    assert onnx["nodes_after"] <= onnx["nodes_before"]
    for target, runtime in (("onnx", "onnxruntime"), ("coreml", "interop-mil")):
        rows = [a for a in report["agreement"] if a["target"] == target and a["runtime"] == runtime]
        assert {a["case"] for a in rows} == {"example", f"batch={_other_batch(report)}"}
        assert all(a["passed"] for a in rows)
    sizes = {tuple(a["shape"])[0] for a in report["agreement"]}
    assert len(sizes) == 2 and 1 not in sizes - {report["inputs"][0]["shape"][0]}


def _other_batch(report):
    return next(c["sizes"]["batch"] for c in report["cases"] if c["name"] != "example")


def test_lstm_dynamic_batch_is_named_in_both_artifacts(built_lstm):
    out, report = built_lstm
    result = invoke("inspect", str(out / "lstm_sum.onnx"), "--json")
    info = json.loads(result.stdout)
    assert info["inputs"][0]["shape"] == ["batch", 6, 1]
    assert info["outputs"][0]["shape"] == ["batch", 3]  # not (1, 3): the dynamo size-1 trap
    ml = json.loads(invoke("inspect", str(out / "lstm_sum.mlpackage"), "--json").stdout)
    assert ml["inputs"][0]["name"] == "x" and ml["inputs"][0]["shape"][0] == "1..64"
    assert ml["outputs"][0]["name"] == "logits"


def test_report_markdown_and_json_contract(built_lstm):
    out, report = built_lstm
    data = json.loads((out / "lstm_sum.report.json").read_text())
    for key in ("interop_version", "passed", "model", "inputs", "outputs", "targets", "agreement", "warnings"):
        assert key in data
    assert set(data["model"]) >= {"source", "format", "parameters"}
    assert set(data["targets"]["onnx"]) >= {"status", "path", "exporter", "opset", "nodes_before", "nodes_after",
                                            "seconds", "error"}
    assert set(data["targets"]["coreml"]) >= {"status", "path", "precision", "deployment_target", "seconds", "error"}
    assert set(data["agreement"][0]) >= {"target", "runtime", "case", "output", "max_abs", "rel_l2", "cosine",
                                         "psnr_db", "top1", "tolerance", "passed", "note"}
    md = (out / "lstm_sum.report.md").read_text()
    assert "PASSED" in md and "| coreml | interop-mil | batch=3 | logits |" in md and "Tolerances" in md


def test_user_errors_are_one_line_exit_2(tmp_path):
    bad = tmp_path / "random.pt"
    bad.write_bytes(bytes(range(256)) * 8)
    out = tmp_path / "out"
    cases = [
        (["build", str(bad), "--out", str(out)], "not a PyTorch model"),  # LoadError
        (["build", str(SAMPLES / "lstm_sum.pt"), "--input", "x:1xQ", "--out", str(out)], "bad shape"),  # SpecError
        (["build", str(SAMPLES / "lstm_sum.pt"), "--targets", "tflite", "--out", str(out)], "unknown target"),
        (["build", str(SAMPLES / "lstm_sum.pt"), "--precision", "int4", "--out", str(out)], "unknown precision"),
        (["build", str(SAMPLES / "lstm_sum.pt"), "--input", "x:1x6", "--out", str(out)], "the model fails"),
        (["build", str(SAMPLES / "lstm_sum.pt"), "--dynamic", "y:0=batch", "--out", str(out)], "no input named"),
        (["verify", str(tmp_path / "nope.report.json")], "does not exist"),
        (["inspect", str(bad)], "neither"),
    ]
    for args, fragment in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.output, (args, result.stderr)
    assert not out.exists() or not any(out.iterdir())


def test_export_failure_exits_1_and_keeps_nothing(tmp_path):
    # the TorchScript exporter has no aten::diff: a target failure, not a user error
    result = invoke("build", "tests.fixtures.models:uses_diff", "--input", "x:2x5", "--targets", "onnx",
                    "--exporter", "torchscript", "--out", str(tmp_path), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["targets"]["onnx"]["status"] == "failed" and "diff" in report["targets"]["onnx"]["error"]
    assert not (tmp_path / "uses_diff.onnx").exists()


def test_diff_patch_converts_to_coreml(tmp_path):
    result = invoke("build", "tests.fixtures.models:uses_diff", "--input", "x:2x5", "--dynamic", "x:0=batch:1..8",
                    "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["targets"]["coreml"]["status"] == "ok"
    assert any(a["target"] == "coreml" and a["passed"] for a in report["agreement"])


def test_fp16_overflow_caught_at_fp16_and_passes_at_fp32(tmp_path):
    args = ["build", "tests.fixtures.models:explodes", "--input", "x:2x4:float32:1..3", "--targets", "coreml",
            "--out", str(tmp_path), "--json"]
    fp16 = invoke(*args, "--precision", "fp16")
    assert fp16.exit_code == 1
    rows = [a for a in json.loads(fp16.stdout)["agreement"] if not a["passed"]]
    assert rows and "NaN/Inf" in rows[0]["note"]
    fp32 = invoke(*args, "--precision", "fp32")
    assert fp32.exit_code == 0, fp32.output


def test_failed_build_leaves_previous_artifacts_byte_identical(tmp_path):
    model = "tests.fixtures.models:explodes"
    good = invoke("build", model, "--input", "x:2x4:float32:1..3", "--targets", "coreml", "--precision", "fp32",
                  "--out", str(tmp_path))
    assert good.exit_code == 0, good.output
    before = tree_digest(tmp_path)
    bad = invoke("build", model, "--input", "x:2x4:float32:1..3", "--targets", "coreml", "--precision", "fp16",
                 "--out", str(tmp_path))
    assert bad.exit_code == 1
    after = tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if ".failed." not in k} == before
    assert any(".failed.report.json" in k for k in after)
    assert not any(p.name.startswith(".interop-tmp-") for p in tmp_path.iterdir())


def test_verify_catches_corrupted_artifacts(built_lstm, tmp_path):
    import shutil

    out, _ = built_lstm
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    report = json.loads((copy / "lstm_sum.report.json").read_text())
    for entry in report["targets"].values():
        entry["path"] = str(copy / Path(entry["path"]).name)
    (copy / "lstm_sum.report.json").write_text(json.dumps(report))
    ok = invoke("verify", str(copy / "lstm_sum.report.json"), "--json")
    assert ok.exit_code == 0, ok.output
    corrupt_weight_data(copy / "lstm_sum.mlpackage")
    bad = invoke("verify", str(copy / "lstm_sum.report.json"), "--json")
    assert bad.exit_code == 1
    failed = [a for a in json.loads(bad.stdout)["agreement"] if not a["passed"]]
    assert failed and all(a["target"] == "coreml" for a in failed)
    assert all(a["passed"] for a in json.loads(bad.stdout)["agreement"] if a["target"] == "onnx")


def corrupt_weight_data(package: Path) -> None:
    """Scale every weight blob's values on disk (blob headers intact, so the package still loads)."""
    import struct

    import numpy as np

    path = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    blob = bytearray(path.read_bytes())
    pos = 64
    while pos + 64 <= len(blob):
        sentinel, dtype, size, offset = struct.unpack_from("<IIQQ", blob, pos)
        if sentinel != 0xDEADBEEF:
            break
        if dtype == 1:  # fp16
            values = np.frombuffer(bytes(blob[offset:offset + size]), np.float16) * np.float16(1.5)
        else:  # fp32
            values = np.frombuffer(bytes(blob[offset:offset + size]), np.float32) * np.float32(1.5)
        blob[offset:offset + size] = values.tobytes()
        pos = offset + size + (-(offset + size)) % 64
    path.write_bytes(bytes(blob))


def test_verify_fails_on_a_damaged_package(built_lstm, tmp_path):
    import shutil

    out, _ = built_lstm
    shutil.copytree(out, tmp_path / "copy")
    report = json.loads((tmp_path / "copy" / "lstm_sum.report.json").read_text())
    report["targets"]["coreml"]["path"] = str(tmp_path / "copy" / "lstm_sum.mlpackage")
    report["targets"]["onnx"]["path"] = str(tmp_path / "copy" / "lstm_sum.onnx")
    (tmp_path / "r.json").write_text(json.dumps(report))
    weights = tmp_path / "copy" / "lstm_sum.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    bad = invoke("verify", str(tmp_path / "r.json"), "--json")
    assert bad.exit_code == 1
    data = json.loads(bad.stdout)
    assert data["targets"]["coreml"]["not_executed"] and not data["passed"]


def test_doctor_lists_versions_and_runtimes():
    result = invoke("doctor", "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["versions"]["torch"] and info["runtimes"]["onnxruntime"] is True
    assert info["runtimes"]["interop-mil (Core ML reference runtime)"] is True


def test_large_model_gets_external_data_next_to_the_onnx(tmp_path, monkeypatch):
    """Models over 2 GB are saved with external data; the threshold is lowered to exercise it."""
    import onnxruntime as ort

    from interop import BuildConfig, build
    from interop.targets.onnx import target as onnx_target

    monkeypatch.setattr(onnx_target, "EXTERNAL_DATA_BYTES", 100)
    report = build(BuildConfig(model="tests.fixtures.models:three_layers", inputs=["x:2x6"], targets=["onnx"],
                               out=str(tmp_path)))
    assert report.passed and report.data["targets"]["onnx"]["external_data"] is True
    assert (tmp_path / "three_layers.onnx.data").stat().st_size > 0
    ort.InferenceSession(str(tmp_path / "three_layers.onnx"))  # finds its data under the final name
