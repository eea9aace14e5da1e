"""Settings resolved once (interop.settings): one test per row of the precedence table in
docs/settings.md, the model-folder file's limits, type checks, the report's ``settings_source``,
``check`` reading the settings as ``build`` does, and ``verify`` reloading a build's settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from interop.cli import app
from interop.errors import SpecError
from interop.settings import BuildConfig, from_report, resolve
from tests.conftest import SAMPLES

runner = CliRunner()


@pytest.fixture
def model(tmp_path) -> Path:
    """A model file in a folder of its own (resolve only looks at its folder, never loads it)."""
    path = tmp_path / "m" / "model.pt"
    path.parent.mkdir()
    path.write_bytes(b"not loaded")
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def one_line_exit_2(result, fragment: str) -> None:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
    assert "Traceback" not in result.output


# --- the precedence table, one row each ---------------------------------------------------------


def test_row_default(model):
    config = resolve(BuildConfig(model=str(model)))
    assert (config.precision, config.provenance["precision"]) == ("fp16", "default")


def test_row_model_folder_file_over_default(model):
    write(model.parent / "interop.toml", 'precision = "fp32"\n')
    config = resolve(BuildConfig(model=str(model)))
    assert (config.precision, config.provenance["precision"]) == ("fp32", "model-folder")


def test_row_config_file_over_model_folder_file(model, tmp_path):
    write(model.parent / "interop.toml", 'precision = "fp16"\nnum_samples = 3\n')
    chosen = write(tmp_path / "chosen.toml", 'precision = "fp32"\n')
    config = resolve(BuildConfig(model=str(model), config=str(chosen)))
    assert (config.precision, config.provenance["precision"]) == ("fp32", "config")
    assert (config.num_samples, config.provenance["num_samples"]) == (3, "model-folder")  # still read


def test_row_flag_over_model_folder_file_even_when_it_equals_the_default(model):
    write(model.parent / "interop.toml", 'precision = "fp32"\n')
    config = resolve(BuildConfig(model=str(model), precision="fp16"))  # --precision fp16
    assert (config.precision, config.provenance["precision"]) == ("fp16", "flag")


def test_row_flag_over_config_file(model, tmp_path):
    chosen = write(tmp_path / "chosen.toml", 'precision = "fp32"\n')
    write(model.parent / "interop.toml", 'precision = "fp32"\n')
    config = resolve(BuildConfig(model=str(model), config=str(chosen), precision="fp16"))
    assert (config.precision, config.provenance["precision"]) == ("fp16", "flag")


def test_row_api_assignment_is_a_flag(model):
    write(model.parent / "interop.toml", 'precision = "fp32"\n')
    config = BuildConfig(model=str(model))
    config.precision = "fp16"
    assert resolve(config).precision == "fp16"


def test_row_pyproject_tool_section_as_config(model, tmp_path):
    chosen = write(tmp_path / "pyproject.toml", '[tool.interop]\nnum-samples = 4\ntargets = "onnx"\n')
    config = resolve(BuildConfig(model=str(model), config=str(chosen)))
    assert (config.num_samples, config.targets, config.provenance["targets"]) == (4, ["onnx"], "config")


def test_row_paths_in_a_file_are_relative_to_that_file(model, tmp_path):
    write(model.parent / "interop.toml", 'labels = "labels.txt"\n')
    (tmp_path / "conf").mkdir()
    chosen = write(tmp_path / "conf" / "chosen.toml", 'samples = "data/s.npz"\n')
    config = resolve(BuildConfig(model=str(model), config=str(chosen)))
    assert config.labels == str(model.parent / "labels.txt")
    assert config.samples == str(tmp_path / "conf" / "data" / "s.npz")
    assert resolve(BuildConfig(model=str(model), labels="mine.txt")).labels == "mine.txt"  # a flag: as given


# --- what files may not do ------------------------------------------------------------------------


@pytest.mark.parametrize("line", ['tolerance = ["*:rel_l2=1"]', 'out = "/tmp/elsewhere"', "allow_trace_warnings = true",
                                  "keep_failed = true"])
def test_a_model_folder_file_may_not_loosen_verdicts_or_redirect_output(model, tmp_path, line):
    write(model.parent / "interop.toml", line + "\n")
    key = line.split(" ")[0]
    with pytest.raises(SpecError, match=f"beside the model sets {key}.*--{key.replace('_', '-')}"):
        resolve(BuildConfig(model=str(model)))
    chosen = write(tmp_path / "chosen.toml", line + "\n")  # the user's own --config file may
    (model.parent / "interop.toml").unlink()
    assert resolve(BuildConfig(model=str(model), config=str(chosen))).provenance[key] == "config"


@pytest.mark.parametrize("where", ["model-folder", "config"])
def test_trust_never_comes_from_a_file(model, tmp_path, where):
    path = model.parent / "interop.toml" if where == "model-folder" else tmp_path / "chosen.toml"
    write(path, "trust = true\n")
    with pytest.raises(SpecError, match="trust never comes from a file.*--trust"):
        resolve(BuildConfig(model=str(model), config=str(path) if where == "config" else None))


@pytest.mark.parametrize("line, fragment", [
    ('keep_failed = "false"', "keep_failed .* must be true or false"),
    ('num_samples = "many"', "num_samples .* must be a whole number"),
    ("num_samples = 2.5", "must be a whole number"),
    ("pixel_scale = true", "pixel_scale .* must be a number"),
    ("inputs = [1, 2]", "must be a list of strings"),
    ("precision = 16", "precision .* must be a string"),
    ('colour = "red"', "unknown setting"),
])
def test_file_values_are_type_checked(model, tmp_path, line, fragment):
    chosen = write(tmp_path / "chosen.toml", line + "\n")
    with pytest.raises(SpecError, match=fragment):
        resolve(BuildConfig(model=str(model), config=str(chosen)))


def test_a_bad_value_is_exit_2_one_line_on_build_and_check(sample_copy):
    model = sample_copy("lstm_sum.pt")
    write(model.parent / "interop.toml", 'num_samples = "many"\n')
    for command in ("build", "check"):
        one_line_exit_2(runner.invoke(app, [command, str(model)]), "must be a whole number")
    assert sorted(p.name for p in model.parent.iterdir()) == ["interop.toml", "lstm_sum.pt"]


# --- the report, check, the console ----------------------------------------------------------------


def test_flag_beats_model_folder_file_end_to_end(sample_copy):
    model = sample_copy("lstm_sum.pt")
    write(model.parent / "interop.toml", 'precision = "fp32"\nnum_samples = 1\n')
    result = runner.invoke(app, ["build", str(model), "--precision", "fp16", "--targets", "onnx", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["settings"]["precision"] == "fp16" and report["settings_source"]["precision"] == "flag"
    assert report["settings"]["num_samples"] == 1 and report["settings_source"]["num_samples"] == "model-folder"
    assert report["settings_source"]["opset"] == "default" and report["settings_source"]["targets"] == "flag"
    assert set(report["settings_source"]) == set(report["settings"])
    for key in ("seed", "num_samples", "precision", "tolerance", "samples", "factory", "trust", "output_names",
                "image", "mean", "std", "pixel_scale", "labels", "targets", "all_or_nothing"):  # the keys of old
        assert key in report["settings"]


def test_a_zero_flag_is_given_not_left_out(sample_copy):
    model = sample_copy("lstm_sum.pt")
    for command in ("build", "check"):
        one_line_exit_2(runner.invoke(app, [command, str(model), "--num-samples", "0"]), "--num-samples must be at least 1")


def test_check_and_build_take_the_same_options():
    import typer

    commands = typer.main.get_command(app).commands
    options = {name: {p.name for p in commands[name].params} for name in ("build", "check")}
    assert options["build"] == options["check"]
    assert {"image", "labels", "output_names", "targets", "mean", "std", "samples", "num_samples", "precision",
            "tolerance", "allow_trace_warnings", "config"} <= options["check"]


def test_check_reads_the_settings_as_build_does(sample_copy, tmp_path):
    model = sample_copy("lstm_sum.pt")
    chosen = write(tmp_path / "chosen.toml", 'targets = ["tflite"]\n')
    one_line_exit_2(runner.invoke(app, ["check", str(model), "--config", str(chosen)]), "unknown target")
    ok = runner.invoke(app, ["check", str(model), "--config", str(chosen), "--targets", "onnx", "--num-samples", "1",
                             "--output-name", "total", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["targets"] == ["onnx"]


def test_every_tolerance_override_is_a_warning_on_the_console_and_in_the_report(sample_copy):
    model = sample_copy("lstm_sum.pt")
    args = ["build", str(model), "--targets", "onnx", "--num-samples", "1", "--tolerance", "*:rel_l2=0.5"]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert "tolerance override (--tolerance): *:rel_l2=0.5" in " ".join(shown.stdout.split())
    report = json.loads((model.parent / "lstm_sum.report.json").read_text())
    assert any(w.startswith("tolerance override (--tolerance): *:rel_l2=0.5") for w in report["warnings"])
    assert all(a["tolerance"]["source"] == "user override" for a in report["agreement"])


# --- verify and bench reload the build's settings ---------------------------------------------------


class ImageBranch(nn.Module):
    """An image model with a data-dependent branch (a blocking trace hazard; always taken here)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.min() > -100:
            return self.conv(image).mean(dim=(2, 3))
        return image.sum()


def image_branch() -> nn.Module:
    torch.manual_seed(0)
    return ImageBranch().eval()


def test_verify_reproduces_a_build_made_with_trace_warnings_tolerance_and_image(tmp_path):
    model = "tests.test_settings:image_branch"
    built = runner.invoke(app, ["build", model, "--input", "image:1x3x16x16", "--image", "image", "--mean",
                                "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--allow-trace-warnings", "--tolerance",
                                "*:rel_l2=0.02", "--trust", "--out", str(tmp_path), "--json"])
    assert built.exit_code == 0, built.output
    report_path = tmp_path / "image_branch.report.json"
    before = json.loads(report_path.read_text())
    assert any("trace hazard (allowed)" in w for w in before["warnings"])

    refused = runner.invoke(app, ["verify", str(report_path)])  # a MODULE:FN source imports code
    one_line_exit_2(refused, "pass --trust to verify")
    loose = runner.invoke(app, ["verify", str(report_path), "--trust", "--json"])  # a report never loosens verify
    assert loose.exit_code == 1 and "pass --tolerance *:rel_l2=0.02 to verify" in loose.stdout, loose.output
    verified = runner.invoke(app, ["verify", str(report_path), "--trust", "--tolerance", "*:rel_l2=0.02", "--json"])
    assert verified.exit_code == 0, verified.output
    after = json.loads(verified.stdout)
    for key in ("allow_trace_warnings", "tolerance", "image", "mean", "std", "pixel_scale", "labels", "samples",
                "output_names", "targets", "precision", "seed", "num_samples", "inputs"):
        assert after["settings"][key] == before["settings"][key], key
    assert after["settings_source"]["image"] == "flag" and after["settings_source"]["trust"] == "flag"
    assert {a["target"] for a in after["agreement"]} == {"onnx", "coreml"}
    assert all(a["tolerance"] == {"rel_l2": 0.02, "max_rel": a["tolerance"]["max_rel"], "source": "user override"}
               for a in after["agreement"])


def test_a_report_never_grants_trust(tmp_path):
    report = {"model": {"source": str(SAMPLES / "lstm_sum.pt"), "format": "pickle"},
              "settings": {"trust": True, "seed": 0}}
    with pytest.raises(SpecError, match="pass --trust to bench"):
        from_report(report, trust=False, command="bench")
    assert from_report(report, trust=True, command="bench").trust is True
    torchscript = {"model": {"source": str(SAMPLES / "lstm_sum.pt"), "format": "torchscript"},
                   "settings": {"trust": True, "factory": None, "out": "/elsewhere"}}
    config = from_report(torchscript, trust=False, command="verify")
    assert config.trust is False and config.out is None
    entry_point = {"model": {"source": "os:getcwd", "format": "torchscript"}, "settings": {}}  # a lying report
    with pytest.raises(SpecError, match="pass --trust to verify"):
        from_report(entry_point, trust=False, command="verify")


def test_report_values_are_type_checked():
    report = {"model": {"source": str(SAMPLES / "lstm_sum.pt"), "format": "torchscript"},
              "settings": {"allow_trace_warnings": "yes"}}
    with pytest.raises(SpecError, match="allow_trace_warnings in the report must be true or false"):
        from_report(report, trust=False, command="verify")


def test_bench_refuses_to_reexport_a_source_that_runs_code_without_trust(tmp_path):
    out = tmp_path / "out"
    built = runner.invoke(app, ["build", "tests.fixtures.models:tiny", "--input", "x:2x4", "--targets", "onnx",
                                "--trust", "--out", str(out)])
    assert built.exit_code == 0, built.output
    report = str(out / "tiny.report.json")
    one_line_exit_2(runner.invoke(app, ["bench", report, "--runs", "1", "--warmup", "0"]), "pass --trust to bench")
    timed = runner.invoke(app, ["bench", report, "--runs", "1", "--warmup", "0", "--trust", "--json"])
    assert timed.exit_code == 0, timed.output
    assert "re-exported" in json.loads(timed.stdout)["onnx"]["unsimplified"]["note"]
    shutil.rmtree(out)
