"""Wrapper modules around a causal LM that make its KV cache explicit, one per cache form.

* :class:`PastPresentLM` (ONNX, and the stateless Core ML fallback): ``input_ids``,
  ``attention_mask`` (batch, past + seq), ``position_ids`` and one flat ``past_key_values.{i}.key``
  / ``.value`` tensor per layer (batch, kv_heads, past, head_dim) in; ``logits`` and
  ``present.{i}.key`` / ``.value`` (past + seq) out. An empty past (past = 0) is the prefill.
* :class:`StatefulLM` (Core ML iOS18): the cache lives in two registered buffers
  ``key_cache`` / ``value_cache`` (layers, 1, kv_heads, max_context, head_dim), written in place
  with slice assignment, which coremltools turns into states (``ct.StateType``). Inputs
  ``input_ids`` (1, seq) and ``causal_mask`` (1, 1, seq, past + seq): the past length is the mask's
  width minus the query length, so one package does prefill and single-token decode.

Both build the 4D additive attention mask themselves (a prepared 4D mask is what transformers
models take as-is), so no data-dependent mask code of the library is traced.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def cache_geometry(model: nn.Module) -> dict[str, int]:
    """layers, kv_heads, head_dim and vocab of a transformers causal LM (from its config)."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer")
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd")
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return {"layers": int(layers), "kv_heads": int(kv_heads), "head_dim": int(head_dim),
            "vocab": int(config.vocab_size), "heads": int(heads), "hidden": int(hidden)}


LOW = -65504.0
"""The masked-out additive mask value: fp16's lowest finite number (exp of it is 0 in fp32 too)."""


def cache_kwarg(model: nn.Module) -> str:
    """The name a model's ``forward`` takes its cache under (``cache`` in transformers >= 5.2x,
    ``past_key_values`` before)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def additive_mask(attention_mask: torch.Tensor, query_length: int, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, q, past + q): 0 where query i may attend key j (j <= past + i and key j is not
    padding), :data:`LOW` elsewhere (not -inf: a fully masked padding row stays finite)."""
    total = attention_mask.shape[-1]
    past = total - query_length
    rows = torch.arange(query_length, device=attention_mask.device).unsqueeze(-1) + past
    cols = torch.arange(total, device=attention_mask.device).unsqueeze(0)
    allowed = (cols <= rows).unsqueeze(0) & attention_mask.bool()[:, None, :]
    # (1 - allowed) * LOW rather than where(allowed, 0, LOW): coremltools loses the shape of a
    # where between two scalars; LOW is fp16's lowest, finite in an fp16 program too
    return ((1 - allowed.to(dtype)) * LOW).unsqueeze(1)


class PastPresentLM(nn.Module):
    """A causal LM with flat past tensors in and flat present tensors out (Optimum convention)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.layers = cache_geometry(model)["layers"]

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.layers)])
        dtype = self.model.get_input_embeddings().weight.dtype
        mask = additive_mask(attention_mask, input_ids.shape[-1], dtype)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                         use_cache=True, return_dict=True, **{cache_kwarg(self.model): cache})
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def io_names(layers: int) -> tuple[list[str], list[str]]:
    """(input names, output names) of the past/present form."""
    past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


class _SliceLayer:
    """One layer's view of the stateful cache: ``update`` writes the new keys/values at
    ``[past, past + seq)`` of the layer's slice of the buffers and returns ``[0, past + seq)``."""

    is_sliding = False
    is_compileable = False
    is_initialized = True

    def __init__(self, owner: "StatefulLM", index: int):
        self.owner, self.index = owner, index

    def update(self, key_states, value_states, *args, **kwargs):
        begin = self.owner.past + self.owner.write_offset
        self.owner.key_cache[self.index, :, :, begin:begin + key_states.shape[-2], :] = key_states
        self.owner.value_cache[self.index, :, :, begin:begin + key_states.shape[-2], :] = value_states
        end = self.owner.past + key_states.shape[-2]
        dtype = key_states.dtype
        return (self.owner.key_cache[self.index, :, :, :end, :].to(dtype),
                self.owner.value_cache[self.index, :, :, :end, :].to(dtype))

    def get_seq_length(self) -> Any:
        return self.owner.past

    def get_mask_sizes(self, query_length: int) -> tuple[Any, int]:
        return self.owner.past + query_length, 0

    def get_max_length(self) -> int:
        return self.owner.max_context


def _slice_cache(owner: "StatefulLM") -> Any:
    """A transformers ``Cache`` whose layers write into ``owner``'s buffers."""
    from transformers.cache_utils import Cache, CacheLayerMixin

    class SliceLayer(_SliceLayer, CacheLayerMixin):
        def __init__(self, owner, index):
            CacheLayerMixin.__init__(self)
            _SliceLayer.__init__(self, owner, index)
            self.is_initialized = True

        def lazy_initialization(self, key_states, value_states):
            return None

    return Cache(layers=[SliceLayer(owner, i) for i in range(owner.layers)])


class StatefulLM(nn.Module):
    """A causal LM whose KV cache is two in-place-updated buffers (Core ML states)."""

    def __init__(self, model: nn.Module, max_context: int, cache_dtype: torch.dtype = torch.float16,
                 write_offset: int = 0):
        super().__init__()
        self.model = model
        geo = cache_geometry(model)
        self.layers, self.max_context = geo["layers"], max_context
        shape = (geo["layers"], 1, geo["kv_heads"], max_context, geo["head_dim"])
        self.register_buffer("key_cache", torch.zeros(shape, dtype=cache_dtype))
        self.register_buffer("value_cache", torch.zeros(shape, dtype=cache_dtype))
        self.write_offset = write_offset  # tests only: a deliberately broken cache update
        self.past: Any = 0

    def forward(self, input_ids, causal_mask):
        query = input_ids.shape[-1]
        self.past = causal_mask.shape[-1] - query
        end = causal_mask.shape[-1]
        positions = torch.arange(end - query, end, device=input_ids.device).unsqueeze(0)
        out = self.model(input_ids=input_ids, attention_mask=causal_mask, position_ids=positions,
                         use_cache=True, return_dict=True, **{cache_kwarg(self.model): _slice_cache(self)})
        return out.logits


def causal_mask(past: int, query: int, dtype: Any = None) -> Any:
    """The (1, 1, query, past + query) additive mask the stateful form takes (numpy)."""
    import numpy as np

    dtype = np.float32 if dtype is None else dtype
    rows = np.arange(query)[:, None] + past
    cols = np.arange(past + query)[None, :]
    return np.where(cols <= rows, 0.0, LOW).astype(dtype)[None, None]
