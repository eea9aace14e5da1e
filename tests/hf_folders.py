"""Hugging Face model folders written by transformers' own ``save_pretrained`` from small configs
(seeded random weights, no download), and a byte-level BPE tokenizer trained with ``tokenizers``
on a few sentences. Weights are drawn wider than transformers' default (initializer_range 0.2)
so outputs vary with the input (at 0.02 logits are near-uniform and prove little)."""

from __future__ import annotations

import json
from pathlib import Path

SENTENCES = ["the quick brown fox jumps over the lazy dog", "hello world, this is a small test",
             "models run on phones and in browsers", "interop builds onnx and core ml from one model"]
EOS = "<|endoftext|>"


def train_tokenizer(folder: Path, vocab_size: int = 300):
    """A byte-level BPE tokenizer saved into ``folder`` (tokenizer.json + tokenizer_config.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 8, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS)
    fast.save_pretrained(str(folder))
    return fast


def _save(model, folder: Path, **kwargs) -> Path:
    model.eval().save_pretrained(str(folder), **kwargs)
    return folder


def _seed():
    import torch

    torch.manual_seed(0)


def gpt2_sharded(folder: Path) -> Path:
    """GPT-2 with its tokenizer, weights in several safetensors shards (+ index)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = train_tokenizer(folder)
    _seed()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=256,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                       initializer_range=0.2))
    _save(model, folder, max_shard_size="100KB")
    return folder


def llama_with_tokenizer(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer(folder)
    _seed()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id, initializer_range=0.2))
    return _save(model, folder)


def _bert_config(**extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=128, initializer_range=0.2, **extra)


LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def bert_classifier(folder: Path) -> Path:
    from transformers import BertForSequenceClassification

    _seed()
    model = BertForSequenceClassification(_bert_config(num_labels=3, id2label=LABELS,
                                                       label2id={v: k for k, v in LABELS.items()}))
    return _save(model, folder)


def bert_token_classifier(folder: Path) -> Path:
    from transformers import BertForTokenClassification

    _seed()
    return _save(BertForTokenClassification(_bert_config(num_labels=5)), folder)


def bert_base_bin(folder: Path) -> Path:
    """A base model (feature extraction) saved as ``pytorch_model.bin`` (torch.save of its state_dict)."""
    import torch
    from transformers import BertModel

    _seed()
    model = BertModel(_bert_config()).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(folder))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


IMAGE_LABELS = {0: "cat", 1: "dog", 2: "bird", 3: "fish"}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def vit_classifier(folder: Path) -> Path:
    """ViT image classifier + an image processor config (resize 32, rescale 1/255, ImageNet mean/std)."""
    from transformers import ViTConfig, ViTForImageClassification

    _seed()
    model = ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=4, id2label=IMAGE_LABELS, label2id={v: k for k, v in IMAGE_LABELS.items()},
        initializer_range=0.2))
    _save(model, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": MEAN, "image_std": STD,
        "image_processor_type": "ViTImageProcessor", "resample": 2, "rescale_factor": 1 / 255,
        "size": {"height": 32, "width": 32}}))
    return folder


def auto_map_folder(folder: Path, marker: Path) -> Path:
    """A folder whose config names custom modelling code (``auto_map``) that, when imported,
    creates ``marker``: proof of whether the code ran."""
    from transformers import BertForSequenceClassification

    _seed()
    _save(BertForSequenceClassification(_bert_config(num_labels=2)), folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    config["architectures"] = ["EvilModel"]
    config["model_type"] = "evil"
    (folder / "config.json").write_text(json.dumps(config))
    code = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    (folder / "configuration_evil.py").write_text(code + (
        "from transformers import BertConfig\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evil'\n"))
    (folder / "modeling_evil.py").write_text(code + (
        "from transformers import BertForSequenceClassification\n"
        "from .configuration_evil import EvilConfig\n"
        "class EvilModel(BertForSequenceClassification):\n    config_class = EvilConfig\n"))
    return folder


DECODERS = {
    # family: (config class, model class, extra config) -- tiny, grouped-query attention where the family has it
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": 0}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 32}),  # head_dim * heads != hidden
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"head_dim": 16, "sliding_window": 4096,
               "tie_word_embeddings": False}),  # tied, its greedy tokens barely vary (Gemma covers tying)
    "granite": ("GraniteConfig", "GraniteForCausalLM", {}),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", {}),
}


def decoder_folder(folder: Path, family: str) -> Path:
    """A tiny causal LM of ``family`` (a key of :data:`DECODERS`) with its tokenizer, save_pretrained."""
    import transformers

    config_name, model_name, extra = DECODERS[family]
    tok = train_tokenizer(folder)
    _seed()
    settings = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.2)
    config = getattr(transformers, config_name)(**{**settings, **extra})
    return _save(getattr(transformers, model_name)(config), folder)
