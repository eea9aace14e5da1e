"""MIL ops outside the big families: ``classify``, the ``random_*`` ops, iOS18
``scaled_dot_product_attention`` and the iOS18 state ops.

* ``classify`` (iOS15 ``classify.py``) builds a classifier's outputs: the label of the largest
  probability and the ``{label: probability}`` dict Core ML returns.
* ``random_*`` (iOS15 ``random.py``) draw from numpy's PCG64 generator, seeded by ``seed`` or,
  for the default ``seed=-1``, by the op's name, so runs are repeatable. The values cannot match
  Core ML's generator; only shapes and distributions can.
* ``scaled_dot_product_attention`` (iOS18 ``transformers.py``): ``softmax(QK^T/sqrt(E) + mask) V``;
  a bool mask keeps the positions where it is true.
* ``read_state`` / ``coreml_update_state`` (iOS18 ``states.py``; a saved ``write_state`` loads as
  ``coreml_update_state``) read and replace the content of a :class:`~..values.State`.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..registry import kernel


@kernel("classify")
def classify(ctx, probabilities, classes):
    """MIL ``classify``: (label of the largest probability, ``{label: probability}``). One row of
    probabilities gives a label and floats, as Core ML does; a batch of rows (``(..., classes)``,
    a classifier converted with a dynamic batch) gives a list of labels, one a row, and for each
    label the array of its probability in every row."""
    raw = np.asarray(probabilities, dtype=np.float64)
    labels = [c if isinstance(c, str) else int(c) for c in classes]
    if len(labels) == raw.size:
        probs = raw.ravel()
        return labels[int(np.argmax(probs))], {label: float(p) for label, p in zip(labels, probs)}
    if raw.ndim < 2 or raw.shape[-1] != len(labels):
        raise ValueError(f"classify: {len(labels)} classes for probabilities of shape {list(raw.shape)}")
    rows = raw.reshape(-1, len(labels))
    return [labels[int(i)] for i in np.argmax(rows, axis=-1)], {label: rows[:, k] for k, label in enumerate(labels)}


# ---------------------------------------------------------------------------------------- random


def _rng(ctx, seed) -> np.random.Generator:
    seed = int(seed)
    return np.random.default_rng(seed if seed >= 0 else zlib.crc32(ctx.op.name.encode()))


def _shape(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in np.ravel(shape))


@kernel("random_bernoulli")
def random_bernoulli(ctx, shape, prob=0.5, seed=-1):
    """MIL ``random_bernoulli``: 1 with probability ``prob``, else 0."""
    return (_rng(ctx, seed).random(_shape(shape)) < float(prob)).astype(np.float32)


@kernel("random_normal")
def random_normal(ctx, shape, mean=0.0, stddev=1.0, seed=-1):
    """MIL ``random_normal``."""
    return _rng(ctx, seed).normal(float(mean), float(stddev), _shape(shape))


@kernel("random_uniform")
def random_uniform(ctx, shape, low=0.0, high=1.0, seed=-1):
    """MIL ``random_uniform``: samples in ``[low, high)``."""
    return _rng(ctx, seed).uniform(float(low), float(high), _shape(shape))


@kernel("random_categorical")
def random_categorical(ctx, x, mode="logits", size=1, seed=-1):
    """MIL ``random_categorical``: ``size`` class indices per distribution over the last axis of
    ``x`` (logits, or unnormalised probabilities with ``mode="probs"``), as floats."""
    x = np.asarray(x, dtype=np.float64)
    if str(mode) == "logits":
        weights = np.exp(x - np.max(x, axis=-1, keepdims=True))
    else:
        weights = np.maximum(x, 0.0)
    cdf = np.cumsum(weights, axis=-1)
    cdf /= cdf[..., -1:]
    draws = _rng(ctx, seed).random(x.shape[:-1] + (int(size),))
    samples = np.sum(draws[..., None] >= cdf[..., None, :], axis=-1)
    return np.minimum(samples, x.shape[-1] - 1).astype(np.float32)


# ------------------------------------------------------------------------------------- attention


@kernel("scaled_dot_product_attention")
def scaled_dot_product_attention(ctx, query, key, value, attn_mask=None):
    """iOS18 ``scaled_dot_product_attention`` (no dropout, not causal), computed in float32."""
    q, k, v = (np.asarray(t, dtype=np.float32) for t in (query, key, value))
    scores = q @ np.swapaxes(k, -1, -2) / np.float32(np.sqrt(q.shape[-1]))
    if attn_mask is not None:
        mask = np.asarray(attn_mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask.astype(np.float32)
    scores = np.exp(scores - np.max(scores, axis=-1, keepdims=True))
    return (scores / np.sum(scores, axis=-1, keepdims=True)) @ v


# ---------------------------------------------------------------------------------------- states


@kernel("read_state")
def read_state(ctx, input):
    """iOS18 ``read_state``: a copy of the state's content."""
    return np.array(input.value)


@kernel("coreml_update_state")
def coreml_update_state(ctx, state, value):
    """coreml dialect ``coreml_update_state`` (saved as iOS18 ``write_state``): store ``value``
    in the state, rounded to its dtype, and return it."""
    state.value = np.asarray(value).astype(state.value.dtype)
    return np.array(state.value)
