"""Nothing outside is read or written: an .mlpackage is read only inside its own folder, ONNX
external data only inside the model's folder, FIFOs and devices are refused (never a hang), lock
and work files are never followed through symlinks, odd file names build."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interop.cli import app
from tests.conftest import SAMPLES
from tests.security import crafted

runner = CliRunner()
LSTM = str(SAMPLES / "lstm_sum.pt")
CORE = Path("Data") / "com.apple.CoreML"


def _exit_2(result, fragment=""):
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
    assert "Traceback" not in result.output


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _escape(kind: str, package: Path, outside: Path) -> None:
    """Make ``package`` reach ``outside`` (which holds a working copy of its own files, so a
    reader that followed the escape would succeed)."""
    manifest = package / "Manifest.json"
    data = json.loads(manifest.read_text())
    entry = data["itemInfoEntries"][data["rootModelIdentifier"]]
    if kind == "dotdot":
        entry["path"] = os.path.relpath(outside / "model.mlmodel", package / "Data")
    elif kind == "absolute":
        entry["path"] = str(outside / "model.mlmodel")
    if kind in ("dotdot", "absolute"):
        manifest.write_text(json.dumps(data))
    elif kind == "spec_link":
        (package / CORE / "model.mlmodel").unlink()
        (package / CORE / "model.mlmodel").symlink_to(outside / "model.mlmodel")
    elif kind == "weights_link":
        shutil.rmtree(package / CORE / "weights")
        (package / CORE / "weights").symlink_to(outside / "weights")
    elif kind == "manifest_link":
        shutil.copy(manifest, outside / "Manifest.json")
        manifest.unlink()
        manifest.symlink_to(outside / "Manifest.json")


@pytest.fixture
def escaped(built_lstm, tmp_path):
    out, _ = built_lstm

    def make(kind: str) -> tuple[Path, Path]:
        folder, outside = tmp_path / kind, tmp_path / f"{kind}-outside"
        shutil.copytree(out, folder, ignore=shutil.ignore_patterns(".*"))
        shutil.copytree(out / "lstm_sum.mlpackage" / CORE, outside)
        report = json.loads((folder / "lstm_sum.report.json").read_text())
        for entry in report["targets"].values():
            entry["path"] = str(folder / Path(entry["path"]).name) if entry.get("path") else None
        (folder / "lstm_sum.report.json").write_text(json.dumps(report))
        _escape(kind, folder / "lstm_sum.mlpackage", outside)
        return folder, outside

    return make


KINDS = ["dotdot", "absolute", "spec_link", "weights_link", "manifest_link"]


@pytest.mark.parametrize("kind", KINDS)
def test_package_is_read_only_inside_itself(kind, escaped):
    folder, outside = escaped(kind)
    package = str(folder / "lstm_sum.mlpackage")
    _exit_2(runner.invoke(app, ["inspect", package]), "outside" if kind in ("dotdot", "absolute") else "link")
    _exit_2(runner.invoke(app, ["bench", package, "--runs", "1", "--warmup", "0", "--slow-runs", "1",
                                "--no-unsimplified"]))


def test_verify_refuses_an_escaping_package(escaped):
    folder, _ = escaped("dotdot")
    _exit_2(runner.invoke(app, ["verify", str(folder / "lstm_sum.report.json")]), "outside")


def test_build_replaces_an_escaping_package_without_touching_outside(escaped):
    """A previous set whose package links outside is replaced; what it pointed at is untouched."""
    folder, outside = escaped("weights_link")
    before = _tree(outside)
    result = runner.invoke(app, ["build", LSTM, "--out", str(folder), "--targets", "onnx"])
    assert result.exit_code == 0, result.output
    assert _tree(outside) == before and not (folder / "lstm_sum.mlpackage").exists()


@pytest.mark.parametrize("manifest", ["not json", "[1, 2]", '{"itemInfoEntries": {}}',
                                      '{"rootModelIdentifier": "a", "itemInfoEntries": {"a": {"path": 7}}}',
                                      '{"rootModelIdentifier": ["a"], "itemInfoEntries": {}}'])
def test_malformed_manifest_is_exit_2(manifest, built_lstm, tmp_path):
    out, _ = built_lstm
    package = tmp_path / "m.mlpackage"
    shutil.copytree(out / "lstm_sum.mlpackage", package)
    (package / "Manifest.json").write_text(manifest)
    _exit_2(runner.invoke(app, ["inspect", str(package)]), "not a readable .mlpackage")


@pytest.mark.parametrize("location", ["../secret.bin", "/ABS/secret.bin", "link.bin"])
def test_onnx_external_data_outside_the_model_folder(location, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 24)
    if location == "link.bin":
        (folder / "link.bin").symlink_to(secret)
    model = crafted.onnx_with_external(folder, location.replace("/ABS", str(tmp_path)))
    _exit_2(runner.invoke(app, ["inspect", str(model)]), "ext")
    _exit_2(runner.invoke(app, ["bench", str(model), "--runs", "1", "--warmup", "0"]))
    _exit_2(runner.invoke(app, ["build", str(model), "--out", str(tmp_path / "o")]))
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_onnx_external_data_inside_is_fine(tmp_path):
    model = crafted.onnx_with_external(tmp_path, "w.bin")
    (tmp_path / "w.bin").write_bytes(b"\x00" * 24)
    assert runner.invoke(app, ["inspect", str(model)]).exit_code == 0


@pytest.mark.timeout(300)
def test_fifos_and_devices_are_refused_never_read(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: a reader that tried would hang
    (the timeout fails the test); each is refused before it is opened."""
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    for name in ("pipe.npz", "pipe.txt", "pipe.report.json", "pipe.onnx"):
        os.mkfifo(tmp_path / name)
    out = str(tmp_path / "o")
    _exit_2(runner.invoke(app, ["build", str(fifo), "--out", out]), "not a regular file")
    _exit_2(runner.invoke(app, ["build", "/dev/zero", "--out", out]), "not a regular file")
    _exit_2(runner.invoke(app, ["build", LSTM, "--out", out, "--samples", str(tmp_path / "pipe.npz")]), "regular")
    _exit_2(runner.invoke(app, ["build", LSTM, "--out", out, "--labels", str(tmp_path / "pipe.txt")]), "regular")
    _exit_2(runner.invoke(app, ["verify", str(tmp_path / "pipe.report.json")]), "regular")
    _exit_2(runner.invoke(app, ["bench", str(tmp_path / "pipe.report.json")]), "regular")
    _exit_2(runner.invoke(app, ["inspect", str(tmp_path / "pipe.onnx")]), "regular")
    _exit_2(runner.invoke(app, ["build", str(tmp_path / "pipe.onnx"), "--out", out]))


@pytest.mark.parametrize("name", ["resnet..v2.pt", "my model.pt", "modèle_ü.pt", "bad\x1b[31mname\nx.pt", "a[red]b.pt"])
def test_odd_names_build_and_are_escaped_when_printed(name, tmp_path):
    model = crafted.copy_sample("lstm_sum.pt", tmp_path / name)
    result = runner.invoke(app, ["build", str(model), "--targets", "onnx"])
    assert result.exit_code == 0, result.output
    stem = name[: -len(".pt")]
    assert (tmp_path / f"{stem}.onnx").exists() and (tmp_path / f"{stem}.report.json").exists()
    printed = "".join(result.stdout.splitlines())  # rich wraps long paths
    assert "\x1b" not in printed and (f"{stem}.onnx" in printed or "[red]" not in name)  # no markup eaten
    bad = runner.invoke(app, ["build", str(model), "--targets", "onnx", "--input", "x"])
    assert bad.exit_code == 2 and "\x1b" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_lock_file_symlink_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "o"
    out.mkdir()
    (out / ".lstm_sum.interop.lock").symlink_to(victim)
    _exit_2(runner.invoke(app, ["build", LSTM, "--out", str(out), "--targets", "onnx"]), "symlink")
    assert victim.read_text() == "keep me" and (out / ".lstm_sum.interop.lock").is_symlink()


def test_only_own_dead_work_folders_are_cleaned(tmp_path):
    """A build of ``m`` removes ``m``'s work folders whose process is gone, and nothing else: not
    those of ``m-1`` (a prefix match), not a live process's, not look-alikes it did not create."""
    model = crafted.copy_sample("lstm_sum.pt", tmp_path / "m.pt")
    dead = 2 ** 22 + 12345  # above pid_max's default: no such process
    keep = [f".interop-tmp-m-1-{dead}-abc", f".interop-tmp-m-{os.getppid()}-abc", ".interop-tmp-m-x",
            f".interop-tmp-m-{dead}-abc-extra"]
    for name in keep + [f".interop-tmp-m-{dead}-abc"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    result = runner.invoke(app, ["build", str(model), "--targets", "onnx"])
    assert result.exit_code == 0, result.output
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".interop-tmp-"))
    assert left == sorted(keep)
    assert not (tmp_path / ".m.interop.lock").exists()  # the lock file goes with the build


@pytest.mark.timeout(300)
@pytest.mark.parametrize("key", ["samples", "labels"])
def test_a_report_naming_a_fifo_is_never_read(key, built_lstm, tmp_path):
    """A report is data: the samples / labels file it names is refused when it is a FIFO."""
    out, _ = built_lstm
    os.mkfifo(tmp_path / "pipe")
    report = json.loads((out / "lstm_sum.report.json").read_text())
    report["settings"][key] = str(tmp_path / "pipe")
    (tmp_path / "r.report.json").write_text(json.dumps(report))
    _exit_2(runner.invoke(app, ["verify", str(tmp_path / "r.report.json")]), "not a regular file")
