"""`interop bench`: what it reports is right (runs counted, percentiles, which model is which,
why a comparison is missing) -- no assertions on how fast anything is."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interop.commands import bench as benchmark
from interop.commands.bench import measure, percentile
from interop.cli import app

runner = CliRunner()
SPEC = {"inputs": [{"name": "x", "shape": [2, 3], "dtype": "float32", "dynamic": {"0": {"name": "batch", "min": 1,
                                                                                        "max": 8}}}],
        "outputs": ["y"]}


def tiny_onnx(path: Path, nodes: int = 1) -> Path:
    """y = x + 1 (+ 0 ...): an interop-like .onnx with its input spec in the metadata."""
    import onnx
    from onnx import TensorProto, helper

    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    chain = [helper.make_node("Add", ["x", "one"], ["t0"])]
    chain += [helper.make_node("Add", [f"t{i}", "zero"], [f"t{i + 1}"]) for i in range(nodes - 1)]
    chain.append(helper.make_node("Identity", [f"t{nodes - 1}"], ["y"]))
    graph = helper.make_graph(chain, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [one, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    prop = model.metadata_props.add()
    prop.key, prop.value = "interop.spec", json.dumps(SPEC)
    onnx.save(model, str(path))
    return path


def tiny_report(folder: Path, onnx_path: Path, simplified: bool, source: str = "missing/model.pt") -> Path:
    report = {"interop_version": "0.1.0", "passed": True, "model": {"source": source, "format": "torchscript"},
              "inputs": SPEC["inputs"],
              "targets": {"onnx": {"status": "ok", "path": str(onnx_path), "exporter": "torchscript", "opset": 17,
                                   "nodes_before": 2, "nodes_after": 2, "simplified": simplified},
                          "coreml": {"status": "skipped"}},
              "settings": {"seed": 0, "num_samples": 2, "output_names": ["y"]}}
    path = folder / "tiny.report.json"
    path.write_text(json.dumps(report))
    return path


# --- timing arithmetic ---------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy():
    import numpy as np

    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for q in (0, 10, 50, 90, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_measure_times_only_the_runs_after_warmup():
    calls = []
    ticks = iter(range(0, 1000, 1))

    def clock():  # every call advances 1 s; each timed run reads the clock twice -> 1000 ms each
        return float(next(ticks))

    lat = measure(lambda: calls.append(1), warmup=3, runs=7, clock=clock)
    assert len(calls) == 10
    assert (lat.warmup, lat.runs) == (3, 7)
    assert lat.p50_ms == lat.p90_ms == lat.mean_ms == lat.min_ms == pytest.approx(1000.0)


def test_measure_reports_p50_and_p90_of_the_timed_runs():
    durations = iter([0.001 * d for d in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)])
    now = [0.0]

    def clock():
        return now[0]

    def run():
        now[0] += next(durations)

    lat = measure(run, warmup=0, runs=10, clock=clock)
    assert lat.p50_ms == pytest.approx(5.5)
    assert lat.p90_ms == pytest.approx(9.1)
    assert lat.min_ms == pytest.approx(1.0) and lat.mean_ms == pytest.approx(5.5)


def test_measure_rejects_zero_runs():
    with pytest.raises(ValueError):
        measure(lambda: None, warmup=0, runs=0)


# --- which models are compared -------------------------------------------------------------------


def test_onnx_without_report_is_timed_and_says_why_nothing_is_compared(tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    result = benchmark.bench(str(path), warmup=1, runs=4)
    built = result["onnx"]["built"]
    assert built["nodes"] == 2 and built["runs"] == 4 and built["warmup"] == 1
    assert built["p50_ms"] <= built["p90_ms"]
    assert result["input"] == {"x": [2, 3]}  # the example shape from the artifact's interop.spec
    assert result["onnx"]["unsimplified"]["note"].startswith("not available: no report")
    assert "speedup_p50" not in result["onnx"] and "coreml" not in result and "pytorch" not in result


def test_build_that_kept_the_unsimplified_model_compares_it_with_itself(tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    report = tiny_report(tmp_path, path, simplified=False)
    result = benchmark.bench(str(report), warmup=0, runs=3)
    un = result["onnx"]["unsimplified"]
    assert "same model" in un["note"]
    assert un["nodes"] == result["onnx"]["built"]["nodes"] and result["onnx"]["speedup_p50"] == 1.0


def test_failed_reexport_is_reported_not_raised(tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    tiny_report(tmp_path, path, simplified=True, source=str(tmp_path / "gone.pt"))
    result = benchmark.bench(str(path), warmup=0, runs=2)  # the report is found beside the .onnx
    assert result["report"].endswith("tiny.report.json")
    assert result["onnx"]["unsimplified"]["note"].startswith("not available: re-exporting the source failed")
    assert "speedup_p50" not in result["onnx"]


def test_no_unsimplified_flag_skips_the_reexport(tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    tiny_report(tmp_path, path, simplified=True)
    result = benchmark.bench(str(path), warmup=0, runs=2, compare_unsimplified=False)
    assert result["onnx"]["unsimplified"] == {"note": "not requested"}


def test_sample_is_the_builds_first_example_sample():
    import zlib

    from interop.stages.spec import Case, InputSpec, make_sample

    spec = InputSpec.from_json(SPEC)
    got = benchmark.example_sample(spec, seed=7)
    want = make_sample(spec, Case("example"), 7 + zlib.crc32(b"example") % 997)
    assert (got["x"] == want["x"]).all()


def test_built_sample_is_compared_with_its_reexported_export(built_lstm):
    out, report = built_lstm
    result = benchmark.bench(str(out / "lstm_sum.report.json"), warmup=1, runs=3, slow_runs=2)
    onnx = report.data["targets"]["onnx"]
    built, un = result["onnx"]["built"], result["onnx"]["unsimplified"]
    assert built["nodes"] == onnx["nodes_after"]
    assert un["nodes"] == onnx["nodes_before"] and "WARNING" not in un["note"]
    assert un["note"].startswith(f"re-exported from {report.data['model']['source']} with {onnx['exporter']}")
    assert result["onnx"]["speedup_p50"] == pytest.approx(un["p50_ms"] / built["p50_ms"], rel=1e-2)
    mil = result["coreml"]["interop-mil"]
    assert mil["runs"] == 2
    if platform.system() != "Darwin":
        assert "macOS only" in result["coreml"]["coreml"]["skipped"]
    assert result["pytorch"]["runs"] == 3


# --- the command ---------------------------------------------------------------------------------


def test_cli_json_is_exactly_json(tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    result = runner.invoke(app, ["bench", str(path), "--runs", "2", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["onnx"]["built"]["runs"] == 2


def test_cli_table_names_the_runtimes(tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    result = runner.invoke(app, ["bench", str(path), "--runs", "2"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.stdout and "no report" in result.stdout


@pytest.mark.parametrize("name", ["missing.onnx", "notes.txt"])
def test_cli_bad_artifact_is_one_line_and_exit_2(tmp_path, name):
    target = tmp_path / name
    if name.endswith(".txt"):
        target.write_text("hello")
    result = runner.invoke(app, ["bench", str(target)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_rejects_zero_runs(tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    result = runner.invoke(app, ["bench", str(path), "--runs", "0"])
    assert result.exit_code == 2
