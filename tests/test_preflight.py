"""`interop check` and trace hazards."""

import json

from typer.testing import CliRunner

from interop import BuildConfig, build
from interop.cli import app
from interop.errors import ExportError

runner = CliRunner()


def test_check_lists_patched_diff_with_both_targets():
    result = runner.invoke(app, ["check", "tests.fixtures.models:uses_diff", "--input", "x:2x5", "--json"])
    assert result.exit_code == 0, result.output
    ops = {u["op"]: u for u in json.loads(result.stdout)["ops"]}
    assert ops["aten::diff"]["coreml"] == "patched by interop"
    assert "dynamo" in ops["aten::diff"]["onnx"]
    assert ops["aten::diff"]["where"] == ["(top level forward)"]


def test_check_clean_sample_has_nothing_to_report():
    result = runner.invoke(app, ["check", "samples/lstm_sum.pt", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ops"] == [] and data["hazards"] == [] and data["would_fail"] is False


def test_check_names_custom_autograd_function():
    result = runner.invoke(app, ["check", "tests.fixtures.models:custom_autograd", "--input", "x:2x4", "--json"])
    ops = json.loads(result.stdout)["ops"]
    assert ops[0]["op"] == "prim::PythonOp(_Square)" and "torch.export" in ops[0]["coreml"]


def test_data_dependent_if_fails_the_build_with_the_source_line(tmp_path):
    try:
        build(BuildConfig(model="tests.fixtures.models:data_dependent_if", inputs=["x:2x3"], out=str(tmp_path)))
    except ExportError as exc:
        assert "models.py:" in str(exc) and "if x.sum() > 0" in str(exc) and "--allow-trace-warnings" in str(exc)
    else:
        raise AssertionError("a data-dependent branch must fail the build")
    assert not any(tmp_path.iterdir())


def test_allow_trace_warnings_builds_and_reports_the_hazard(tmp_path):
    report = build(BuildConfig(model="tests.fixtures.models:data_dependent_if", inputs=["x:2x3"], targets=["onnx"],
                               allow_trace_warnings=True, out=str(tmp_path)))
    assert any("trace hazard (allowed)" in w for w in report.data["warnings"])


def test_check_exit_code_reports_hazards():
    result = runner.invoke(app, ["check", "tests.fixtures.models:data_dependent_if", "--input", "x:2x3"])
    assert result.exit_code == 1 and "trace hazard" in result.stdout


def test_torch_library_trace_warnings_do_not_block(tmp_path):
    """nn.LSTM's own shape checks raise TracerWarnings inside torch; the trace still agrees with the
    model at every case, so they are reported, not fatal (else every LSTM would need the flag)."""
    result = runner.invoke(app, ["check", "samples.models:LSTMSum", "--input", "x:1x6x1:float32:0..10",
                                 "--dynamic", "x:0=batch:1..64", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["hazards"] == [] and any("rnn.py" in w for w in data["trace_warnings"])
    report = build(BuildConfig(model="samples.models:LSTMSum", inputs=["x:1x6x1:float32:0..10"],
                               dynamic=["x:0=batch:1..64"], targets=["onnx"], out=str(tmp_path)))
    assert report.passed and any("library code" in w for w in report.data["warnings"])
