"""TorchScript-free builds (--no-torchscript / INTEROP_NO_TORCHSCRIPT=1): no torch.jit tracer or
scripter runs (both are made to fail here), ONNX comes from the dynamo exporter and Core ML from
torch.export, and the setting is recorded with where it came from."""

from __future__ import annotations

import pytest
import torch

from tests import zoo


@pytest.fixture
def no_jit(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("torch.jit used in a TorchScript-free build")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    monkeypatch.setattr(torch.jit, "script", refuse)


@pytest.mark.parametrize("name", ["cnn", "lstm"])
def test_zoo_model_builds_torchscript_free(name, no_jit, tmp_path):
    from interop import build

    report = build(zoo.ZOO[name].config(out=str(tmp_path), no_torchscript=True)).data
    assert report["passed"], report["targets"]
    assert report["targets"]["onnx"]["exporter"] == "dynamo"
    assert report["targets"]["coreml"]["capture"] == "torch.export"
    assert report["settings"]["no_torchscript"] is True and report["settings_source"]["no_torchscript"] == "flag"


def test_environment_sets_it_and_conflicting_choices_are_refused(monkeypatch):
    from interop.errors import SpecError
    from interop.settings import BuildConfig, resolve

    monkeypatch.setenv("INTEROP_NO_TORCHSCRIPT", "1")
    config = resolve(BuildConfig(model="tests.zoo:cnn_model"))
    assert config.no_torchscript and config.provenance["no_torchscript"] == "env"
    with pytest.raises(SpecError, match="TorchScript"):
        resolve(BuildConfig(model="tests.zoo:cnn_model", exporter="torchscript"))
    monkeypatch.setenv("INTEROP_NO_TORCHSCRIPT", "maybe")
    with pytest.raises(SpecError, match="INTEROP_NO_TORCHSCRIPT"):
        resolve(BuildConfig(model="tests.zoo:cnn_model"))


# --- recurrent layers through torch.export -> Core ML (targets/coreml/export_ops.py) ----------------

from tests.recurrent_models import RECURRENT  # noqa: E402

# One of each translation in the default run: a time-major 2-layer bidirectional GRU with an initial
# state (its loop reads the model input inside a while_loop body) and the same LSTM; the grid is slow.
FAST_RECURRENT = ("gru_2layer_bi_time_major_h0", "lstm_2layer_bi_time_major_h0")


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in FAST_RECURRENT else [pytest.mark.slow])
                                  for n in RECURRENT])
def test_recurrent_layer_converts_through_torch_export_and_agrees(name, no_jit, tmp_path):
    """Every result (sequence, h_n, c_n) of the Core ML package, executed by the reference runtime at
    each case (two sizes of batch and time), agrees with PyTorch."""
    from interop import BuildConfig, build

    report = build(BuildConfig(model=RECURRENT[name], out=str(tmp_path), targets=["coreml"],
                               no_torchscript=True)).data
    coreml = report["targets"]["coreml"]
    assert coreml["status"] == "ok", coreml.get("error") or coreml.get("not_executed")
    assert coreml["capture"] == "torch.export" and coreml["shapes"]["mode"] == "range"
    rows = [a for a in report["agreement"] if a["runtime"] == "interop-mil"]
    assert {a["output"] for a in rows} == {o["name"] for o in report["outputs"]}
    assert len({a["case"] for a in rows}) >= 3 and all(a["passed"] for a in rows)
    assert report["passed"]


def test_renaming_reaches_ops_inside_loop_bodies():
    """coremltools' rename_feature renames a feature's uses in the top-level block only; the
    package keeps no use of the old name at any depth once interop renames it."""
    import coremltools as ct

    from interop import patches
    from interop.stages.export_capture import export_program
    from interop.targets.coreml.target import _renamed
    from tests.recurrent_models import gru_1layer_uni_time_major

    class Positional(torch.nn.Module):  # interop's capture wrapper: inputs are positional (args_0)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args)

    program = export_program(Positional(gru_1layer_uni_time_major()), (torch.randn(7, 2, 6),), None)
    with patches.applied(*patches.COREML_CONVERSION):
        model = ct.convert(program.run_decompositions({}), convert_to="mlprogram", skip_model_load=True)
    old = model.get_spec().description.input[0].name

    def uses(spec, name):
        found = []

        def walk(blocks, depth):
            for block in blocks:
                for op in block.operations:
                    found.extend(depth for arg in op.inputs.values() for b in arg.arguments
                                 if b.HasField("name") and b.name == name)
                    walk(op.blocks, depth + 1)

        for function in spec.mlProgram.functions.values():
            walk(function.block_specializations.values(), 0)
        return found

    assert any(depth > 0 for depth in uses(model.get_spec(), old))  # the loop body reads the input
    renamed = _renamed(model, ["x"], ["out", "h_n"], None).get_spec()
    assert uses(renamed, old) == [] and uses(renamed, "x")


# --- the whole zoo, the seeds, check and doctor ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in zoo.ZOO if n not in ("cnn", "lstm")])
def test_every_zoo_model_builds_torchscript_free(name, no_jit, tmp_path):
    """The rest of the zoo (cnn and lstm run by default above), GPT-2's aten.alias included."""
    from interop import build

    report = build(zoo.ZOO[name].config(out=str(tmp_path), no_torchscript=True)).data
    assert report["passed"], {t: v.get("error") or v.get("not_executed") for t, v in report["targets"].items()}
    assert report["targets"]["onnx"]["exporter"] == "dynamo"
    assert report["targets"]["coreml"]["capture"] == "torch.export"


@pytest.mark.parametrize("sample", ["small_cnn.pt", "digit_net.pt"])  # digit_net: max_pool2d(x, kernel)
def test_seed_sample_builds_through_ts2ep(sample, no_jit, tmp_path):
    """A TorchScript archive (the user's file) is read, never traced: torch's TS2EPConverter turns
    it into the one ExportedProgram both targets take."""
    from pathlib import Path

    from interop import BuildConfig, build

    path = Path(__file__).resolve().parent.parent / "samples" / sample
    report = build(BuildConfig(model=str(path), out=str(tmp_path), no_torchscript=True)).data
    assert report["passed"], report["targets"]
    coreml = report["targets"]["coreml"]
    assert coreml["capture"] == "torch.export" and coreml["captured_from"].startswith("TorchScript -> TS2EPConverter")
    assert report["targets"]["onnx"]["exporter"] == "dynamo"


def test_check_reports_the_torchscript_free_capture(no_jit):
    from interop.commands.check import check_model

    result = check_model(zoo.ZOO["cnn"].config(no_torchscript=True))
    assert result["no_torchscript"] is True and result["captured_from"] == "torch.export"
    assert not result["would_fail"]


def test_doctor_says_what_still_needs_torchscript(monkeypatch):
    from interop.commands.doctor import diagnose

    monkeypatch.setenv("INTEROP_NO_TORCHSCRIPT", "1")
    info = diagnose()["no_torchscript"]
    assert info["env_value"] == "1" and any("TorchScript archive" in line for line in info["still_needs_torchscript"])
