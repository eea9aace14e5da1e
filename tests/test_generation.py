"""--task text-generation: tiny causal LMs (transformers configs, random weights) build the
past/present ONNX model and the stateful Core ML package, and generate PyTorch's greedy tokens
for 16 steps in ONNX Runtime and in the reference runtime (with state)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from interop import BuildConfig, build
from interop.errors import SpecError

FAST = ["tiny_llama", "tiny_gpt2"]
SLOW = ["tiny_qwen2", "tiny_mistral", "tiny_phi3", "tiny_gemma"]


def _build(name, out, **kw):
    return build(BuildConfig(model=f"tests.generation_models:{name}", out=str(out), max_context=48, **kw))


def _check_report(report, out, name):
    assert report.passed, (report.data["targets"], report.data["generation"])
    rows = {(g["runtime"], g["case"]): g for g in report.data["generation"]}
    for key in (("onnxruntime", "prompt"), ("onnxruntime", "batch=2 left-padded"), ("interop-mil", "prompt")):
        g = rows[key]
        assert g["steps"] == 16 and g["tokens_compared"] == 17 and g["tokens_match"] and g["passed"], g
        assert g["first_divergent_step"] is None
    assert not report.data["generation_prompt"]["near_uniform"]
    model = onnx.load(str(out / f"{name}.onnx"), load_external_data=False)
    names = [i.name for i in model.graph.input]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"] and "past_key_values.1.value" in names
    past = next(i for i in model.graph.input if i.name == "past_key_values.0.key")
    assert [d.dim_param for d in past.type.tensor_type.shape.dim][::2] == ["batch_size", "past_sequence_length"]
    assert [o.name for o in model.graph.output][:3] == ["logits", "present.0.key", "present.0.value"]
    genai = json.loads((out / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["filename"] == f"{name}.onnx"
    assert report.data["targets"]["coreml"]["states"] == ["key_cache", "value_cache"]


@pytest.mark.parametrize("name", FAST + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_tiny_causal_lm_generates_pytorchs_tokens_in_both_forms(tmp_path, name):
    report = _build(name, tmp_path)
    _check_report(report, tmp_path, name)


def test_verify_replays_the_generation_check_and_catches_a_swapped_artifact(tmp_path):
    from interop.commands.verify import verify_report

    report = _build("tiny_llama", tmp_path, targets=["onnx"])
    assert report.passed
    replay = verify_report(str(tmp_path / "tiny_llama.report.json"), trust=True)  # a MODULE:FN source
    assert replay.passed and {g["runtime"] for g in replay.data["generation"]} == {"onnxruntime"}
    path = tmp_path / "tiny_llama.onnx"  # edited since the build: one weight matrix scaled
    model = onnx.load(str(path))
    weight = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(model, str(path))
    replay = verify_report(str(tmp_path / "tiny_llama.report.json"), trust=True)  # a MODULE:FN source
    assert not replay.passed and replay.data["targets"]["onnx"]["status"] == "disagrees"


def test_state_written_one_position_off_is_caught(tmp_path):
    from interop.generation.check import choose_prompt
    from interop.generation.export import convert_coreml
    from interop.generation.verify import verify_coreml
    from tests.generation_models import VOCAB, tiny_llama

    model = tiny_llama()
    prompt, _, ref = choose_prompt(model, VOCAB, 4, seed=0)
    path = tmp_path / "broken.mlpackage"  # (the same conversion without the offset passes: tests above)
    convert_coreml(model, path, 16, "fp16", write_offset=1)
    broken = verify_coreml(path, prompt, ref, "fp16")[0]
    assert not broken["passed"] and broken["steps_out_of_tolerance"][:1] == [0], broken


def test_a_flip_at_a_near_tie_is_reported_and_passes_any_other_fails():
    from interop.generation.check import compare_generation

    ref = [np.array([[1.0, 0.999, -1.0]]), np.array([[2.0, -2.0, 0.0]])]
    tokens = np.array([[0], [0]])
    tie = [np.array([[0.9995, 1.0, -1.0]]), ref[1]]  # flips step 0, where the margin is 1e-3
    g = compare_generation("coreml", "interop-mil", "prompt", tokens, ref, tie, "fp16")
    assert g["passed"] and not g["tokens_match"] and g["first_divergent_step"] == 0 and g["near_tie_flips"] == 1
    flip = [ref[0], np.array([[-2.0, 2.0, 0.0]])]
    g = compare_generation("coreml", "interop-mil", "prompt", tokens, ref, flip, "fp16")
    assert not g["passed"] and g["first_divergent_step"] == 1 and g["margin_at_divergence"] == 2.0


def test_task_text_generation_on_a_model_that_is_not_a_causal_lm_is_bad_input(tmp_path):
    with pytest.raises(SpecError, match="not a causal language model"):
        build(BuildConfig(model="tests.generation_models:not_a_language_model", out=str(tmp_path),
                          task="text-generation"))
    with pytest.raises(SpecError, match="max-context"):
        _build("tiny_llama", tmp_path, decode_steps=100)


RSS_BOUND = {"onnx": 3.0, "coreml": 4.5}
"""Peak RSS (ru_maxrss, the whole process) of a Qwen2-0.5B-sized build, in multiples of its fp32
weights (494M parameters, 1.84 GiB). Measured: ONNX 2.56x (4.72 GiB); stateful Core ML 4.03x
(7.42 GiB) -- above the 3x goal (coremltools' conversion holds further copies of the weights);
see docs/generation.md."""


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "coreml"])
def test_qwen2_05b_sized_model_builds_within_a_bound_of_its_fp32_weights(tmp_path, target):
    """Qwen2-0.5B's geometry (hidden 896, 24 layers, random weights): the artifact is built and
    generates PyTorch's tokens; the build's peak RSS stays within RSS_BOUND x the fp32 weights."""
    import subprocess
    import sys

    script = (
        "import json, resource\n"
        "from interop import build, BuildConfig\n"
        f"r = build(BuildConfig(model='tests.generation_models:qwen2_05b_like', out={str(tmp_path)!r}, "
        f"decode_steps=4, targets=[{target!r}]))\n"
        "print(json.dumps({'passed': r.passed, 'parameters': r.data['model']['parameters'],\n"
        "                  'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,\n"
        "                  'generation': r.data['generation'], 'targets': r.data['targets']}, default=str))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=3600,
                          cwd=str(Path(__file__).resolve().parents[1]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["passed"], (result["targets"], result["generation"])
    weights = 4 * result["parameters"]
    assert result["rss"] <= RSS_BOUND[target] * weights, \
        f"peak RSS {result['rss'] / 2**30:.2f} GiB vs fp32 weights {weights / 2**30:.2f} GiB"


def test_a_model_that_cannot_be_made_stateful_ships_the_stateless_core_ml_form(tmp_path, monkeypatch):
    from interop.errors import ExportError
    from interop.generation import export

    def refuse(*args, **kwargs):
        raise ExportError("the stateful Core ML conversion failed: (simulated)")

    monkeypatch.setattr(export, "convert_coreml", refuse)
    report = _build("tiny_llama", tmp_path, targets=["coreml"], decode_steps=8)
    assert report.passed, report.data["generation"]
    entry = report.data["targets"]["coreml"]
    assert entry["cache"] == "past/present" and "simulated" in entry["stateful_error"]
    assert any("cannot be made stateful" in w for w in report.data["warnings"])
    g = next(g for g in report.data["generation"] if g["runtime"] == "interop-mil")
    assert g["tokens_match"] and g["steps"] == 8
