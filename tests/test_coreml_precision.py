"""Core ML precision (issue 28): the cause of a Core ML disagreement, found by running the same ML
program in fp32 in the reference runtime, and ``--precision auto``: fp16 with fp32 islands."""

from __future__ import annotations

from pathlib import Path

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


# --- Gemma-family decoders, generation causes, the stateless fallback, check ------------------------

def _generate(tmp_path, model: str, precision: str, **kw):
    config = dict(task="text-generation", targets=["coreml"], max_context=16, decode_steps=4)
    config.update(kw)
    return build(BuildConfig(model=f"tests.fixtures.precision_models:{model}", out=str(tmp_path / precision),
                             precision=precision, **config))


def _mil_row(report):
    return next(g for g in report.data["generation"] if g["runtime"] == "interop-mil")


def _verified(report):
    """`interop verify` of the shipped report: the repaired package passes again on its own."""
    from interop.commands.verify import verify_report

    stem = Path(report.data["targets"]["coreml"]["path"]).name.removesuffix(".mlpackage")
    replay = verify_report(str(Path(report.data["targets"]["coreml"]["path"]).parent / f"{stem}.report.json"),
                           trust=True)
    return replay.passed and _mil_row(replay)["tokens_match"]


def test_gemma_decoder_fp16_drifts_cause_names_the_norm_and_auto_repairs_it(tmp_path):
    """A tiny Gemma whose scaled embedding (x sqrt(hidden)) overflows the input RMSNorm's squares:
    the fp16 program flips every token; the cause is fp16 precision at the norm's pow; auto keeps
    the norms' pow / reduce_mean in fp32, passes tokens exact at the unchanged tolerance, and the
    shipped package verifies."""
    report = _generate(tmp_path, "tiny_loud_gemma", "auto")
    coreml = report.data["targets"]["coreml"]
    assert report.passed, coreml
    assert coreml["cause"] == "fp16-precision" and coreml["cause_op"].startswith("pow ")
    islands = coreml["fp32_islands"]
    assert islands["rel_l2_before"] >= 0.5 and islands["rel_l2_after"] < 1e-2  # fp16 was no near miss
    assert {"pow", "reduce_mean"} <= set(islands["types"].values()) and islands["share"]["ops"] < 0.5
    row = _mil_row(report)
    assert row["tokens_match"] and row["tolerance"]["rel_l2"] == 1e-2
    assert report.data["generation_prompt"]["min_relative_margin"] > 0.1  # logits far from uniform
    assert _verified(report)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["loud_gemma", "loud_gemma2", "loud_gemma3"])
def test_gemma_family_fp16_refused_auto_ships_islands(tmp_path, model):
    """Gemma (scaled table), Gemma 2 (soft-capping, four norms a layer) and Gemma 3 (q/k norms),
    residual streams beyond fp16's range: pure fp16 is refused with cause fp16-precision naming
    the op; auto passes tokens exact at the same tolerance and verifies."""
    fp16 = _generate(tmp_path, model, "fp16", max_context=48, decode_steps=16)
    coreml = fp16.data["targets"]["coreml"]
    assert not fp16.passed and coreml["cause"] == "fp16-precision" and coreml["cause_op"]
    report = _generate(tmp_path, model, "auto", max_context=48, decode_steps=16)
    coreml = report.data["targets"]["coreml"]
    assert report.passed, coreml
    row = _mil_row(report)
    assert row["tokens_match"] and row["tolerance"] == _mil_row(fp16)["tolerance"]
    assert coreml["fp32_ops"] and coreml["fp32_islands"]["share"]["ops"] < 0.5
    assert _verified(report)


@pytest.fixture
def broken_silu():
    """A deliberately wrong Core ML translation of aten::silu (sigmoid instead)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    def silu(context, node):
        context.add(mb.sigmoid(x=_get_inputs(context, node)[0], name=node.name))

    mapping = _TORCH_OPS_REGISTRY.name_to_func_mapping
    old = mapping["silu"]
    mapping["silu"] = silu
    yield
    mapping["silu"] = old


def test_generation_wrong_translation_is_conversion_with_its_op_not_precision(tmp_path, broken_silu):
    report = build(BuildConfig(model="tests.generation_models:tiny_llama", task="text-generation", targets=["coreml"],
                               max_context=16, decode_steps=4, out=str(tmp_path), precision="auto"))
    coreml = report.data["targets"]["coreml"]
    assert not report.passed and coreml["status"] == "disagrees"
    assert coreml["fp32_generation"]["passed"] is False and coreml["captured_generation"]["passed"] is True
    assert coreml["cause"] == "conversion" and coreml["cause_op"].startswith("sigmoid ")
    assert "fp32_islands" not in coreml and "--targets onnx" in coreml["hint"]
    assert _mil_row(report)["cause"] == "conversion" and "cause conversion" in _mil_row(report)["note"]


def test_generation_capture_difference_is_capture_not_precision(tmp_path):
    """Gemma 2 with a sliding window shorter than the generation: the cache wrapper's full causal
    mask attends beyond the window; the traced program, run in PyTorch, differs already."""
    report = _generate(tmp_path, "sliding_gemma2", "fp32", max_context=24, decode_steps=8)
    coreml = report.data["targets"]["coreml"]
    assert not report.passed and coreml["cause"] == "capture"
    assert coreml["captured_generation"]["passed"] is False and "torch.jit.trace" in coreml["capture_difference"]


def test_stateless_fallback_gets_fp32_islands_too(tmp_path, monkeypatch):
    from interop.errors import ExportError
    from interop.generation import export

    def refuse(*args, **kwargs):
        raise ExportError("the stateful Core ML conversion failed: (simulated)")

    monkeypatch.setattr(export, "convert_coreml", refuse)
    fp16 = _generate(tmp_path, "tiny_loud_gemma", "fp16")
    assert not fp16.passed and fp16.data["targets"]["coreml"]["cause"] == "fp16-precision"
    report = _generate(tmp_path, "tiny_loud_gemma", "auto")
    coreml = report.data["targets"]["coreml"]
    assert report.passed, coreml
    assert coreml["cache"] == "past/present" and coreml["fp32_ops"] and coreml["fp32_islands"]["passed"]
    assert _mil_row(report)["tokens_match"]
    from interop.runtimes import mil

    loaded = mil.load_model(coreml["path"])
    assert not loaded.is_stateful() and "pow" in coreml["fp32_islands"]["types"].values()


def test_check_hints_precision_auto_for_a_predicted_fp16_overflow():
    from interop.commands.check import check_model

    model = dict(model="tests.fixtures.models:explodes", inputs=["x:2x4:float32:1..3"], targets=["coreml"])
    fp16 = check_model(BuildConfig(precision="fp16", **model))
    assert fp16["would_fail"] and fp16["hints"] == [fp16["fp16_overflow"]["hint"]]
    assert "fp16 overflow likely at aten::mul" in fp16["hints"][0] and "--precision auto" in fp16["hints"][0]
    auto = check_model(BuildConfig(precision="auto", **model))
    assert not auto["would_fail"] and "fp32 islands" in auto["hints"][0]
    fp32 = check_model(BuildConfig(precision="fp32", **model))
    assert "hints" not in fp32


def test_verify_of_a_generation_report_attributes_a_disagreement(tmp_path, request):
    """`interop verify`: a shipped stateful package replaced by one a broken converter wrote gets
    cause conversion naming its op (the build's own cause keys are not carried over)."""
    import shutil

    from interop.commands.verify import verify_report
    from interop.generation.export import convert_coreml
    from tests.generation_models import tiny_llama

    report = build(BuildConfig(model="tests.generation_models:tiny_llama", task="text-generation", targets=["coreml"],
                               max_context=16, decode_steps=4, out=str(tmp_path)))
    assert report.passed
    package = Path(report.data["targets"]["coreml"]["path"])
    request.getfixturevalue("broken_silu")
    shutil.rmtree(package)
    convert_coreml(tiny_llama(), package, 16, "fp16")
    replay = verify_report(str(tmp_path / "tiny_llama.report.json"), trust=True)
    coreml = replay.data["targets"]["coreml"]
    assert not replay.passed and coreml["cause"] == "conversion" and coreml["cause_op"].startswith("sigmoid ")
