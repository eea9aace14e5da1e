"""Tiny causal LMs (transformers configs, random weights, no download) for the generation tests:
2 layers, hidden 64, weights drawn 10x wider than transformers' default (initializer_range 0.2):
at 0.02 attention is near-uniform and a cache fed at the wrong positions still passes. ``qwen2_05b_like`` is Qwen2-0.5B's geometry (hidden 896, 24 layers) with
random weights, for the scale test and the benchmark."""

from __future__ import annotations

VOCAB = 256


def _seeded(make):
    import torch

    torch.manual_seed(0)
    return make().eval()


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return _seeded(lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.2)))


def tiny_llama_narrow():
    """tiny_llama with weights drawn 5x (not 10x) wider than transformers' default: the int8
    variants' test model. At 0.2 the tiny Llama's int8 logits measure ~31 dB PSNR at their worst
    step (below the 35 dB gate, tokens matching up to near-ties); at 0.1, 38-40 dB."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return _seeded(lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.1)))


def tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _seeded(lambda: Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.2)))


def tiny_mistral():
    from transformers import MistralConfig, MistralForCausalLM

    return _seeded(lambda: MistralForCausalLM(MistralConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, sliding_window=None, initializer_range=0.2)))


def tiny_phi3():
    from transformers import Phi3Config, Phi3ForCausalLM

    return _seeded(lambda: Phi3ForCausalLM(Phi3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=1024, pad_token_id=0, initializer_range=0.2)))


def tiny_gemma():
    from transformers import GemmaConfig, GemmaForCausalLM

    return _seeded(lambda: GemmaForCausalLM(GemmaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=1024, initializer_range=0.2)))


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return _seeded(lambda: GPT2LMHeadModel(GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=1024, bos_token_id=0, eos_token_id=0, initializer_range=0.2)))


def qwen2_05b_like():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _seeded(lambda: Qwen2ForCausalLM(Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True)))


def not_a_language_model():
    import torch

    return torch.nn.Linear(4, 2)
