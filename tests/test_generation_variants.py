"""--compress int8 on --task text-generation: the int8 variants of the KV-cache ONNX model and of
the stateful Core ML package, judged by greedy generation against PyTorch fp32 (tokens and the
per-step logits PSNR gate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interop import BuildConfig, build
from interop.errors import SpecError

KEYS = ("target", "variant", "path", "bytes", "ratio", "psnr_db", "cosine", "top1", "gate", "passed", "where",
        "tokens_match", "first_divergent_step")


def _build(out, **kw):
    return build(BuildConfig(model="tests.generation_models:tiny_llama_narrow", out=str(out), max_context=48,
                             compress=["int8"], **kw))


def test_int8_variants_of_a_causal_lm_generate_pytorchs_tokens_on_both_targets(tmp_path):
    report = _build(tmp_path)
    assert report.passed, report.data["variants"]
    rows = {r["target"]: r for r in report.data["variants"]}
    assert set(rows) == {"onnx", "coreml"}
    for target, suffix in (("onnx", ".onnx"), ("coreml", ".mlpackage")):
        r = rows[target]
        assert all(k in r for k in KEYS), r
        assert r["passed"] and r["shipped"] and r["tokens_match"] and r["first_divergent_step"] is None, r
        assert r["psnr_db"] >= 35 and r["cosine"] >= 0.99 and r["top1"] == 1.0 and 0 < r["ratio"] < 1, r
        assert r["path"].endswith(f"tiny_llama_narrow.int8{suffix}") and (tmp_path / f"tiny_llama_narrow.int8{suffix}").exists()
        executed = [g for g in r["generation"] if g["passed"] is not None]
        assert executed and all(g["steps"] == 16 and g["tokens_compared"] == 17 for g in executed)
    assert {g["case"] for g in rows["onnx"]["generation"]} == {"prompt", "batch=2 left-padded"}
    saved = json.loads((tmp_path / "tiny_llama_narrow.report.json").read_text())
    assert [r["variant"] for r in saved["variants"]] == ["int8", "int8"] and saved["gates"]["int8"]["psnr"] == 35
    assert "Compressed variants" in (tmp_path / "tiny_llama_narrow.report.md").read_text()


def test_a_broken_int8_variant_is_rejected_naming_the_first_divergent_step(tmp_path, monkeypatch):
    import onnx

    from interop.variants import get

    variant = get("onnx", "int8")
    original = variant.make

    def zero_a_layer(base, out, vctx):  # layer 1's MLP down projection: its int8 scales zeroed
        info = original(base, out, vctx)
        model = onnx.load(str(out))
        node = [n for n in model.graph.node if n.op_type == "MatMulNBits"][-2]
        scales = next(t for t in model.graph.initializer if t.name == node.input[2])
        scales.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(onnx.numpy_helper.to_array(scales)), scales.name))
        onnx.save(model, str(out))
        return info

    monkeypatch.setattr(variant, "make", zero_a_layer)
    report = _build(tmp_path, targets=["onnx"], keep_failed=True)
    assert not report.passed and report.data["targets"]["onnx"]["shipped"]  # the base still ships
    (row,) = report.data["variants"]
    assert row["passed"] is False and not row["shipped"] and row["tokens_match"] is False
    step = row["first_divergent_step"]
    assert step is not None and f"step {step}" in row["where"] and "first divergent token" in row["where"], row
    assert "token flip" in row["error"]
    assert (tmp_path / "tiny_llama_narrow.onnx").exists() and (tmp_path / "tiny_llama_narrow.int8.FAILED.onnx").exists()
    assert not (tmp_path / "tiny_llama_narrow.int8.onnx").exists()


def test_a_near_tie_flip_within_the_gate_is_reported_and_passes_any_other_fails():
    from interop.variants.gates import gate_for
    from interop.variants.generation import compare_variant

    rng = np.random.default_rng(0)
    ref = [rng.uniform(-3, 3, (1, 100)) for _ in range(3)]
    for step in ref:  # token 0 wins by 0.01 (a near-tie at the 35 dB gate), token 1 by 0.5
        step[0, :2] = [4.0, 3.99]
    ref[2][0, :2] = [4.0, 3.5]
    tokens = np.array([[0], [0], [0]])
    swapped = [s.copy() for s in ref]
    swapped[1][0, :2] = [3.99, 4.0]  # a flip at the near-tie: reported, passes
    g = compare_variant("onnx", "onnxruntime", "prompt", tokens, ref, swapped, gate_for("int8"))
    assert g["passed"] and not g["tokens_match"] and g["near_tie_flips"] == 1 and g["first_divergent_step"] == 1
    swapped[2][0, :2] = [3.7, 3.8]  # a flip past the gate's error, its logits still >= 35 dB: fails
    g = compare_variant("onnx", "onnxruntime", "prompt", tokens, ref, swapped, gate_for("int8"))
    assert g["psnr_db"] >= 35 and not g["passed"] and g["first_divergent_step"] == 1, g
    assert g["where"] == "decode step 1: first divergent token" and "2 token flip(s), 1 at a near-tie" in g["note"]


def test_a_variant_generation_models_do_not_support_is_bad_input(tmp_path):
    with pytest.raises(SpecError, match="not available with --task text-generation") as caught:
        build(BuildConfig(model="tests.generation_models:tiny_llama", out=str(tmp_path), max_context=48,
                          task="text-generation", compress=["int8", "int4"]))
    assert "--compress int8" in caught.value.hint and "int4" in str(caught.value)
    assert not any(tmp_path.iterdir())
