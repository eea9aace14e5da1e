"""What onnxruntime-genai needs of the LM folder beyond the ONNX model: the ``type`` its strict
config parser accepts for the past/present (Optimum) layout, and the tokenizer files beside it.

onnxruntime-genai picks its model class by ``model.type``. Most decoder types (llama, mistral,
qwen2, phi3, gemma, ...) run a decoder with one ``past_key_values.N.key`` / ``.value`` pair per
layer, the layout interop exports. Its ``gpt2`` type instead expects one combined ``past_N``
tensor per layer (its own builder's layout) and fails on interop's model with "Model input was
not found: " (an empty combined-cache name). So a model type genai knows with the split layout is
kept; any other (gpt2, or a type genai does not know) is written as ``llama``, genai's generic
decoder, which only reads the names and geometry the config spells out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPLIT_CACHE_TYPES = frozenset({"gemma", "gemma2", "granite", "llama", "mistral", "olmo", "phi3", "qwen2", "qwen3",
                               "smollm3"})
"""onnxruntime-genai 0.18 model types whose decoder takes the per-layer key/value inputs."""
GENERIC = "llama"


def genai_type(model_type: str | None) -> str:
    """The ``model.type`` to write for a transformers ``model_type``."""
    kind = (model_type or "").lower()
    return kind if kind in SPLIT_CACHE_TYPES else GENERIC


def ship_lm_folder(source: Any, work: Path, out_folder: Path, report: Any) -> None:
    """The source folder's ``config.json``, ``generation_config.json`` and tokenizer files beside the
    ONNX model (og.Tokenizer reads ``tokenizer.json`` + ``tokenizer_config.json``; Optimum's
    ORTModelForCausalLM needs ``config.json``)."""
    from interop.sources.hf_folder import ship_folder_files
    from interop import targets

    ship_folder_files(source, work, out_folder, report)
    card = getattr(source, "card", None) or {}
    known = targets.registered()
    for name, path in report.artifacts.items():
        if card and name in known and report.data["targets"].get(name, {}).get("status") == "ok":
            known[name].write_card(Path(path), card)  # the generation export writes neither field
