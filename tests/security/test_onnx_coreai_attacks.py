"""ONNX sources and Core AI packages made by an attacker: a custom-domain op, opset 99, metadata
carrying terminal escape sequences; an .aimodel whose members are symlinked out or are FIFOs.
Refused with one line and exit 2, or printed with the control characters escaped."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interop.cli import app
from tests.conftest import SAMPLES
from tests.security.test_fleet_attacks import exit_2

runner = CliRunner()
ANSI = "\x1b[2J\x1b]8;;http://evil.example\x07click\x1b]8;;\x07\r\nPASSED"


def onnx_model(path: Path, domain: str = "", opset: int = 17, op: str = "Relu", meta: str | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=imports, ir_version=8)
    if meta is not None:
        model.doc_string = meta
        model.producer_name = meta
        onnx.helper.set_model_props(model, {"author": meta, meta: "value"})
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("kind", ["custom domain", "opset 99"])
def test_onnx_sources_interop_cannot_run_are_exit_2(tmp_path, kind):
    path = onnx_model(tmp_path / "m.onnx", **({"domain": "com.evil", "op": "Exfiltrate"} if kind == "custom domain"
                                             else {"opset": 99}))
    for command in (["build", str(path), "--targets", "onnx", "--out", str(tmp_path / "out")],
                    ["check", str(path)]):
        result = runner.invoke(app, command)
        exit_2(result)
    assert not any((tmp_path / "out").glob("*.onnx")) if (tmp_path / "out").exists() else True


def test_onnx_metadata_reaches_the_terminal_escaped(tmp_path):
    path = onnx_model(tmp_path / "m.onnx", meta=ANSI)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\r" not in result.output
    assert not any(line.strip().startswith("PASSED") for line in result.output.splitlines())


# --- Core AI ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aimodel(tmp_path_factory):
    from interop.runtimes import coreai

    if coreai.unavailable():
        pytest.skip(coreai.unavailable())
    from interop import BuildConfig, build

    out = tmp_path_factory.mktemp("coreai")
    report = build(BuildConfig(model=str(SAMPLES / "small_cnn.pt"), targets=["coreai"], out=str(out), num_samples=1))
    assert report.passed, report.data["targets"]
    return out / "small_cnn.aimodel"


def _members(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["metadata link", "every member linked", "metadata fifo", "member fifo"])
def test_an_aimodel_is_read_only_inside_itself(aimodel, tmp_path, how):
    package, outside = tmp_path / "m.aimodel", tmp_path / "outside"
    shutil.copytree(aimodel, package)
    shutil.copytree(aimodel, outside)  # a working copy: a reader that followed the links would succeed
    targets = [package / "metadata.json"] if how.startswith("metadata") else _members(package)
    for member in targets:
        member.unlink()
        if how.endswith("fifo"):
            os.mkfifo(member)
        else:
            member.symlink_to(outside / member.relative_to(package))
    for command in (["inspect", str(package)], ["bench", str(package), "--runs", "1", "--warmup", "0"]):
        result = runner.invoke(app, command)
        exit_2(result)
