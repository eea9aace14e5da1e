"""Core ML precision (issue 28): the cause of a Core ML disagreement, found by running the same ML
program in fp32 in the reference runtime, and ``--precision auto``: fp16 with fp32 islands."""

from __future__ import annotations

import numpy as np
import pytest

from interop import BuildConfig, build


def _build(tmp_path, model: str, precision: str, **kw):
    return build(BuildConfig(model=model, inputs=["x:2x16"], targets=["coreml"], out=str(tmp_path),
                             precision=precision, **kw))


def test_fp16_overflow_is_attributed_to_fp16_precision_and_refused_at_fp16(tmp_path):
    report = _build(tmp_path, "tests.fixtures.precision_models:scaled_layernorm", "fp16")
    assert not report.passed
    coreml = report.data["targets"]["coreml"]
    assert coreml["status"] == "disagrees" and coreml["cause"] == "fp16-precision"
    assert coreml["fp32_rel_l2"] < 1e-2  # the same program in fp32 agrees
    failed = [a for a in report.data["agreement"] if not a["passed"]]
    assert failed and all(a["cause"] == "fp16-precision" for a in failed)
    assert "cause fp16-precision" in coreml["error"] and "--precision auto" in coreml["hint"]
    assert not (tmp_path / "scaled_layernorm.mlpackage").exists()


def test_auto_ships_fp16_with_fp32_islands_that_passes(tmp_path):
    from interop.runtimes import mil

    report = _build(tmp_path, "tests.fixtures.precision_models:scaled_layernorm", "auto")
    coreml = report.data["targets"]["coreml"]
    assert report.passed, coreml
    islands = coreml["fp32_islands"]
    assert islands["passed"] and coreml["fp32_ops"] == islands["ops"] and islands["ops"]
    assert "layer_norm" in islands["types"].values()
    assert islands["rel_l2_before"] == "inf" and islands["rel_l2_after"] < 1e-2
    assert islands["share"]["ops"] < 0.5  # most ops stay fp16
    assert all(a["passed"] for a in report.data["agreement"])
    # the shipped package: the LayerNorm computes in fp32, the linears in fp16
    loaded = mil.load_model(tmp_path / "scaled_layernorm.mlpackage")
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    _, values = loaded.predict({"x": x}, intermediate=True)
    dtypes = {op.op_type: set() for op in loaded.program.functions["main"].operations}
    for op in loaded.program.functions["main"].operations:
        dtypes[op.op_type].update(str(values[v.name].dtype) for v in op.outputs if v.name in values)
    assert dtypes["layer_norm"] == {"float32"} and "float16" in dtypes["linear"]
    assert all(np.isfinite(v).all() for v in loaded.predict({"x": x}).values())


def test_a_model_that_agrees_in_fp16_gets_no_islands_and_no_cause(tmp_path):
    report = _build(tmp_path, "tests.fixtures.precision_models:plain", "auto")
    assert report.passed
    coreml = report.data["targets"]["coreml"]
    assert "cause" not in coreml and "fp32_islands" not in coreml and coreml["precision"] == "fp16"
    assert coreml["precision_mode"] == "auto"


@pytest.fixture
def broken_gelu():
    """A deliberately wrong Core ML translation of aten::gelu (sigmoid instead)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    def gelu(context, node):
        x = _get_inputs(context, node)[0]
        context.add(mb.sigmoid(x=x, name=node.name))

    mapping = _TORCH_OPS_REGISTRY.name_to_func_mapping
    old = mapping["gelu"]
    mapping["gelu"] = gelu
    yield
    mapping["gelu"] = old


def test_a_wrong_translation_is_attributed_to_conversion_with_its_op(tmp_path, broken_gelu):
    report = _build(tmp_path, "tests.fixtures.precision_models:plain", "auto")
    coreml = report.data["targets"]["coreml"]
    assert not report.passed and coreml["status"] == "disagrees"
    assert coreml["cause"] == "conversion"
    assert coreml["cause_op"].startswith("sigmoid ")  # the op the broken translation emitted
    assert "fp32_islands" not in coreml  # no islands for a conversion bug
    assert "--targets onnx" in coreml["hint"] and "sigmoid" in coreml["hint"]


def test_precision_auto_is_accepted_and_unknown_values_are_bad_input(tmp_path):
    from interop.errors import SpecError
    from interop.settings import resolve

    assert resolve(BuildConfig(model="tests.fixtures.precision_models:plain", precision="auto")).precision == "auto"
    with pytest.raises(SpecError, match="fp16, fp32 or auto"):
        resolve(BuildConfig(model="tests.fixtures.precision_models:plain", precision="fp8"))


def test_overflow_ops_are_required_and_growth_ranks_the_rest():
    from interop.targets.coreml.precision import OpError, candidates, island_sets, saved_name

    errors = [OpError("a", "linear", 1e-3, 1e-3, False, True), OpError("b", "layer_norm", float("inf"), float("inf"), True, True),
              OpError("c", "softmax", 5e-2, 4e-2, False, True), OpError("d", "mul", 1e-3, 0.0, True, False)]
    required, ranked = candidates(errors)
    assert required == ["b"] and ranked == ["c", "a"]  # d is fp32 already; c adds the most error
    assert island_sets(required, ranked) == [["b"], ["b", "c"], ["b", "c", "a"]]
    assert saved_name("input.3") == "input_3" and saved_name("79") == "op_79"


@pytest.mark.slow
def test_stateful_generation_ships_fp16_with_fp32_islands_tokens_exact(tmp_path):
    """A tiny Llama whose RMSNorms square values beyond fp16's range: pure fp16 is refused with
    cause fp16-precision; auto keeps the norms in fp32 and passes at the unchanged tolerance."""
    config = dict(model="tests.fixtures.precision_models:loud_llama", task="text-generation", targets=["coreml"],
                  max_context=48)
    fp16 = build(BuildConfig(out=str(tmp_path / "fp16"), precision="fp16", **config))
    assert not fp16.passed and fp16.data["targets"]["coreml"]["cause"] == "fp16-precision"
    report = build(BuildConfig(out=str(tmp_path / "auto"), precision="auto", **config))
    coreml = report.data["targets"]["coreml"]
    assert report.passed, coreml
    row = next(g for g in report.data["generation"] if g["runtime"] == "interop-mil")
    assert row["tokens_match"] and row["passed"] and row["tolerance"] == fp16.data["generation"][0]["tolerance"]
    islands = coreml["fp32_islands"]
    assert {"pow", "rsqrt"} <= set(islands["types"].values()) and islands["share"]["ops"] < 0.5
    assert coreml["states"] == ["key_cache", "value_cache"]
