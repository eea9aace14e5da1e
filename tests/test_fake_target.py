"""A fourth target defined in tests/fake_target/ alone (one folder, one registration line) goes
through build, check, inspect, verify, bench, doctor and --compress: a new target needs only its
folder. The last test proves the folder is all it took: no file outside it names the target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from interop.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
MODEL = "tests.fixtures.models:three_layers"  # Linear -> tanh -> Linear -> relu -> Linear
NAME = "numpy-mlp"


@pytest.fixture(scope="module")
def fake_target():
    from interop import targets
    from tests.fake_target import NumpyMlpTarget

    targets.register_target(NumpyMlpTarget)  # the one registration line
    yield targets.get(NAME)
    targets.unregister_target(NAME)
    from interop import variants

    variants._REGISTRY.remove((NAME, "fp16"))  # noqa: SLF001 - the registry keeps the module's variant
    variants._REGISTRY._loaded = False  # noqa: SLF001 - re-imported modules do not re-register


def _json(result) -> dict:
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def built(fake_target, tmp_path_factory):
    out = tmp_path_factory.mktemp("fake")
    result = runner.invoke(app, ["build", MODEL, "--input", "x:2x6", "--dynamic", "x:0=batch:1..4",
                                 "--targets", NAME, "--compress", "fp16,int4,int8", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, _json(result)


def test_build_ships_it_and_agrees(built):
    out, report = built
    entry = report["targets"][NAME]
    assert entry["status"] == "ok" and entry["shipped"] and entry["executed_by"] == ["numpy"]
    assert entry["ops"] == ["linear:0", "tanh", "linear:1", "relu", "linear:2"]
    assert Path(entry["path"]) == out / "three_layers.mlp.npz"
    rows = [a for a in report["agreement"] if a["target"] == NAME]
    assert {a["case"] for a in rows} == {c["name"] for c in report["cases"]} and all(a["passed"] for a in rows)


def test_compress_builds_its_variant_and_skips_the_rest_with_its_notes(built):
    out, report = built
    rows = {r["variant"]: r for r in report["variants"] if r["target"] == NAME}
    assert rows["fp16"]["status"] == "ok" and rows["fp16"]["passed"] and rows["fp16"]["library"] == "numpy astype(float16)"
    assert (out / "three_layers.fp16.mlp.npz").exists() and rows["fp16"]["ratio"] < 0.9
    assert rows["int4"]["note"] == "numpy-mlp stores float weights only: skipped"  # its not_applicable
    assert rows["int8"]["note"] == "interop has no int8 variant of numpy-mlp artifacts: skipped"


def test_verify_reruns_it_and_catches_an_edit(built):
    out, report = built
    path = str(out / "three_layers.report.json")
    verified = runner.invoke(app, ["verify", path, "--trust", "--json"])
    assert verified.exit_code == 0, verified.output
    assert _json(verified)["targets"][NAME]["status"] == "ok"


def test_check_asks_it_about_every_op(fake_target):
    result = runner.invoke(app, ["check", MODEL, "--input", "x:2x6", "--targets", f"onnx,{NAME}", "--json"])
    assert result.exit_code == 0, result.output
    checked = _json(result)
    assert checked["targets"] == ["onnx", NAME] and not checked["would_fail"]


def test_check_reports_an_op_it_lacks(fake_target):
    result = runner.invoke(app, ["check", "tests.fixtures.models:explodes", "--input", "x:1x4",
                                 "--targets", NAME, "--json"])
    checked = _json(result)
    assert NAME in checked["blocked_targets"], checked
    assert any(u.get(NAME, "ok") != "ok" for u in checked["ops"])


def test_inspect_and_bench_use_its_hooks(built):
    out, _ = built
    shown = runner.invoke(app, ["inspect", str(out / "three_layers.mlp.npz"), "--json"])
    assert shown.exit_code == 0, shown.output
    assert _json(shown)["ops"][0] == "linear:0"
    timed = runner.invoke(app, ["bench", str(out / "three_layers.report.json"), "--runs", "3", "--warmup", "0",
                                "--no-unsimplified", "--json"])
    assert timed.exit_code == 0, timed.output
    result = _json(timed)
    assert result[NAME]["numpy"]["runs"] == 3 and result["variants"][f"{NAME}:fp16"]["numpy"]["runs"] == 3
    table = runner.invoke(app, ["bench", str(out / "three_layers.report.json"), "--runs", "2", "--warmup", "0",
                                "--no-unsimplified"])
    assert table.exit_code == 0 and "numpy-mlp, built" in table.stdout and "numpy-mlp:fp16" in table.stdout


def test_doctor_lists_its_runtime(fake_target):
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    assert _json(result)["runtimes"]["numpy (numpy-mlp)"] is True


def test_nothing_outside_its_folder_names_it():
    """The folder is all it took: its name appears in no file of interop/ (nor anywhere in tests/
    but its folder and this test)."""
    hits = [p for p in (ROOT / "interop").rglob("*.py") if NAME in p.read_text()]
    hits += [p for p in (ROOT / "tests").rglob("*.py") if NAME in p.read_text()
             and "fake_target" not in p.parts and p.name != Path(__file__).name]
    assert hits == []
