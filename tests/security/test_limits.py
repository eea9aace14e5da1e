"""Every bad input is exit 2 with one line, refused before work starts where it is absurd: zip
bombs, sample counts and sizes beyond the machine, samples that are not numbers, wrong-typed
reports, a read-only --out (before the model is even loaded), a full disk or file-size limit."""

from __future__ import annotations

import json
import os
import resource
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
from tests.security import crafted
from tests.test_cli import tree_digest

runner = CliRunner()
LSTM = str(SAMPLES / "lstm_sum.pt")


def _exit_2(result, *fragments):
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert all(f in lines[0] for f in fragments), lines[0]
    assert "Traceback" not in result.output and "internal error" not in result.output


def _build(*args):
    return runner.invoke(app, ["build", *map(str, args)])


def test_zip_bombs_are_refused_with_the_limit(tmp_path):
    model = crafted.zip_bomb(SAMPLES / "lstm_sum.pt", tmp_path / "bomb.pt")
    _exit_2(_build(model, "--out", tmp_path / "o"), "zip bomb", "100x")
    np.savez(tmp_path / "s.npz", x=np.zeros((1, 6, 1), np.float32))
    samples = crafted.zip_bomb(tmp_path / "s.npz", tmp_path / "bomb.npz")
    _exit_2(_build(LSTM, "--out", tmp_path / "o", "--samples", samples), "zip bomb")


def test_absurd_requests_are_refused_before_work(tmp_path):
    out = tmp_path / "o"
    _exit_2(_build(LSTM, "--out", out, "--num-samples", 10 ** 9), "limit of 1000")
    _exit_2(_build(LSTM, "--out", out, "--input", "x:100000x100000x1000"), "the limit is")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("array, fragment", [
    (np.array([[["a"]] * 6]), "not numbers"),
    (np.full((1, 6, 1), np.nan, np.float32), "NaN"),
    (np.zeros((0, 1, 6, 1), np.float32), "empty"),
    (np.array([[[object()]] * 6], dtype=object), "not a readable .npz"),
])
def test_bad_samples(array, fragment, tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, x=array)
    _exit_2(_build(LSTM, "--out", tmp_path / "o", "--samples", path), fragment)


@pytest.fixture(scope="module")
def report(built_lstm):
    out, _ = built_lstm
    return json.loads((out / "lstm_sum.report.json").read_text())


BREAK = [
    ("settings", None), ("settings", []), ("model", "x"), ("inputs", {"x": 1}), ("targets", []),
    ("settings.seed", "0"), ("settings.seed", -1), ("settings.num_samples", "many"), ("settings.num_samples", True),
    ("settings.num_samples", 10 ** 9), ("settings.precision", 16), ("settings.precision", "fp8"),
    ("settings.tolerance", "x"), ("settings.tolerance", [1]), ("settings.output_names", None),
    ("settings.samples", 3), ("model.source", ["a"]), ("targets.onnx", "ok"), ("targets.onnx.path", 5),
    ("inputs", ["x"]), ("settings.pixel_scale", "1"),
]


@pytest.mark.parametrize("key, value", BREAK, ids=[f"{k}={v!r}" for k, v in BREAK])
def test_wrong_typed_reports_are_exit_2(key, value, report, tmp_path):
    data = json.loads(json.dumps(report))
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    path = tmp_path / "r.report.json"
    path.write_text(json.dumps(data))
    _exit_2(runner.invoke(app, ["verify", str(path)]), "not an interop report")
    if key.startswith(("targets", "inputs")):
        result = runner.invoke(app, ["bench", str(path), "--runs", "1", "--warmup", "0", "--no-unsimplified"])
        _exit_2(result, "not an interop report")


def test_incomplete_report_is_exit_2(report, tmp_path):
    for key in ("settings", "model", "inputs", "targets"):
        data = {k: v for k, v in report.items() if k != key}
        (tmp_path / "r.json").write_text(json.dumps(data))
        _exit_2(runner.invoke(app, ["verify", str(tmp_path / "r.json")]), "not an interop report")
    (tmp_path / "r.json").write_text("[]")
    _exit_2(runner.invoke(app, ["verify", str(tmp_path / "r.json")]), "not an interop report")


def test_report_paths_resolve_from_any_folder(tmp_path, monkeypatch):
    model = crafted.copy_sample("lstm_sum.pt", tmp_path / "lstm_sum.pt")
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["build", "lstm_sum.pt", "--out", "o", "--targets", "onnx"]).exit_code == 0
    data = json.loads((tmp_path / "o" / "lstm_sum.report.json").read_text())
    assert Path(data["model"]["source"]) == model and Path(data["targets"]["onnx"]["path"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert runner.invoke(app, ["verify", str(tmp_path / "o" / "lstm_sum.report.json")]).exit_code == 0


def _read_only_mount_works(folder: Path) -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind '{folder}' '{folder}' && "
                            f"mount -o remount,bind,ro '{folder}' '{folder}'"], capture_output=True)
    return probe.returncode == 0


def test_read_only_out_is_refused_before_the_model_is_loaded(tmp_path):
    """In a private mount namespace --out is a read-only bind mount; the model is garbage, so a
    message about --out proves the folder was checked first."""
    out = tmp_path / "ro"
    out.mkdir()
    if not _read_only_mount_works(out):
        pytest.skip("needs root and unshare for a read-only mount")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    script = (f"mount --bind '{out}' '{out}' && mount -o remount,bind,ro '{out}' '{out}' && "
              f"exec '{sys.executable}' -m interop.cli build '{garbage}' --out '{out}'")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "cannot write to output folder" in lines[0], proc.stderr
    assert "Read-only" in lines[0]


@pytest.mark.slow  # a whole build in a fresh process (~18 s)
def test_file_size_limit_is_exit_2_and_keeps_the_previous_set(built_lstm, tmp_path):
    """RLIMIT_FSIZE (SIGXFSZ ignored, so writes fail with EFBIG): one line, exit 2, previous set
    untouched."""
    out, _ = built_lstm
    folder = tmp_path / "out"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns(".*"))
    before = tree_digest(folder)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))

    proc = subprocess.run([sys.executable, "-m", "interop.cli", "build", LSTM, "--out", str(folder), "--targets", "onnx"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "File too large" in lines[0], proc.stderr
    assert {k: v for k, v in tree_digest(folder).items() if not k.startswith(".")} == before
