"""Integration tests over the model zoo (tests/zoo.py): every architecture builds to both targets,
with the exporter and Core ML capture path recorded, agreement at two sizes of every dynamic axis,
and the user's dim names in the ONNX file. Plus one test per known failure mode of the raw tools,
pinning what interop does about it.

The default run builds a fast representative subset; `make test-all` builds the whole zoo.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from tests import zoo

# What each model is expected to build with: (ONNX exporter, Core ML capture path).
EXPECTED = {
    "cnn": ("torchscript", "torch.jit.trace"),
    "lstm": ("torchscript", "torch.jit.trace"),
    "lstm_sum": ("torchscript", "torch.jit.trace"),
    "gru": ("torchscript", "torch.jit.trace"),
    "mobilenet_v2": ("torchscript", "torch.jit.trace"),
    "unet": ("torchscript", "torch.jit.trace"),
    "multi_io": ("torchscript", "torch.jit.trace"),
    "custom_function": ("torchscript", "torch.export"),  # jit.trace: no translation for prim::PythonOp
    "diff": ("dynamo", "torch.jit.trace"),  # TorchScript exporter: no aten::diff; Core ML: patched diff
    "bert": ("torchscript", "torch.jit.trace"),
    "gpt2": ("dynamo", "torch.jit.trace"),  # TorchScript exporter: no aten::diff (transformers' masks)
    "distilbert": ("torchscript", "torch.jit.trace"),
    "t5_encoder": ("torchscript", "torch.jit.trace"),
    "vit": ("torchscript", "torch.jit.trace"),
    "swin": ("torchscript", "torch.jit.trace"),  # Core ML: patched rank-6 transpose, adaptive pool
    "segformer": ("torchscript", "torch.jit.trace"),
    "convnext": ("torchscript", "torch.jit.trace"),
    "resnet": ("torchscript", "torch.jit.trace"),
    "whisper_encoder": ("torchscript", "torch.jit.trace"),
}
SLOW = {name for name, entry in zoo.ZOO.items() if entry.slow} | {"gru", "unet"}


def _param(name: str) -> Any:
    return pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [], id=name)


@pytest.fixture(scope="session")
def zoo_build(tmp_path_factory):
    """build(name, **overrides) -> report dict; each (name, overrides) built once per session."""
    from interop import build

    done: dict[tuple, dict[str, Any]] = {}

    def run(name: str, **overrides: Any) -> dict[str, Any]:
        key = (name, repr(sorted(overrides.items())))
        if key not in done:
            entry = zoo.ZOO[name]
            out = tmp_path_factory.mktemp(name)
            done[key] = build(entry.config(out=str(out), **overrides)).data
        return done[key]

    return run


def _dims(value_info: Any) -> list[Any]:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _check_onnx_names(report: dict[str, Any]) -> None:
    """Inputs carry the user's dim names on their dynamic axes and constants elsewhere; outputs
    carry the user's names where they follow a dim, and no exporter-generated names at all."""
    import onnx

    model = onnx.load(report["targets"]["onnx"]["path"], load_external_data=False)
    user = {d["name"] for i in report["inputs"] for d in i["dynamic"].values()}
    for spec, declared in zip(report["inputs"], model.graph.input):
        assert declared.name == spec["name"]
        want = [spec["dynamic"][str(a)]["name"] if str(a) in spec["dynamic"] else s for a, s in enumerate(spec["shape"])]
        assert _dims(declared) == want, f"input {spec['name']}"
    for spec, declared in zip(report["outputs"], model.graph.output):
        assert declared.name == spec["name"]
        dims = _dims(declared)
        for axis, name in spec["dynamic"].items():
            assert dims[int(axis)] == name, f"output {spec['name']} axis {axis}: {dims}"
        generated = [d for d in dims if isinstance(d, str) and d not in user]
        assert not generated, f"output {spec['name']} declares generated dim names {generated}: {dims}"


def _check_cases(report: dict[str, Any]) -> None:
    """Agreement (ONNX and Core ML) at every case, and >= 2 sizes of each dim, one of them != 1."""
    cases = [c["name"] for c in report["cases"]]
    dims = {d["name"]: (i["shape"][int(a)], d) for i in report["inputs"] for a, d in i["dynamic"].items()}
    for name, (example, dim) in dims.items():
        others = [c["sizes"][name] for c in report["cases"] if name in c["sizes"]]
        sizes = {example, *others}
        assert len(sizes) >= 2 and sizes - {1}, f"dim {name} checked only at {sizes}"
    for target in ("onnx", "coreml"):
        rows = [a for a in report["agreement"] if a["target"] == target]
        assert {a["case"] for a in rows} == set(cases), f"{target} agreement missing at some case"
        assert all(a["passed"] for a in rows), [a for a in rows if not a["passed"]][:1]
        assert not any(a["degenerate"] for a in rows), "degenerate reference: pick another config"
    assert {a["runtime"] for a in report["agreement"] if a["target"] == "coreml"} >= {"interop-mil"}


def _check_coreml_names(report: dict[str, Any]) -> None:
    import coremltools as ct

    spec = ct.utils.load_spec(report["targets"]["coreml"]["path"])
    assert [f.name for f in spec.description.input] == [i["name"] for i in report["inputs"]]
    assert [f.name for f in spec.description.output] == [o["name"] for o in report["outputs"]]


@pytest.mark.parametrize("name", [_param(n) for n in zoo.ZOO])
def test_zoo_model_builds_and_agrees(name, zoo_build):
    report = zoo_build(name)
    onnx_t, coreml_t = report["targets"]["onnx"], report["targets"]["coreml"]
    problems = [t.get("error") for t in (onnx_t, coreml_t) if t["status"] != "ok"]
    problems += [n["why"] for n in coreml_t.get("not_executed", [])]
    assert not problems, problems
    assert (onnx_t["exporter"], coreml_t["capture"]) == EXPECTED[name]
    _check_cases(report)
    _check_onnx_names(report)
    _check_coreml_names(report)
    assert report["passed"]


def test_every_zoo_model_has_dynamic_batch_and_an_expectation():
    assert set(EXPECTED) == set(zoo.ZOO)
    for entry in zoo.ZOO.values():
        assert any("=batch:" in d for d in entry.dynamic), entry.name


# --- failure modes of the raw tools, and what interop does about them ---------------------------


def test_dynamo_alone_declares_a_size_1_batch_constant_interop_names_it(zoo_build):
    """torch.onnx.export(dynamo=True) at an example batch of 1 specialises the axis: the output is
    declared (1, 3) although the input says 'batch'. interop exports at another size."""
    import onnx

    module, _, _ = zoo.ZOO["lstm_sum"]()
    raw = torch.onnx.export(module, (torch.rand(1, 6, 1) * 10,), None, dynamo=True, input_names=["x"],
                            output_names=["logits"], dynamic_axes={"x": {0: "batch"}})
    assert _dims(raw.model_proto.graph.output[0]) == [1, 3]

    report = zoo_build("lstm_sum", exporter="dynamo", targets=["onnx"])
    assert report["targets"]["onnx"]["exporter"] == "dynamo"
    model = onnx.load(report["targets"]["onnx"]["path"])
    assert _dims(model.graph.output[0]) == ["batch", 3]
    assert {a["case"] for a in report["agreement"]} == {"example", "batch=3"} and report["passed"]


@pytest.mark.parametrize("name", ["diff", "gpt2"])
def test_auto_exporter_falls_back_to_dynamo_and_records_why(name, zoo_build):
    onnx_t = zoo_build(name)["targets"]["onnx"]
    assert onnx_t["exporter"] == "dynamo"
    (rejected,) = onnx_t["rejected"]
    assert rejected["exporter"] == "torchscript" and "aten::diff" in rejected["reason"]


def test_torchscript_exporter_generated_dim_names_are_replaced(zoo_build, tmp_path):
    """The TorchScript exporter names output dims after the node that made them ('Gemmout_dim_0');
    interop declares them with the user's names."""
    import onnx

    module, _, _ = zoo.ZOO["bert"]()
    ids = torch.randint(0, 100, (2, 8))
    raw = tmp_path / "raw.onnx"
    with torch.no_grad():
        torch.onnx.export(module, (ids, torch.ones_like(ids)), str(raw), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["output"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask")})
    raw_dims = _dims(onnx.load(str(raw)).graph.output[0])
    assert re.fullmatch(r"\w+_dim_0", str(raw_dims[0])), raw_dims

    report = zoo_build("bert")
    assert report["targets"]["onnx"]["exporter"] == "torchscript"
    declared = onnx.load(report["targets"]["onnx"]["path"]).graph.output[0]
    assert _dims(declared) == ["batch", 3]


def test_custom_autograd_function_converts_through_torch_export(zoo_build):
    coreml_t = zoo_build("custom_function")["targets"]["coreml"]
    assert coreml_t["capture"] == "torch.export"
    (rejected,) = coreml_t["rejected"]
    assert rejected["path"] == "torch.jit.trace" and "pythonop" in rejected["reason"]


def test_gpt2_core_ml_uses_interops_diff(zoo_build):
    """coremltools has no aten::diff (transformers' masks use it): GPT-2 converts with the patch."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    from interop.targets.coreml import ops as patches

    report = zoo_build("gpt2")
    assert report["targets"]["coreml"]["status"] == "ok"
    # the build registers the translation only while it converts (interop.patches); coremltools has none
    fn = _TORCH_OPS_REGISTRY.get_func("diff")
    assert fn is None or fn.__wrapped__ is patches._diff


def test_two_builds_in_one_process_keep_the_trace_path(tmp_path):
    from interop import build

    entry = zoo.ZOO["multi_io"]  # two inputs sharing the dim 'batch'
    captures = [build(entry.config(out=str(tmp_path / str(i)), targets=["coreml"])).data["targets"]["coreml"]
                for i in range(2)]
    assert [c["capture"] for c in captures] == ["torch.jit.trace"] * 2, captures


@pytest.mark.slow
def test_swin_dynamo_export_fails_torchscript_works(zoo_build):
    report = zoo_build("swin", exporter="dynamo", targets=["onnx"])
    assert report["targets"]["onnx"]["status"] == "failed"
    assert "dynamo" in report["targets"]["onnx"]["error"]
    assert zoo_build("swin")["targets"]["onnx"]["exporter"] == "torchscript"


@pytest.mark.slow
def test_segformer_dynamo_export_at_batch_1_fails_in_onnxruntime_at_batch_3(zoo_build, tmp_path):
    """Raw: SegFormer exported by dynamo at batch 1 with a dynamic batch axis declares 'batch' but
    bakes 1 into a Reshape: ONNX Runtime fails at batch 3. interop exports at batch 3 (not 1) and
    verifies at both sizes."""
    import numpy as np
    import onnxruntime as ort

    module, _, _ = zoo.ZOO["segformer"]()
    raw = tmp_path / "raw.onnx"
    torch.onnx.export(module, (torch.randn(1, 3, 64, 64),), None, dynamo=True, input_names=["pixel_values"],
                      output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}}).save(str(raw))
    session = ort.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="Reshape"):
        session.run(None, {"pixel_values": np.zeros((3, 3, 64, 64), np.float32)})

    report = zoo_build("segformer", exporter="dynamo", targets=["onnx"], inputs=["pixel_values:1x3x64x64"])
    assert report["targets"]["onnx"]["exporter"] == "dynamo"
    assert {a["case"] for a in report["agreement"]} == {"example", "batch=3"} and report["passed"]


class _Upsample(torch.nn.Module):
    """SegFormer's decode head pattern: Resize to sizes computed from the input's shape."""

    def forward(self, x):
        b, c, h, w = x.shape
        return torch.nn.functional.interpolate(x, size=(h * 2, w * 2))


def test_declared_output_dims_the_exporter_left_symbolic_are_inferred():
    """The TorchScript exporter declares (Resizey_dim_0, ..., Resizey_dim_3) for a (batch, 3, 8, 8)
    output; interop declares the user's name and the constants ONNX shape inference proves."""
    import io

    import onnx

    from interop.stages.spec import InputSpec, apply_dynamic, parse_dynamic, parse_input
    from interop.targets.onnx.target import name_dims

    buffer = io.BytesIO()
    torch.onnx.export(_Upsample(), (torch.randn(2, 3, 4, 4),), buffer, dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    model = onnx.load_from_string(buffer.getvalue())
    assert all(isinstance(d, str) and "dim" in d for d in _dims(model.graph.output[0]))
    spec = InputSpec([parse_input("x:2x3x4x4")])
    apply_dynamic(spec, *parse_dynamic("x:0=batch:1..8"))
    name_dims(model, spec, [{0: "batch"}])
    assert _dims(model.graph.output[0]) == ["batch", 3, 8, 8]
