"""Greedy generation in each runtime: PyTorch with its own cache (the reference), ONNX Runtime
with present fed back as past, and the stateful Core ML package in the reference runtime (one
state across calls).

The reference generates freely; the artifacts are *teacher-forced* on the reference's tokens, so
every step's logits are comparable even after a flip, and a runtime's own greedy choice at each
step is its argmax there. Each run returns the last position's logits per step: a list of
``(batch, vocab)`` float64 arrays, step 0 being the prefill.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def positions(mask: np.ndarray) -> np.ndarray:
    """Position ids of a (left-padded) attention mask, as transformers' ``generate`` makes them."""
    pos = np.cumsum(mask, axis=-1) - 1
    return np.where(mask == 0, 1, pos).astype(np.int64)


def torch_reference(model: Any, prompt: np.ndarray, mask: np.ndarray, steps: int) -> tuple[np.ndarray, list]:
    """(tokens (steps + 1, batch), logits per step) of greedy generation in PyTorch, with the
    model's own ``DynamicCache`` and 2D attention mask."""
    import torch
    from transformers.cache_utils import DynamicCache

    from .wrappers import cache_kwarg

    cache, key = DynamicCache(), cache_kwarg(model)
    ids, full = torch.from_numpy(prompt), mask
    pos = torch.from_numpy(positions(mask))
    tokens, logits = [], []
    with torch.no_grad():
        for _ in range(steps + 1):
            out = model(input_ids=ids, attention_mask=torch.from_numpy(full), position_ids=pos,
                        use_cache=True, return_dict=True, **{key: cache})
            last = out.logits[:, -1].double().numpy()
            logits.append(last)
            nxt = last.argmax(-1)
            tokens.append(nxt)
            ids = torch.from_numpy(nxt[:, None].astype(np.int64))
            pos = pos[:, -1:] + 1
            full = np.concatenate([full, np.ones((full.shape[0], 1), full.dtype)], axis=1)
    return np.stack(tokens), logits


def onnx_run(session: Any, layers: int, prompt: np.ndarray, mask: np.ndarray, tokens: np.ndarray) -> list:
    """Teacher-forced generation in ONNX Runtime: prefill with an empty past, then one token per
    step with the previous step's present as past."""
    past_inputs = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    batch = prompt.shape[0]
    feeds = {"input_ids": prompt.astype(np.int64), "attention_mask": mask.astype(np.int64),
             "position_ids": positions(mask)}
    for inp in past_inputs:
        kv_heads, head_dim = inp.shape[1], inp.shape[3]
        feeds[inp.name] = np.zeros((batch, kv_heads, 0, head_dim), np.float32)
    names = [o.name for o in session.get_outputs()]
    logits = []
    full = mask.astype(np.int64)
    pos = feeds["position_ids"][:, -1:]
    for step in range(len(tokens)):
        out = dict(zip(names, session.run(None, feeds)))
        logits.append(out["logits"][:, -1].astype(np.float64))
        full = np.concatenate([full, np.ones((batch, 1), np.int64)], axis=1)
        pos = pos + 1
        feeds = {"input_ids": tokens[step][:, None].astype(np.int64), "attention_mask": full, "position_ids": pos}
        for i in range(layers):
            for kind in ("key", "value"):
                feeds[f"past_key_values.{i}.{kind}"] = out[f"present.{i}.{kind}"]
    return logits


def stateful_run(predict: Any, make_state: Any, prompt: np.ndarray, tokens: np.ndarray, mask_dtype: Any) -> list:
    """Teacher-forced generation with a stateful Core ML program: one state for the whole
    generation; each call gets ``input_ids`` and the causal mask over past + new positions."""
    from .wrappers import causal_mask

    state = make_state()
    ids, past, logits = prompt.astype(np.int32), 0, []
    for step in range(len(tokens)):
        out = predict({"input_ids": ids, "causal_mask": causal_mask(past, ids.shape[1], mask_dtype)}, state)
        logits.append(np.asarray(out["logits"])[:, -1].astype(np.float64))
        past += ids.shape[1]
        ids = tokens[step][:, None].astype(np.int32)
    return logits


@contextlib.contextmanager
def weights_kept_widened(package: Path) -> Iterator[None]:
    """While generating with the reference runtime: keep the fp32 copies of the package's fp16
    weights for the whole run (the runtime's widened-constant cache is bounded at 64 MB, so a
    larger model would widen every weight again at each token; ~3/4 of its time per token at
    Qwen2-0.5B's size). Costs 2x the package's weight bytes, ONNX Runtime's own fp32 footprint;
    freed afterwards."""
    from interop.runtimes.mil.values import CONSTANT_CACHE

    weights = sum(f.stat().st_size for f in Path(package).rglob("weight*.bin"))
    old = CONSTANT_CACHE.max_bytes
    CONSTANT_CACHE.max_bytes = max(old, int(2.2 * weights))
    try:
        yield
    finally:
        CONSTANT_CACHE.max_bytes = old
        CONSTANT_CACHE.clear()


def stateless_prefill(layers: int, kv_heads: int, head_dim: int, prompt: np.ndarray, dtype: Any) -> dict:
    """The stateless form's prefill feeds: the prompt after a 1-long zero past its mask hides."""
    from .export import coreml_name

    past = {coreml_name(f"past_key_values.{i}.{kind}"): np.zeros((1, kv_heads, 1, head_dim), dtype)
            for i in range(layers) for kind in ("key", "value")}
    length = prompt.shape[1]
    return {"input_ids": prompt.astype(np.int32), "attention_mask": np.array([[0] + [1] * length], np.int32),
            "position_ids": np.arange(length, dtype=np.int32)[None], **past}


def stateless_run(predict: Any, layers: int, kv_heads: int, head_dim: int, prompt: np.ndarray,
                  tokens: np.ndarray, dtype: Any) -> list:
    """Teacher-forced generation with the stateless (past/present) Core ML form: the prefill gets
    a 1-long zero past that its attention mask hides; then present is fed back as past."""
    feeds = stateless_prefill(layers, kv_heads, head_dim, prompt, dtype)
    past = [n for n in feeds if n.startswith("past_key_values_")]
    logits = []
    for step in range(len(tokens)):
        out = predict(feeds)
        logits.append(np.asarray(out["logits"])[:, -1].astype(np.float64))
        total = feeds["attention_mask"].shape[1] + 1
        feeds = {"input_ids": tokens[step][:, None].astype(np.int32),
                 "attention_mask": np.array([[0] + [1] * (total - 1)], np.int32),
                 "position_ids": np.array([[total - 2]], np.int32)}
        feeds.update({name: out[name.replace("past_key_values_", "present_")] for name in past})
    return logits
