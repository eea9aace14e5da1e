"""A corpus of real broken files and specs: each gets one clear line, exit 2, no traceback, and
the output folder is untouched. Plus kills during a build, concurrent builds, config files."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from interop.cli import app
from tests.conftest import ROOT, SAMPLES
from tests.test_cli import tree_digest

runner = CliRunner()
LSTM = str(SAMPLES / "lstm_sum.pt")


@pytest.fixture(scope="module")
def good_out(tmp_path_factory):
    """An output folder holding a previous good build (ONNX only, to stay quick)."""
    out = tmp_path_factory.mktemp("good")
    result = runner.invoke(app, ["build", LSTM, "--out", str(out), "--targets", "onnx"])
    assert result.exit_code == 0, result.output
    return out


def _files(tmp: Path) -> dict[str, Path]:
    data = (SAMPLES / "lstm_sum.pt").read_bytes()
    made = {"empty.pt": b"", "random.pt": os.urandom(4096), "text.pt": b"hello, I am not a model\n",
            "truncated.pt": data[: len(data) // 3], "broken.onnx": b"\x08\x07garbage", "bad.toml": b"inputs = [\n",
            "unknown.toml": b'colour = "blue"\n', "text.npz": b"not numpy", "wrong.npz": None, "file_out": b"x"}
    out = {}
    for name, content in made.items():
        path = tmp / name
        if content is None:
            np.savez(path, y=np.zeros((1, 6, 1), np.float32))
        else:
            path.write_bytes(content)
        out[name] = path
    zipped = tmp / "zip_no_model.pt"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("a/b.txt", "hi")
    out["zip_no_model.pt"] = zipped
    return out


CASES = [
    (lambda f: [str(f["empty.pt"])], "is empty"),
    (lambda f: [str(f["random.pt"])], "not a PyTorch model"),
    (lambda f: [str(f["text.pt"])], "not a PyTorch model"),
    (lambda f: [str(f["truncated.pt"])], "TorchScript"),
    (lambda f: [str(f["zip_no_model.pt"])], "not a PyTorch model"),
    (lambda f: [str(f["broken.onnx"])], "not a valid ONNX model"),
    (lambda f: ["missing_model.pt"], "does not exist"),
    (lambda f: [LSTM, "--input", "x"], "cannot parse"),
    (lambda f: [LSTM, "--input", "x:1x0x1"], "dim <= 0"),
    (lambda f: [LSTM, "--input", "x:1x-6x1"], "dim <= 0"),
    (lambda f: [LSTM, "--input", "x:1x6x1:float128"], "unknown dtype"),
    (lambda f: [LSTM, "--input", "x:1x6x1:float32:10..0"], "reversed range"),
    (lambda f: [LSTM, "--dynamic", "x:0=batch:64..1"], "reversed range"),
    (lambda f: [LSTM, "--dynamic", "x:7=batch"], "rank 3"),
    (lambda f: [LSTM, "--dynamic", "q:0=batch"], "no input named"),
    (lambda f: [LSTM, "--dynamic", "x:0=batch:2..8"], "outside the range"),
    (lambda f: [LSTM, "--input", "x:1x6"], "the model fails"),
    (lambda f: [LSTM, "--input", "x:1x6x1", "--input", "y:1x6x1"], "forward() takes 1"),
    (lambda f: [LSTM, "--targets", "onnx,tflite"], "unknown target"),
    (lambda f: [LSTM, "--precision", "fp8"], "unknown precision"),
    (lambda f: [LSTM, "--exporter", "magic"], "unknown --exporter"),
    (lambda f: [LSTM, "--coreml-shapes", "wobbly"], "coreml-shapes"),
    (lambda f: [LSTM, "--samples", str(f["text.npz"])], "not a readable .npz"),
    (lambda f: [LSTM, "--samples", "nope.npz"], "does not exist"),
    (lambda f: [LSTM, "--samples", str(f["wrong.npz"])], "no array for input"),
    (lambda f: [LSTM, "--config", str(f["bad.toml"])], "not valid TOML"),
    (lambda f: [LSTM, "--config", str(f["unknown.toml"])], "unknown setting"),
    (lambda f: [LSTM, "--config", "nope.toml"], "does not exist"),
    (lambda f: [LSTM, "--tolerance", "logits:atol=1"], "unknown metric"),
    (lambda f: ["tests.fixtures.nothing_here:build", "--input", "x:1x4"], "cannot import"),
    (lambda f: ["tests.fixtures.models:tiny"], "no input spec"),
    (lambda f: [LSTM, "--labels", "nope.txt"], "labels file"),
]


@pytest.mark.parametrize("make_args, fragment", CASES, ids=[c[1] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_written(make_args, fragment, good_out, tmp_path):
    files = _files(tmp_path)
    before = tree_digest(good_out)
    result = runner.invoke(app, ["build", *make_args(files), "--out", str(good_out)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output and " — " in lines[0]  # what was wrong — what to do
    assert tree_digest(good_out) == before


def test_out_that_is_a_file(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    result = runner.invoke(app, ["build", LSTM, "--out", str(target)])
    assert result.exit_code == 2 and "is a file" in result.stderr and target.read_text() == "keep me"


def test_second_concurrent_build_is_refused(good_out):
    before = tree_digest(good_out)
    with open(good_out / ".lstm_sum.interop.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = runner.invoke(app, ["build", LSTM, "--out", str(good_out), "--targets", "onnx"])
    (good_out / ".lstm_sum.interop.lock").unlink()  # this test's own lock file
    assert result.exit_code == 2 and "another interop build" in result.stderr
    assert tree_digest(good_out) == before


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_killed_build_leaves_previous_artifacts(sig, good_out, tmp_path):
    """The child signals itself when the ONNX stage starts (inside the output folder's session,
    its work folder present): deterministic, no timing (interop.support.interrupts.test_hook)."""
    out = tmp_path / "out"
    shutil.copytree(good_out, out)
    before = tree_digest(out)
    env = {**os.environ, "INTEROP_TEST_SIGNAL_AT": f"exporting and verifying ONNX:{sig}"}
    proc = subprocess.run([sys.executable, "-m", "interop.cli", "build", LSTM, "--out", str(out), "--targets", "onnx"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    visible = {k: v for k, v in tree_digest(out).items() if not k.startswith((".interop-tmp-", ".lstm_sum.interop.lock"))}
    assert visible == before
    if sig == "SIGINT":
        assert proc.returncode == 130, proc.stderr
        assert not list(out.glob(".interop-tmp-*")) and not (out / ".lstm_sum.interop.lock").exists()
    else:
        assert proc.returncode == -signal.SIGKILL and list(out.glob(".interop-tmp-*"))  # killed mid-build
    again = runner.invoke(app, ["build", LSTM, "--out", str(out), "--targets", "onnx"])  # cleans a killed build's folder
    assert again.exit_code == 0 and not list(out.glob(".interop-tmp-*"))


def test_config_files_and_priority(tmp_path):
    model = tmp_path / "lstm_sum.pt"
    shutil.copy(SAMPLES / "lstm_sum.pt", model)
    (tmp_path / "interop.toml").write_text('targets = ["onnx"]\ndynamic = ["x:0=batch:1..8"]\n')
    result = runner.invoke(app, ["build", str(model), "--json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.stdout)
    assert report["targets"]["coreml"]["status"] == "skipped"
    assert report["inputs"][0]["dynamic"]["0"]["max"] == 8
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n[tool.interop]\ntargets = "onnx"\nprecision = "fp32"\n')
    flags_win = runner.invoke(app, ["build", str(model), "--config", str(pyproject), "--targets", "onnx",
                                    "--dynamic", "x:0=batch:1..4", "--json"])
    assert json.loads(flags_win.stdout)["inputs"][0]["dynamic"]["0"]["max"] == 4


def test_onnx_input_builds_both_targets_beside_the_source(good_out, tmp_path):
    import json

    result = runner.invoke(app, ["build", str(good_out / "lstm_sum.onnx"), "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["targets"]["coreml"]["status"] == "ok" and report["conversion"]["passed"]
    assert {a["case"] for a in report["agreement"]} == {"example", "batch=3"}
    assert {a["target"] for a in report["agreement"]} == {"onnx", "coreml"}
    assert (tmp_path / "lstm_sum.interop.onnx").exists() and (tmp_path / "lstm_sum.interop.mlpackage").exists()
