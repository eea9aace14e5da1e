"""Hugging Face folders (written here by ``save_pretrained``, never downloaded) build with no flags
and no ``--trust``; nothing in a folder runs; the LM folder loads in the real onnxruntime-genai with
its tokenizer and generates PyTorch's greedy tokens."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from interop.cli import app
from tests import hf_folders

runner = CliRunner()


def build(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["build", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    made = {}
    for name in ("bert_classifier", "gpt2_sharded", "llama_with_tokenizer"):
        made[name] = getattr(hf_folders, name)(root / name)
    (made["bert_classifier"] / "README.md").write_text(CARD)
    (made["llama_with_tokenizer"] / "README.md").write_text("---\nlicense: mit\n---\nA tiny llama.\n")
    return made


CARD = "---\nlicense: apache-2.0\ntags: [test]\n---\n# Sentiment\n\nA tiny BERT that labels sentiment.\n"


def test_classifier_folder_builds_with_its_labels(folders, tmp_path):
    folder = folders["bert_classifier"]
    code, report = build(str(folder), "--out", str(tmp_path))
    assert code == 0, report
    assert report["model"]["format"] == "huggingface"
    assert [i["name"] for i in report["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert report["inputs"][1]["kind"] == "mask"
    assert report["settings"]["labels"] is None  # no flag: the labels came from config.json
    onnx_cases = {r["case"] for r in report["agreement"] if r["target"] == "onnx"}
    assert any("batch" in c for c in onnx_cases) and any("sequence" in c for c in onnx_cases), onnx_cases
    import onnx

    from interop.runtimes import mil

    feed = {n: np.ones((1, 8), np.int32) for n in ("input_ids", "attention_mask", "token_type_ids")}
    out = mil.load_model(tmp_path / "model.mlpackage").predict(feed)
    assert list(out["classLabelProbs"]) == list(hf_folders.LABELS.values())  # id2label, in id order
    assert out["classLabel"] in hf_folders.LABELS.values()
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(meta["interop.labels"]) == list(hf_folders.LABELS.values())
    assert (tmp_path / "config.json").is_file()  # the ONNX folder is a model folder for Optimum too
    # the model card's license and description, with no flag, in both artifacts
    assert meta["license"] == "apache-2.0" and meta["description"] == "A tiny BERT that labels sentiment."
    import coremltools as ct

    package = ct.models.MLModel(str(tmp_path / "model.mlpackage"), skip_model_load=True)
    assert (package.license, package.short_description) == ("apache-2.0", "A tiny BERT that labels sentiment.")
    # Optimum's ORTModelForSequenceClassification reads `logits`: the model's own, beside classLabelProbs
    import onnxruntime as ort
    import torch
    from transformers import BertForSequenceClassification

    sess = ort.InferenceSession(str(tmp_path / "model.onnx"))
    assert [o.name for o in sess.get_outputs()] == ["classLabelProbs", "logits"]
    ids = np.random.default_rng(0).integers(0, 300, (2, 10)).astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    probs, logits = sess.run(None, feed)
    with torch.no_grad():
        want = BertForSequenceClassification.from_pretrained(str(folder)).eval()(
            **{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(want), -1).numpy(), atol=1e-5)


def _og_generate(folder: Path, prompt: list[int], steps: int) -> list[int]:
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + steps, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(np.asarray([prompt], np.int32))
    tokens = []
    while not gen.is_done():
        gen.generate_next_token()
        tokens.append(int(gen.get_next_tokens()[0]))
    return tokens


@pytest.mark.parametrize("name", ["gpt2_sharded", "llama_with_tokenizer"])
def test_lm_folder_generates_in_onnxruntime_genai(folders, tmp_path, name):
    """The real consumer: og.Model(folder) + og.Tokenizer + og.Generator, tokens equal to
    transformers' greedy tokens (GPT-2 failed with 'Model input was not found: ' before)."""
    _genai_matches_transformers(folders[name], tmp_path)


SLOW_FAMILIES = ["mistral", "phi3", "gemma", "gemma2", "qwen3", "granite", "olmo"]


@pytest.mark.parametrize("family", ["qwen2", *[pytest.param(f, marks=pytest.mark.slow) for f in SLOW_FAMILIES]])
def test_decoder_family_folder_generates_in_onnxruntime_genai(tmp_path, family):
    """Every decoder family transformers builds from a tiny config and genai 0.18 runs, from its
    save_pretrained folder: genai's greedy tokens are transformers' (Gemma: head_dim * heads !=
    hidden and tied, scaled embeddings; Gemma2: soft-capping; Qwen3: q/k norms; Phi3: fused qkv)."""
    _genai_matches_transformers(hf_folders.decoder_folder(tmp_path / family, family), tmp_path / "out")


def _genai_matches_transformers(folder: Path, tmp_path: Path) -> None:
    import onnxruntime_genai as og
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    code, report = build(str(folder), "--out", str(tmp_path), "--targets", "onnx")
    assert code == 0, report
    assert {"model.onnx", "genai_config.json", "tokenizer.json", "tokenizer_config.json", "config.json"} <= \
        set(os.listdir(tmp_path))
    text = "the quick brown fox jumps"
    tokenizer = og.Tokenizer(og.Model(str(tmp_path)))
    prompt = [int(t) for t in tokenizer.encode(text)]
    assert prompt == AutoTokenizer.from_pretrained(str(folder))(text)["input_ids"]
    steps = 12
    got = _og_generate(tmp_path, prompt, steps)
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    ref = ref[0, len(prompt):].tolist()
    assert got == ref[:len(got)] and len(got) >= steps // 2, (got, ref)
    assert len(set(ref)) > 2, "the greedy tokens barely vary: the check would prove little"
    if (folder / "README.md").is_file():  # the model card's license reaches the generation build's ONNX too
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
        assert meta["license"] == "mit" and meta["description"] == "A tiny llama."


def test_encoder_decoder_folder_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "whisper"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["WhisperForConditionalGeneration"],
                                                    "model_type": "whisper", "is_encoder_decoder": True}))
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    report = _refused(folder, tmp_path / "out", "encoder-decoder", "whisper", "causal LMs")
    assert "\n" not in report["error"]["message"]


def test_model_card_metadata(tmp_path):
    from interop.sources.hf_ship import card_metadata

    (tmp_path / "README.md").write_text("---\nlicense: [mit, apache-2.0]\n---\n# T\n\n![b](x)\n\nFirst words.\nMore.\n")
    assert card_metadata(tmp_path, {}) == {"license": "mit, apache-2.0", "description": "First words. More."}
    (tmp_path / "README.md").write_text("---\n: [unclosed\n---\n")  # a broken card is no metadata, not an error
    assert card_metadata(tmp_path, {"license": "bsd"}) == {"license": "bsd"}
    (tmp_path / "README.md").unlink()
    os.mkfifo(tmp_path / "README.md")  # never opened
    assert card_metadata(tmp_path, {}) == {}


# ---- hostile folders: one line, exit 2, nothing ran, nothing written --------------------------------

def _refused(folder: Path, out: Path, *words: str) -> dict:
    code, report = build(str(folder), "--out", str(out))
    assert code == 2, report
    message = report["error"]["message"]
    assert all(w in message for w in words), message
    assert not [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else True
    return report


def test_auto_map_is_refused_without_trust_and_runs_only_with_it(tmp_path):
    marker = tmp_path / "MARKER"
    folder = hf_folders.auto_map_folder(tmp_path / "custom", marker)
    out = tmp_path / "out"
    _refused(folder, out, "auto_map")
    assert not marker.exists()
    code, report = build(str(folder), "--out", str(out), "--trust", "--targets", "onnx")
    assert marker.exists(), "the marker proves --trust is what let the folder's code run"
    assert report["model"]["format"] == "huggingface-remote-code"


class _Boom:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_in_pytorch_model_bin_is_refused(tmp_path):
    import torch

    marker = tmp_path / "MARKER"
    folder = hf_folders.bert_base_bin(tmp_path / "bin")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["evil"] = _Boom(str(marker))
    with open(folder / "pytorch_model.bin", "wb") as fh:
        torch.save(state, fh, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    _refused(folder, tmp_path / "out", "pickle", "system")
    assert not marker.exists()


def _config_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    return folder


def test_config_that_is_a_fifo_is_refused_without_reading(tmp_path):
    folder = _config_folder(tmp_path)
    os.mkfifo(folder / "config.json")  # opening it for reading would block forever
    _refused(folder, tmp_path / "out", "config.json", "FIFO")


def test_huge_config_is_refused(tmp_path):
    folder = _config_folder(tmp_path)
    with open(folder / "config.json", "wb") as fh:
        fh.truncate(64 << 20)  # sparse: 64 MB of nothing, no disk used
    _refused(folder, tmp_path / "out", "config.json", "bytes")


def test_deep_config_is_refused(tmp_path):
    folder = _config_folder(tmp_path)
    (folder / "config.json").write_text('{"a": ' + "[" * 100000 + "]" * 100000 + "}")
    _refused(folder, tmp_path / "out", "nested")


def test_unknown_architecture_and_missing_weights(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["os.system"], "model_type": "bert"}))
    _refused(folder, tmp_path / "out", "weights")
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    _refused(folder, tmp_path / "out", "does not ship")


def test_shard_outside_the_folder_is_refused(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../../etc/passwd"}}))
    _refused(folder, tmp_path / "out", "passwd")


# ---- the other kinds (slow: each is a full two-target build) ------------------------------------------

@pytest.mark.slow
def test_image_classifier_folder_gets_an_image_input(tmp_path):
    import coremltools as ct

    folder = hf_folders.vit_classifier(tmp_path / "vit")
    code, report = build(str(folder), "--out", str(tmp_path / "out"))
    assert code == 0, report
    spec = ct.models.MLModel(str(tmp_path / "out" / "model.mlpackage"), skip_model_load=True).get_spec()
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    assert spec.description.predictedFeatureName == "classLabel"
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "out" / "model.onnx")).metadata_props}
    assert json.loads(meta["interop.image"])["mean"] == hf_folders.MEAN
    assert json.loads(meta["interop.labels"]) == list(hf_folders.IMAGE_LABELS.values())


@pytest.mark.slow
@pytest.mark.parametrize("name, outputs", [("bert_token_classifier", ["logits"]),
                                           ("bert_base_bin", ["last_hidden_state", "pooler_output"])])
def test_token_classifier_and_base_model_from_bin(tmp_path, name, outputs):
    folder = getattr(hf_folders, name)(tmp_path / name)
    code, report = build(str(folder), "--out", str(tmp_path / "out"))
    assert code == 0, report
    assert [o["name"] for o in report["outputs"]] == outputs
    assert all(r["passed"] for r in report["agreement"])
