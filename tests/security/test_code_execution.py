"""Code inside a model file runs only with --trust. Each hostile file is real; without --trust
interop refuses it (exit 2, one line) and a marker / victim file proves nothing ran; with --trust
the same file does run its payload, which proves the file really is an attack."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from interop import trust
from interop.cli import app
from tests.security import crafted

runner = CliRunner()


def _build(model, out, *extra):
    return runner.invoke(app, ["build", str(model), "--out", str(out), "--targets", "onnx", *extra])


def _one_line_exit_2(result, fragment):
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
    assert "Traceback" not in result.output


def test_pickled_module_with_reduce_never_runs(tmp_path):
    marker = tmp_path / "marker"
    model = crafted.evil_pickle(tmp_path / "evil.pt", marker)
    for command in (["build", str(model), "--out", str(tmp_path / "o"), "--input", "x:1x4"], ["check", str(model)]):
        _one_line_exit_2(runner.invoke(app, command), "system")  # names the global it would import
        assert not marker.exists()
    runner.invoke(app, ["check", str(model), "--trust"])
    assert marker.exists()  # the payload is real


@pytest.mark.parametrize("where", ["sample_inputs", "weight", "constant"])
def test_pickle_inside_pt2_never_runs(where, tmp_path):
    """torch.export.load falls back to unrestricted unpickling (sample inputs), unpickles weights
    and constants flagged ``use_pickle`` and opaque constants with plain pickle: none of it runs."""
    marker = tmp_path / "marker"
    model = crafted.evil_pt2(where, tmp_path / "evil.pt2", marker)
    _one_line_exit_2(_build(model, tmp_path / "o"), "unpickling runs code")
    _one_line_exit_2(runner.invoke(app, ["check", str(model)]), "unpickling runs code")
    assert not marker.exists()
    _build(model, tmp_path / "o", "--trust")
    assert marker.exists()


def test_pt2_with_native_code_is_refused(tmp_path):
    model = crafted.native_pt2(tmp_path / "native.pt2")
    _one_line_exit_2(_build(model, tmp_path / "o"), "compiled native code")


def test_clean_pt2_builds_and_checks(tmp_path):
    """The .pt2 route itself works (it failed with 'Calling train() is not supported yet')."""
    model = crafted.good_pt2(tmp_path / "net.pt2")
    result = _build(model, tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "net.onnx").exists()
    assert runner.invoke(app, ["check", str(model)]).exit_code == 0


@pytest.mark.parametrize("kind, op", [("from_file", "aten::from_file"), ("print", "prim::Print"),
                                      ("setstate", "aten::from_file")])
def test_torchscript_with_side_effects_never_runs(kind, op, tmp_path):
    """A scripted forward (or __setstate__, which torch.jit.load itself runs) that writes a file
    through torch.from_file(shared=True), or prints: refused before it runs."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"keep")
    model = crafted.scripted(kind, tmp_path / "scripted.pt", victim)
    _one_line_exit_2(_build(model, tmp_path / "o", "--input", "x:1x6x1"), op)
    assert victim.read_bytes() == b"keep"
    if kind != "print":
        _build(model, tmp_path / "o", "--input", "x:1x6x1", "--trust")
        assert victim.read_bytes() == b"XXXX"  # 88 = 'X': the payload is real


def test_setstate_is_refused_before_torch_jit_load(tmp_path):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"keep")
    model = crafted.scripted("setstate", tmp_path / "scripted.pt", victim)
    with pytest.raises(trust.Untrusted, match="from_file"):
        trust.check_torchscript_archive(model, trust=False)
    assert victim.read_bytes() == b"keep"


def test_op_policy():
    assert trust.refused_ops(["aten::add", "prim::Constant", "aten::conv2d.padding", "quantized::linear"]) == []
    assert trust.refused_ops(["aten::from_file", "mylib::op", "c10d::broadcast", "prim::Print", "aten::save"]) == [
        "aten::from_file", "aten::save", "c10d::broadcast", "mylib::op", "prim::Print"]


def test_a_report_cannot_make_verify_import_a_module(built_lstm, tmp_path, monkeypatch):
    """A report is data: an entry point (``model.source`` MODULE:FN, or ``settings.factory``)
    written in it is not imported without --trust, even from the current folder."""
    import json

    out, _ = built_lstm
    marker = tmp_path / "marker"
    (tmp_path / "evil_entry.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef build():\n    pass\n")
    monkeypatch.chdir(tmp_path)
    report = json.loads((out / "lstm_sum.report.json").read_text())
    for key in ("source", "factory"):
        data = json.loads(json.dumps(report))
        if key == "source":
            data["model"]["source"] = "evil_entry:build"
        else:
            data["settings"]["factory"] = "evil_entry:build"
        (tmp_path / "r.report.json").write_text(json.dumps(data))
        _one_line_exit_2(runner.invoke(app, ["verify", str(tmp_path / "r.report.json")]), "entry point")
        assert not marker.exists()
