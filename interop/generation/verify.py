"""Run the built artifacts' generation in every runtime available here and compare with PyTorch
(``compare``: ``check.compare_generation`` for the base artifacts; a compressed variant passes its
gate's comparison, :func:`interop.variants.generation.gated`)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from .check import compare_generation, not_executed
from .runs import onnx_run, stateful_run, stateless_run, torch_reference, weights_kept_widened
from .wrappers import cache_geometry

SHORTER_BY = 3
"""The second prompt of the ONNX batch is this much shorter, left-padded."""


def verify_onnx(path: Path, model: Any, prompt: np.ndarray, ref: tuple, seed: int,
                compare: Any = compare_generation) -> list[dict[str, Any]]:
    """ONNX Runtime: the chosen prompt alone, then a batch of two prompts of different lengths."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    layers = cache_geometry(model)["layers"]
    tokens, logits = ref
    steps = len(tokens) - 1
    got = onnx_run(session, layers, prompt, np.ones_like(prompt), tokens)
    entries = [compare("onnx", "onnxruntime", "prompt", tokens, logits, got, "fp32")]
    batch, mask = left_padded_batch(prompt, seed)
    batch_tokens, batch_logits = torch_reference(model, batch, mask, steps)
    got = onnx_run(session, layers, batch, mask, batch_tokens)
    entries.append(compare("onnx", "onnxruntime", "batch=2 left-padded", batch_tokens, batch_logits,
                                      got, "fp32"))
    return entries


def left_padded_batch(prompt: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The prompt and a shorter, different one, left-padded to the same length."""
    length = prompt.shape[1]
    other = np.roll(prompt[0], 1)[: length - SHORTER_BY]
    batch = np.zeros((2, length), np.int64)
    mask = np.zeros((2, length), np.int64)
    batch[0], mask[0] = prompt[0], 1
    batch[1, SHORTER_BY:], mask[1, SHORTER_BY:] = other, 1
    return batch, mask


def verify_coreml(path: Path, prompt: np.ndarray, ref: tuple, precision: str,
                  compare: Any = compare_generation) -> list[dict[str, Any]]:
    """The stateful package in the reference runtime (one state across the generation); on macOS
    in Core ML as well."""
    from interop.runtimes import mil
    from interop.targets.coreml.precision import compute_precision

    precision = compute_precision(precision)  # auto: an fp16 package (with or without fp32 islands)
    tokens, logits = ref
    mask_dtype = np.float16 if precision == "fp16" else np.float32
    loaded = mil.load_model(path)
    with weights_kept_widened(path):
        if loaded.is_stateful():
            got = stateful_run(lambda feeds, state: loaded.predict(feeds, state=state), loaded.make_state,
                               prompt, tokens, mask_dtype)
        else:
            got = stateless_package_run(loaded.predict, loaded, prompt, tokens, mask_dtype)
    # Core ML states are fp16 only: the stateful form is held to fp16 tolerances at any --precision
    held_to = "fp16" if loaded.is_stateful() else precision
    entries = [compare("coreml", "interop-mil", "prompt", tokens, logits, got, held_to)]
    if platform.system() != "Darwin":
        entries.append(not_executed("coreml", "coreml", "Core ML runs on macOS only"))
        return entries
    try:
        import coremltools as ct

        ml = ct.models.MLModel(str(path))
        if loaded.is_stateful():
            got = stateful_run(lambda feeds, state: ml.predict(feeds, state=state), ml.make_state,
                               prompt, tokens, mask_dtype)
        else:
            got = stateless_package_run(ml.predict, loaded, prompt, tokens, mask_dtype)
        entries.append(compare("coreml", "coreml", "prompt", tokens, logits, got, held_to))
    except Exception as exc:  # Core ML refused to load or predict: say so, never a pass
        entries.append(not_executed("coreml", "coreml", f"{type(exc).__name__}: {exc}"[:300]))
    return entries


def stateless_package_run(predict: Any, loaded: Any, prompt: np.ndarray, tokens: np.ndarray, dtype: Any) -> list:
    """The stateless form's run; its cache geometry read from the package's first past input."""
    return stateless_run(predict, *stateless_geometry(loaded), prompt, tokens, dtype)


def stateless_geometry(loaded: Any) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of a stateless package, from its first past input."""
    main = loaded.program.functions["main"]
    pasts = [n for n in main.inputs if n.startswith("past_key_values_")]
    shape = main.inputs[pasts[0]].shape
    return len(pasts) // 2, int(shape[1]), int(shape[3])
