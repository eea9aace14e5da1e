"""The artifact set is replaced as a set: a build killed (or interrupted) at every step of the
final move leaves the complete previous set or the complete new set; SIGINT anywhere, even one
coremltools swallows in a __del__, exits 130 with the previous set intact; two builds of
different models in one folder both succeed; nothing is left in $TMPDIR."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interop.cli import app
from interop.stages.outdir import recover_folder
from tests.conftest import ROOT, SAMPLES
from tests.security import crafted


def visible(folder: Path) -> dict[str, bytes]:
    """The artifact set as a user sees it (interop's own dot-files aside)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not str(p.relative_to(folder)).startswith(".")}


@pytest.fixture(scope="module")
def sets(built_lstm, tmp_path_factory):
    """A previous set (both targets and a stale failed report) and a different new set."""
    out, _ = built_lstm
    root = tmp_path_factory.mktemp("sets")
    old, new = root / "old", root / "new"
    shutil.copytree(out, old, ignore=shutil.ignore_patterns(".*"))
    for suffix in (".json", ".md"):
        (old / f"lstm_sum.failed.report{suffix}").write_text("an older failed build")
    shutil.copytree(out, new, ignore=shutil.ignore_patterns(".*"))
    (new / "lstm_sum.onnx").write_bytes((new / "lstm_sum.onnx").read_bytes() + b"new")
    (new / "lstm_sum.mlpackage" / "NEW").write_text("new")
    return old, new


def _commit(old: Path, new: Path, folder: Path, mode: str, stop: int, shipped: str) -> subprocess.CompletedProcess:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(old, folder, symlinks=True)
    return subprocess.run([sys.executable, "-m", "tests.security.commit_child", str(folder), str(new), mode, str(stop),
                           shipped], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("shipped", ["onnx,coreml", "onnx"])
def test_kill_or_sigint_at_every_step_of_the_final_move(shipped, sets, tmp_path):
    old, new = sets
    folder = tmp_path / "out"
    done = _commit(old, new, folder, "kill", -1, shipped)
    assert done.returncode == 0, done.stderr
    steps, new_set, old_set = int(done.stdout), visible(folder), visible(old)
    assert new_set != old_set and steps >= 6
    if shipped == "onnx":  # the previous package of the target that did not ship is gone
        assert not any(k.startswith("lstm_sum.mlpackage") for k in new_set)
    assert not any("failed" in k for k in new_set)
    for mode in ("kill", "sigint") if shipped == "onnx" else ("kill",):
        for stop in range(steps):
            result = _commit(old, new, folder, mode, stop, shipped)
            assert result.returncode == (9 if mode == "kill" else 130), (mode, stop, result.stderr)
            if not (folder / ".lstm_sum.interop-commit.json").exists():
                assert visible(folder) in (old_set, new_set), (mode, stop)
            recover_folder(folder)  # what the next build, inspect, bench or verify does first
            assert visible(folder) == old_set, (mode, stop)
            assert not (folder / ".lstm_sum.interop-commit.json").exists()


def test_a_forged_journal_cannot_move_files_outside(sets, tmp_path):
    from interop.errors import SpecError
    from interop.stages.outdir import recover

    folder = tmp_path / "out"
    shutil.copytree(sets[0], folder)
    (tmp_path / "victim").write_text("keep")
    journal = {"work": ".interop-tmp-lstm_sum-1-abc", "names": ["../victim"], "remove": []}
    (folder / ".lstm_sum.interop-commit.json").write_text(json.dumps(journal))
    with pytest.raises(SpecError, match="not a commit journal"):
        recover(folder, "lstm_sum")
    assert (tmp_path / "victim").read_text() == "keep" and visible(folder) == visible(sets[0])


def _run(args, env=None, **kw):
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_two_builds_of_different_models_in_one_folder_both_succeed(tmp_path):
    """``m-1`` is stopped (SIGSTOP, from its own ONNX stage) with its work folder open while ``m``
    builds start to finish in the same folder; then ``m-1`` resumes. ``m``'s stem is a prefix of
    ``m-1``'s: its cleanup must still leave ``m-1``'s work folder alone."""
    first = crafted.copy_sample("lstm_sum.pt", tmp_path / "m-1.pt")
    second = crafted.copy_sample("lstm_sum.pt", tmp_path / "m.pt")
    paused = _run(["-m", "interop.cli", "build", str(first), "--targets", "onnx"],
                  env={"INTEROP_TEST_SIGNAL_AT": "exporting and verifying ONNX:SIGSTOP"})
    _, status = os.waitpid(paused.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    assert list(tmp_path.glob(".interop-tmp-m-1-*"))
    other = CliRunner().invoke(app, ["build", str(second), "--targets", "onnx"])  # in this process: quicker
    assert other.exit_code == 0, other.output
    os.kill(paused.pid, signal.SIGCONT)
    assert paused.wait(timeout=300) == 0, paused.stderr.read()
    for stem in ("m", "m-1"):
        assert (tmp_path / f"{stem}.onnx").exists() and (tmp_path / f"{stem}.report.json").exists()
    assert not list(tmp_path.glob(".interop-*")) and not list(tmp_path.glob(".m*.lock"))


SWALLOWED = """
import os, signal, sys
import coremltools.converters._converters_entry as entry

real = entry.mil_convert


class Swallows:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt raised here is ignored by Python


def convert(*args, **kwargs):
    model = real(*args, **kwargs)
    Swallows()
    return model


entry.mil_convert = convert
sys.argv = ["interop", *sys.argv[1:]]
from interop.cli import main
main()
"""


@pytest.mark.slow  # a Core ML conversion in a fresh process (~20 s); tests/test_bad_input.py has the fast SIGINT test
def test_sigint_swallowed_inside_coremltools_still_exits_130(built_lstm, tmp_path):
    out, _ = built_lstm
    folder, tmp = tmp_path / "out", tmp_path / "tmp"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns(".*"))
    tmp.mkdir()
    before = visible(folder)
    (tmp_path / "swallow.py").write_text(SWALLOWED)
    proc = _run([str(tmp_path / "swallow.py"), "build", str(SAMPLES / "lstm_sum.pt"), "--out", str(folder)],
                env={"TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)})
    assert proc.wait(timeout=600) == 130, proc.stderr.read()
    assert visible(folder) == before
    assert not list(folder.glob(".interop-*")) and not list(folder.glob(".*.lock"))
    assert not list(tmp.iterdir())  # coremltools' temporary package went with the work folder


@pytest.mark.slow
def test_no_temporary_package_left_in_tmpdir_after_a_build(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = _run(["-m", "interop.cli", "build", str(SAMPLES / "lstm_sum.pt"), "--out", str(tmp_path / "o"),
                 "--targets", "coreml"], env={"TMPDIR": str(tmp)})
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    assert (tmp_path / "o" / "lstm_sum.mlpackage").is_dir() and not list(tmp.iterdir())
