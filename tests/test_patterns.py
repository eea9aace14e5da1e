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


# --- shapes real networks need ------------------------------------------------------------------


def test_step_in_dynamic_axes_parses_validates_and_steers_every_size():
    from interop.errors import SpecError
    from interop.stages.spec import InputSpec, apply_dynamic, cases, parse_dynamic, parse_input

    name, dyn = parse_dynamic("image:2=height:64..640/32")
    assert (name, dyn.min, dyn.max, dyn.step) == ("image", 64, 640, 32) and dyn.to_json()["step"] == 32
    for bad in ("image:2=height:64..640/0", "image:2=height:64..640/x", "image:2=height:60..640/32"):
        with pytest.raises(SpecError):
            parse_dynamic(bad)
    spec = InputSpec([parse_input("image:1x3x96x96")])
    with pytest.raises(SpecError, match="not a multiple of 64"):
        apply_dynamic(spec, *parse_dynamic("image:2=height:64..640/64"))
    apply_dynamic(spec, *parse_dynamic("image:2=height:64..640/32"))
    apply_dynamic(spec, *parse_dynamic("image:3=width:32..96/32"))
    sizes = [s for c in cases(spec) for _, s in c.sizes]
    assert sizes and all(s % 32 == 0 for s in sizes), sizes


def test_unet_fails_at_odd_sizes_interop_tries_aligned_ones_and_says_so(tmp_path):
    result, report = build_json(tmp_path, "tests.patterns:stride_unet", "--input", "image:1x3x32x32",
                                "--dynamic", "image:2=height:16..128", "--dynamic", "image:3=width:16..128/16",
                                "--targets", "onnx")
    assert result.exit_code == 0, result.output
    height = next(c for c in report["cases"] if "height" in c["sizes"])
    assert height["tried"][0] == 65 and height["sizes"]["height"] % 8 == 0  # the odd size failed, an aligned one ran
    width = next(c for c in report["cases"] if "width" in c["sizes"])
    assert "tried" not in width and width["sizes"]["width"] % 16 == 0
    assert report["inputs"][0]["dynamic"]["3"]["step"] == 16
    assert any("the model fails at height = 65" in w for w in report["warnings"])


def test_unet_that_fails_at_every_size_is_blamed_on_the_spec_with_the_sizes_tried(tmp_path):
    result = invoke("build", "tests.patterns:stride_unet", "--input", "image:1x3x32x32",
                    "--dynamic", "image:2=height:30..36", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "the model fails at height = 65" not in result.stderr  # 65 is outside 30..36
    assert "fails at height = 33, 34" in result.stderr and "narrow the range of height" in result.stderr


def test_detector_with_grid_decode_builds_both_and_keeps_namedtuple_field_names(tmp_path):
    result, report = build_json(tmp_path, "tests.patterns:grid_detector", "--input", "image:1x3x64x64",
                                "--dynamic", "image:2=height:32..256/8", "--dynamic", "image:3=width:32..256/8")
    assert result.exit_code == 0, result.output
    assert [o["name"] for o in report["outputs"]] == ["boxes", "scores"]
    assert all(s % 8 == 0 for c in report["cases"] for s in c["sizes"].values())
    assert (tmp_path / "grid_detector.onnx").exists() and (tmp_path / "grid_detector.mlpackage").exists()


def test_output_named_like_an_input_is_renamed_with_a_note(tmp_path):
    result, report = build_json(tmp_path, "tests.patterns:denoiser", "--input", "sample:1x4x8x8", "--targets", "onnx")
    assert result.exit_code == 0, result.output
    assert [o["name"] for o in report["outputs"]] == ["sample_out"]
    assert any("'sample' has the name of an input" in w for w in report["warnings"])
    clash = invoke("build", "tests.patterns:denoiser", "--input", "sample:1x4x8x8", "--output-name", "sample",
                   "--out", str(tmp_path))
    assert clash.exit_code == 2  # a name the user chose is not silently changed


# --- --json: one JSON object on stdout on every exit ------------------------------------------


@pytest.mark.parametrize("args,kind,code", [
    (["tests.patterns:stride_unet", "--input", "image:1x3xQ"], "spec", 2),
    (["tests.fixtures.models:data_dependent_if", "--input", "x:2x4"], "export", 1),  # a trace hazard
    (["tests.fixtures.models:raises"], "load", 2),
])
def test_json_prints_one_object_on_every_exit(tmp_path, args, kind, code):
    result = invoke("build", *args, "--out", str(tmp_path), "--json")
    assert result.exit_code == code, result.output
    data = json.loads(result.stdout)  # exactly one object, nothing else on stdout
    assert data["passed"] is False and data["error"]["kind"] == kind
    assert data["error"]["message"] and "hint" in data["error"]


def test_json_internal_error_is_one_object(tmp_path, monkeypatch):
    import interop.stages.pipeline as pipeline

    def broken(config):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(pipeline, "build", broken)
    result = invoke("build", "tests.patterns:denoiser", "--json")
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert {k: error[k] for k in ("kind", "hint")} == {"kind": "internal", "hint": "rerun with --debug and report it"}
    # the cause's first line, then where in code outside installed packages and interop it was raised
    assert error["message"].startswith("ZeroDivisionError: boom (at ") and "test_patterns.py:" in error["message"]


# --- flexible Core ML shapes coremltools cannot express ----------------------------------------


def test_core_ml_falls_back_to_fixed_shapes_and_records_them_onnx_stays_dynamic(tmp_path):
    result, report = build_json(tmp_path, "tests.patterns:size_upsample", "--input", "image:1x3x32x32",
                                "--dynamic", "image:2=height:16..64/16")
    assert result.exit_code == 0, result.output
    coreml = report["targets"]["coreml"]
    assert coreml["shapes"] == {"mode": "fixed", "inputs": {"image": [1, 3, 32, 32]}}
    assert [r["path"] for r in coreml["rejected"]][-1].endswith("enumerated shapes")  # range, then enumerated, tried
    assert any(w.startswith("FALLBACK") and "fixed" in w for w in report["warnings"])
    assert {a["case"] for a in report["agreement"] if a["target"] == "coreml"} == {"example"}
    assert {a["case"] for a in report["agreement"] if a["target"] == "onnx"} == {"example", "height=64"}
    info = json.loads(invoke("inspect", str(tmp_path / "size_upsample.onnx"), "--json").stdout)
    assert info["inputs"][0]["shape"][2] == "height"


@pytest.mark.slow
@pytest.mark.parametrize("model,args", [
    ("diffusers_unet", ["--input", "sample:2x3x16x16", "--dynamic", "sample:0=batch:1..4"]),
    ("wav2vec2", ["--input", "audio:2x1600", "--dynamic", "audio:0=batch:1..4", "--dynamic", "audio:1=samples:800..3200"]),
])
def test_group_norm_models_convert_with_a_flexible_batch(tmp_path, model, args):
    pytest.importorskip("diffusers" if model.startswith("diffusers") else "transformers")
    result, report = build_json(tmp_path, f"tests.patterns:{model}", *args)
    assert result.exit_code == 0, result.output
    assert report["targets"]["coreml"]["shapes"]["mode"] == "range"
    assert {a["case"] for a in report["agreement"] if a["target"] == "coreml"} >= {"example", "batch=3"}


def test_group_norm_with_a_flexible_batch_keeps_range_shapes(tmp_path):
    result, report = build_json(tmp_path, "tests.patterns:group_norm", "--input", "x:2x3x8x8",
                                "--dynamic", "x:0=batch:1..4", "--targets", "coreml")
    assert result.exit_code == 0, result.output
    assert report["targets"]["coreml"]["shapes"] == {"mode": "range", "inputs": {"x": ["1..4", 3, 8, 8]}}
    assert report["targets"]["coreml"]["rejected"] == []


# --- when PyTorch disagrees with itself ---------------------------------------------------------


def test_transformer_fast_path_is_reported_as_a_capture_difference_with_where(tmp_path):
    import numpy as np

    samples = tmp_path / "masks.npz"
    rng = np.random.default_rng(0)
    padding = np.array([[[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]], [[0, 0, 0, 0, 0, 1], [0, 0, 1, 1, 1, 1]]], dtype=bool)
    np.savez(samples, tokens=rng.standard_normal((2, 2, 6, 16)).astype(np.float32), padding=padding)
    result = invoke("build", "tests.patterns:padded_encoder", "--input", "tokens:2x6x16", "--input", "padding:2x6:bool",
                    "--samples", str(samples), "--out", str(tmp_path / "out"), "--json")
    assert result.exit_code == 1
    # Where the trace is made with one of the user's samples (stages/prepare._export_args), the
    # trace itself follows the fast path and the difference shows in the captured graphs a target
    # converts (the target's error); with a drawn sample, the trace check stops the build first.
    # Either way the cause and the first padded position are named, on one line.
    text = result.stderr.strip() + json.dumps(json.loads(result.stdout).get("targets", {}))
    assert "differs from eager PyTorch" in text
    assert "e.g. at (0, 4," in text  # the first padded position of the first sequence
    assert "nested tensors" not in result.stderr  # torch's own warning stays off the console


# --- sources and names ----------------------------------------------------------------------------


def test_trusted_pickle_whose_class_lives_beside_the_model_loads(tmp_path):
    import subprocess
    import sys

    project = tmp_path / "project"
    project.mkdir()
    (project / "mynet_defs.py").write_text(
        "import torch\nclass MyNet(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 2)\n    def forward(self, x):\n        return self.fc(x)\n")
    save = "import torch, mynet_defs; torch.manual_seed(0); torch.save(mynet_defs.MyNet().eval(), 'mynet.pt')"
    subprocess.run([sys.executable, "-c", save], cwd=project, check=True)
    assert "mynet_defs" not in sys.modules
    result, report = build_json(tmp_path / "out", str(project / "mynet.pt"), "--trust", "--input", "x:2x4",
                                "--targets", "onnx")
    assert result.exit_code == 0, result.output
    assert report["model"]["format"] == "pickle"
    sys.modules.pop("mynet_defs", None)


def test_pt2_program_with_dict_outputs_builds_both_with_the_dict_keys(tmp_path):
    import torch

    from tests import zoo

    path = tmp_path / "multi.pt2"
    torch.export.save(torch.export.export(zoo.multi_io.module(), (torch.randn(2, 3, 16, 16), torch.randn(2, 5))), path)
    result, report = build_json(tmp_path, str(path))
    assert result.exit_code == 0, result.output
    assert report["model"]["format"] == "exported_program"
    assert [o["name"] for o in report["outputs"]] == ["scores", "embedding"]
    assert (tmp_path / "multi.onnx").exists() and (tmp_path / "multi.mlpackage").exists()


# --- interop check agrees with build ------------------------------------------------------------


def check_json(*args: str) -> dict:
    result = invoke("check", *args, "--json")
    return json.loads(result.stdout)


@pytest.mark.parametrize("model,inputs,blocked", [
    ("tests.patterns:custom_op", "x:2x8", ["coreml", "onnx"]),  # a torch.library custom op
    ("tests.patterns:quantized_mlp", "x:2x16", ["coreml", "onnx"]),  # quantized::linear_dynamic
    ("tests.patterns:bicubic", "x:1x3x8x8", ["coreml"]),  # ONNX has cubic Resize (opset 11 symbolic)
    ("tests.fixtures.models:explodes", "x:2x4:float32:1..3", ["coreml"]),  # overflows fp16
])
def test_check_predicts_which_targets_fail(model, inputs, blocked):
    data = check_json(model, "--input", inputs)
    assert data["would_fail"] is True and data["blocked_targets"] == blocked, data["ops"]


def test_check_names_the_fp16_overflow_op_and_where():
    data = check_json("tests.fixtures.models:explodes", "--input", "x:2x4:float32:1..3")
    assert data["fp16_overflow"]["op"] == "aten::mul" and data["fp16_overflow"]["max_abs"] > 65504


@pytest.mark.slow
def test_check_does_not_block_bert_on_dunder_and():
    data = check_json("tests.zoo:bert_model")
    assert data["would_fail"] is False, data["ops"]
    assert all(u.get("onnx") == "ok" for u in data["ops"] if u["op"] == "aten::__and__")


def test_scripted_module_coremltools_cannot_read_suggests_tracing(tmp_path):
    import torch

    path = tmp_path / "scripted.pt"
    from tests.patterns import ScriptedLoop

    torch.jit.save(torch.jit.script(ScriptedLoop().eval()), str(path))
    result, report = build_json(tmp_path, str(path), "--input", "x:3x4", "--targets", "coreml")
    assert result.exit_code == 1
    error = report["targets"]["coreml"]["error"]
    assert "scripted model" in error and "torch.jit.trace(model, example)" in error
    assert "--precision fp32" not in error


def test_quantized_model_fails_on_both_targets_with_reasons_and_no_warning_leaks(tmp_path):
    import subprocess
    import sys

    # a fresh process: pytest would swallow the warning torch prints while the factory quantizes
    proc = subprocess.run([sys.executable, "-m", "interop.cli", "build", "tests.patterns:quantized_mlp", "--input",
                           "x:2x16", "--out", str(tmp_path), "--json"], capture_output=True, text=True)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert "quantized::linear_dynamic" in report["targets"]["onnx"]["error"]
    assert "quantized::linear_dynamic" in report["targets"]["coreml"]["error"]
    assert "Warning" not in proc.stderr, proc.stderr  # torch's deprecation goes to the report
    assert not list(tmp_path.glob("*.onnx")) and (tmp_path / "quantized_mlp.failed.report.json").exists()


def test_compare_where_compares_only_the_positions_that_matter(tmp_path):
    """--compare-where output:!padding: the padded positions (where eager PyTorch's fast path gives
    zeros and the exported graph computes values) are left out of every comparison, and said so."""
    import numpy as np

    samples = tmp_path / "masks.npz"
    rng = np.random.default_rng(0)
    padding = np.array([[[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]], [[0, 0, 0, 0, 0, 1], [0, 0, 1, 1, 1, 1]]], dtype=bool)
    np.savez(samples, tokens=rng.standard_normal((2, 2, 6, 16)).astype(np.float32), padding=padding)
    args = ["build", "tests.patterns:padded_encoder", "--input", "tokens:2x6x16", "--input", "padding:2x6:bool",
            "--samples", str(samples), "--out", str(tmp_path / "out"), "--json", "--targets", "onnx"]
    whole = json.loads(invoke(*args).stdout)
    assert whole["targets"]["onnx"]["status"] != "ok"  # the padded positions differ
    limited = invoke(*args, "--compare-where", "output:!padding")
    report = json.loads(limited.stdout)
    assert limited.exit_code == 0 and report["targets"]["onnx"]["shipped"]
    assert all("compared only where padding == 0 (7 of 12 positions" in a["note"] for a in report["agreement"])
    assert any(w.startswith("compare-where (flag)") for w in report["warnings"])
    bad = invoke(*args, "--compare-where", "output:nomask")
    assert bad.exit_code == 2 and "no input 'nomask'" in bad.stderr


def test_compare_where_is_refused_from_the_model_folder(tmp_path):
    from interop.errors import SpecError
    from interop.settings import read_config_file

    (tmp_path / "interop.toml").write_text('compare_where = ["output:!padding"]\n')
    with pytest.raises(SpecError, match="compare_where"):
        read_config_file(None, tmp_path)
