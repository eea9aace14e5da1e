"""The Core AI target (``--targets ...,coreai``): zoo models build a ``.aimodel`` that coreai-core's
bundled runtime, reading it back from disk, agrees with PyTorch on at every case (or the exact
error is reported); inspect, bench and verify handle ``.aimodel``; a corrupted weight blob is
caught by ``interop verify``; a missing wheel is exit 2 at build and "not executed" at verify."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from interop.cli import app
from interop.runtimes import coreai as runtime
from tests import zoo

pytestmark = pytest.mark.skipif(runtime.unavailable() is not None, reason=f"coreai: {runtime.unavailable()}")

# Zoo models coreai-torch cannot take, with the reason the report gives (torch.export specialises
# the time axis of nn.LSTM / nn.GRU: their loop is unrolled, so a dynamic sequence cannot export).
EXPECTED_ERROR = {"lstm": "specialized it to be a constant", "gru": "specialized it to be a constant",
                  "swin": "Could not guard on data-dependent expression"}
FAST = {"lstm"}  # cnn: the cnn_all fixture; lstm_sum: the TorchScript sample test; bert (int64) is slow
runner = CliRunner()


@pytest.fixture(scope="session")
def cnn_all(tmp_path_factory):
    """The zoo's CNN built to all three targets once; returns (folder, report dict)."""
    from interop import build

    out = tmp_path_factory.mktemp("coreai_cnn")
    report = build(zoo.ZOO["cnn"].config(out=str(out), targets=["onnx", "coreml", "coreai"])).data
    return out, report


def coreai_only_copy(cnn_all, tmp_path) -> tuple[Path, Path]:
    """A copy of the CNN build whose report lists only its .aimodel: (report path, .aimodel)."""
    folder, report = cnn_all
    aimodel = tmp_path / "cnn_model.aimodel"
    shutil.copytree(folder / "cnn_model.aimodel", aimodel)
    data = json.loads((folder / "cnn_model.report.json").read_text())
    data["targets"] = {"coreai": {**data["targets"]["coreai"], "path": str(aimodel)}}
    path = tmp_path / "cnn_model.report.json"
    path.write_text(json.dumps(data))
    return path, aimodel


def test_cnn_builds_all_three_artifacts_verified(cnn_all):
    folder, report = cnn_all
    assert report["passed"] is True
    for suffix in (".onnx", ".mlpackage", ".aimodel"):
        assert (folder / f"cnn_model{suffix}").exists()
    entry = report["targets"]["coreai"]
    assert entry["status"] == "ok" and entry["shipped"] and entry["executed_by"] == ["coreai-runtime"]
    assert entry["versions"] == runtime.versions() and entry["versions"]["coreai-torch"]
    assert any("fp16 copy" in n for n in entry["notes"]) and any("'?'" in n for n in entry["notes"])
    rows = [a for a in report["agreement"] if a["target"] == "coreai"]
    assert {a["runtime"] for a in rows} == {"coreai-runtime"}
    assert {a["case"] for a in rows} == {c["name"] for c in report["cases"]}  # every shape case, 4 here
    assert all(a["passed"] for a in rows) and all(a["tolerance"]["rel_l2"] == 1e-2 for a in rows)


def test_metadata_carries_spec_and_ranges(cnn_all):
    from interop import targets

    folder, report = cnn_all
    meta = targets.get("coreai").metadata(folder / "cnn_model.aimodel")
    assert json.loads(meta["interop.spec"])["inputs"] == report["inputs"]
    ranges = json.loads(meta["interop.dynamic_ranges"])
    assert ranges["image"]["0"] == {"name": "batch", "min": 1, "max": 16}
    assert meta["interop.source"] == "tests.zoo:cnn_model"


def test_inspect_aimodel(cnn_all):
    folder, _ = cnn_all
    result = runner.invoke(app, ["inspect", str(folder / "cnn_model.aimodel"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == "aimodel" and info["functions"] == ["main"]
    assert info["inputs"] == [{"name": "image", "type": "float32", "shape": ["?", 3, "?", "?"]}]
    assert info["outputs"] == [{"name": "output", "type": "float32", "shape": ["?", 10]}]
    assert info["operations"]["conv2d"] == 4 and "Float16" in info["storage_types"]  # the fp16 copy's weights
    assert "interop.spec" in info["metadata"]


def test_bench_times_the_bundled_runtime(cnn_all):
    from interop.commands.bench import bench

    folder, _ = cnn_all
    result = bench(str(folder / "cnn_model.aimodel"), warmup=1, runs=3, slow_runs=1, compare_unsimplified=False)
    timed = result["coreai"]["coreai-runtime"]
    assert timed["runs"] == 3 and timed["p50_ms"] > 0


def test_verify_passes_on_the_untouched_aimodel(cnn_all, tmp_path):
    from interop.commands.verify import verify_report

    report_path, _ = coreai_only_copy(cnn_all, tmp_path)
    report = verify_report(str(report_path), trust=True)  # a MODULE:FN source: verify needs --trust
    assert report.passed, report.data["targets"]
    assert report.data["targets"]["coreai"]["executed_by"] == ["coreai-runtime"]


def _corrupt_weight(aimodel: Path, rehash: bool) -> None:
    """Triple the second conv's weights (fp16, stored as one contiguous blob) in main.mlirb;
    with ``rehash``, also rewrite main.hash so that only the numerics can tell."""
    weight = zoo.ZOO["cnn"].module().down[1].weight.detach().numpy().astype(np.float16)
    program = aimodel / "main.mlirb"
    blob = program.read_bytes()
    at = blob.find(weight.tobytes())
    assert at > 0, "the weight blob is where coreai-core stored it"
    altered = blob[:at] + (weight * 3).tobytes() + blob[at + weight.nbytes:]
    program.write_bytes(altered)
    if rehash:
        (aimodel / "main.hash").write_bytes(hashlib.sha256(altered).digest())


def test_verify_catches_an_altered_weight_blob(cnn_all, tmp_path):
    """The bytes of a weight changed and main.hash rewritten to match: the runtime runs it and
    interop's agreement check catches the numerics (the CLI exits 1)."""
    report_path, aimodel = coreai_only_copy(cnn_all, tmp_path)
    _corrupt_weight(aimodel, rehash=True)
    result = runner.invoke(app, ["verify", str(report_path), "--json", "--trust"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is False and data["targets"]["coreai"]["status"] == "disagrees"
    assert not all(a["passed"] for a in data["agreement"] if a["target"] == "coreai")


def test_verify_catches_a_program_altered_since_it_was_saved(cnn_all, tmp_path):
    """The same alteration without rewriting main.hash: refused before running, never a pass."""
    from interop.commands.verify import verify_report

    report_path, aimodel = coreai_only_copy(cnn_all, tmp_path)
    _corrupt_weight(aimodel, rehash=False)
    report = verify_report(str(report_path), trust=True)  # a MODULE:FN source: verify needs --trust
    entry = report.data["targets"]["coreai"]
    assert not report.passed and entry["status"] == "not-executed"
    assert "altered after it was saved" in entry["not_executed"][0]["why"]


def test_missing_wheel_is_exit_2_with_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "unavailable", lambda convert=True, modules=(): "coreai-torch is not installed")
    result = runner.invoke(app, ["build", "tests.zoo:cnn_model", "--targets", "onnx,coreai", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "pip install interop[coreai]" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # nothing written


def test_missing_runtime_is_not_executed_never_passed(monkeypatch, cnn_all):
    """Where the runtime cannot run, execute yields a problem (verify and the build report it as
    not executed) instead of outputs."""
    from interop import targets

    folder, _ = cnn_all
    monkeypatch.setattr(runtime, "unavailable", lambda convert=True, modules=(): "coreai-core is not installed")
    runs = list(targets.get("coreai").execute(folder / "cnn_model.aimodel", None, None, ["output"]))
    assert runs == [("coreai-runtime", None, f"coreai-core is not installed ({runtime.INSTALL_HINT})")]


def test_shapes_outside_the_declared_range_are_refused():
    """The runtime runs any size on a '?' dim; interop checks the metadata's ranges itself."""
    from interop.errors import ExportError
    from interop.targets.coreai.target import check_shapes

    class Session:
        inputs = {"x": ("float32", [None, 3])}
        outputs = {"y": ("float32", [None, 2])}

    ranges = {"x": {"0": {"name": "batch", "min": 1, "max": 8}}}
    check_shapes(Session, ranges, {"x": np.zeros((8, 3))}, {"y": np.zeros((8, 2))})
    with pytest.raises(ExportError, match="outside the declared range batch 1..8"):
        check_shapes(Session, ranges, {"x": np.zeros((9, 3))}, {"y": np.zeros((9, 2))})
    with pytest.raises(ExportError, match="declared \\[\\?, 2\\]"):
        check_shapes(Session, ranges, {"x": np.zeros((2, 3))}, {"y": np.zeros((2, 5))})


def test_declared_type_text():
    assert runtime.declared("NDArray (Float32, ? × 3 × 16 × 16)") == ("float32", [None, 3, 16, 16])
    assert runtime.declared("NDArray (Int32, 2 × 5)") == ("int32", [2, 5])
    assert runtime.declared("Image (BGRA8, 32 × 32)") == ("Image (BGRA8, 32 × 32)", None)


def test_doctor_reports_coreai():
    from interop.commands.doctor import diagnose

    info = diagnose()
    assert info["versions"]["coreai-torch"] == runtime.versions()["coreai-torch"]
    assert info["runtimes"]["coreai-runtime (coreai-core, .aimodel)"] is True


def test_not_in_the_default_targets():
    from interop import targets

    assert "coreai" not in targets.default_names() and targets.get("coreai").suffix == ".aimodel"


def test_fp32_image_classifier_builds_the_tensor_form(tmp_path):
    """--precision fp32, --image and --labels: Core AI has no image type or classifier outputs
    here, so the tensor form is built and the notes say so; fp32 agreement at fp32 tolerances."""
    from interop import build

    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class{i}" for i in range(10)))
    data = build(zoo.ZOO["cnn"].config(out=str(tmp_path / "out"), targets=["coreai"], precision="fp32",
                                       image="image", labels=str(labels))).data
    entry = data["targets"]["coreai"]
    assert data["passed"] and entry["precision"] == "fp32", entry
    assert any("image input 'image': tensor form" in n for n in entry["notes"])
    assert any("no classifier outputs" in n for n in entry["notes"])
    rows = [a for a in data["agreement"] if a["target"] == "coreai"]
    assert rows and all(a["tolerance"]["rel_l2"] == 1e-4 and a["rel_l2"] < 1e-5 for a in rows)
    assert {a["output"] for a in rows} == {"classLabelProbs"}


def _zoo_param(name: str):
    return pytest.param(name, marks=[] if name in FAST else [pytest.mark.slow], id=name)


@pytest.mark.parametrize("name", [_zoo_param(n) for n in zoo.ZOO if n != "cnn"])
def test_zoo_model_builds_a_verified_aimodel(name, tmp_path):
    from interop import build

    data = build(zoo.ZOO[name].config(out=str(tmp_path), targets=["coreai"])).data
    entry = data["targets"]["coreai"]
    if name in EXPECTED_ERROR:
        assert entry["status"] == "failed" and EXPECTED_ERROR[name] in entry["error"], entry
        return
    assert entry["status"] == "ok", entry
    assert (tmp_path / f"{name}_model.aimodel").is_dir()
    rows = [a for a in data["agreement"] if a["target"] == "coreai"]
    assert {a["case"] for a in rows} == {c["name"] for c in data["cases"]} and all(a["passed"] for a in rows)
    int64 = [i["name"] for i in data["inputs"] if i["dtype"] == "int64"]
    assert all(any(f"int64 input {n!r} is int32" in note for note in entry["notes"]) for n in int64)


def test_torchscript_sample_goes_through_torchs_converter(tmp_path):
    """A TorchScript source (the committed samples are) cannot be torch.export-ed itself; torch's
    TS2EPConverter turns it into a program that is exported again with the spec's dynamic dims."""
    from tests.conftest import SAMPLES

    result = runner.invoke(app, ["build", str(SAMPLES / "lstm_sum.pt"), "--targets", "coreai", "--out", str(tmp_path),
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    entry = data["targets"]["coreai"]
    assert entry["capture"] == "TorchScript -> TS2EPConverter -> torch.export" and entry["status"] == "ok"
    assert {a["case"] for a in data["agreement"]} == {"example", "batch=3"}  # the dynamic batch, two sizes
    info = runner.invoke(app, ["inspect", str(tmp_path / "lstm_sum.aimodel"), "--json"])
    assert json.loads(info.stdout)["inputs"][0]["shape"][0] == "?"


@pytest.mark.slow
def test_torchscript_inside_the_image_classifier_wrapper(tmp_path):
    """--image and --labels wrap a TorchScript model in interop's preprocessing module: its inner
    TorchScript model is converted, the wrapper (normalisation, softmax) exported around it."""
    from interop import BuildConfig, build
    from tests.conftest import SAMPLES

    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(10)))
    data = build(BuildConfig(model=str(SAMPLES / "small_cnn.pt"), targets=["coreai"], image="image",
                             labels=str(labels), out=str(tmp_path / "out"))).data
    entry = data["targets"]["coreai"]
    assert data["passed"] and entry["capture"] == "TorchScript -> TS2EPConverter -> torch.export", entry
    assert {a["output"] for a in data["agreement"]} == {"classLabelProbs"}


def test_recorded_ranges_must_match_the_spec(cnn_all, tmp_path):
    """The metadata's ranges are what the '?' dims are checked against: an .aimodel whose
    recorded ranges differ from the report's spec (edited, or built for another spec) is refused."""
    from interop.commands.verify import verify_report

    report_path, aimodel = coreai_only_copy(cnn_all, tmp_path)
    meta = json.loads((aimodel / "metadata.json").read_text())
    ranges = json.loads(meta["creatorDefinedMetadata"]["interop.dynamic_ranges"])
    ranges["image"]["0"]["max"] = 4
    meta["creatorDefinedMetadata"]["interop.dynamic_ranges"] = json.dumps(ranges)
    (aimodel / "metadata.json").write_text(json.dumps(meta))
    report = verify_report(str(report_path), trust=True)  # a MODULE:FN source: verify needs --trust
    entry = report.data["targets"]["coreai"]
    assert not report.passed and "records dynamic ranges" in entry["not_executed"][0]["why"]
