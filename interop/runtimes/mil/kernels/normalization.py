"""Normalization MIL ops: ``batch_norm``, ``instance_norm``, ``l2_norm``, ``layer_norm``,
``local_response_norm`` (``mil/ops/defs/iOS15/normalization.py``; iOS17 only lets the parameters
have another dtype than ``x``, which changes nothing here).

Formulas are the defs' docstrings / ``value_inference``; variances are population variances.
fp16 operands are computed in fp32; the interpreter rounds the result.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..registry import kernel
from ..values import torch_tensor
from .elementwise import upcast


def _f32(a) -> np.ndarray:
    return np.asarray(upcast(a), dtype=np.float32)


def _per_channel(param, rank: int, default: float) -> np.ndarray:
    """A per-channel (axis 1) parameter shaped to broadcast over a rank-``rank`` x."""
    if param is None:
        return np.float32(default)
    return _f32(param).reshape((1, -1) + (1,) * (rank - 2))


@kernel("batch_norm")
def batch_norm(ctx, x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    """``gamma * (x - mean) / sqrt(variance + epsilon) + beta``, per channel (axis 1)."""
    x = _f32(x)
    rank = x.ndim
    scale = _per_channel(gamma, rank, 1.0) / np.sqrt(_per_channel(variance, rank, 1.0) + _f32(epsilon))
    return (x - _per_channel(mean, rank, 0.0)) * scale + _per_channel(beta, rank, 0.0)


def _normalize(x: np.ndarray, axes: tuple[int, ...], epsilon) -> np.ndarray:
    """``(x - mean) / sqrt(var + epsilon)`` over ``axes`` (population variance)."""
    centered = x - x.mean(axis=axes, keepdims=True)
    variance = np.square(centered).mean(axis=axes, keepdims=True)
    return centered / np.sqrt(variance + _f32(epsilon))


@kernel("instance_norm")
def instance_norm(ctx, x, gamma=None, beta=None, epsilon=1e-5):
    """Normalize each (sample, channel) over its spatial dims, then per-channel scale / offset."""
    x = _f32(x)
    normalized = _normalize(x, tuple(range(2, x.ndim)), epsilon)
    return normalized * _per_channel(gamma, x.ndim, 1.0) + _per_channel(beta, x.ndim, 0.0)


@kernel("l2_norm")
def l2_norm(ctx, x, epsilon=1e-6):
    """``x / sqrt(sum(x**2) + epsilon)`` over the last three dims; leading dims are batch."""
    x = _f32(x)
    square_sum = np.square(x).sum(axis=(-3, -2, -1), keepdims=True)
    return x / np.sqrt(square_sum + _f32(epsilon))


@kernel("layer_norm")
def layer_norm(ctx, x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    """Normalize over ``axes`` (all dims by default); ``gamma``/``beta`` have shape
    ``x.shape[axes]`` (axes in increasing order)."""
    x = _f32(x)
    rank = x.ndim
    axes = range(rank) if axes is None else np.asarray(axes).reshape(-1)
    axes = tuple(sorted({int(a) % rank for a in axes}))
    if axes and axes == tuple(range(rank - len(axes), rank)) and x.size >= 4096:
        # Trailing axes: torch's layer_norm computes the same formula (population variance) in one pass.
        import torch.nn.functional as F

        shape = x.shape[rank - len(axes):]
        g = None if gamma is None else torch_tensor(_f32(gamma).reshape(shape))
        b = None if beta is None else torch_tensor(_f32(beta).reshape(shape))
        return F.layer_norm(torch_tensor(x), shape, g, b, float(_f32(epsilon))).numpy()
    normalized_shape = [x.shape[i] if i in axes else 1 for i in range(rank)]
    y = _normalize(x, axes, epsilon)
    if gamma is not None:
        y = y * _f32(gamma).reshape(normalized_shape)
    if beta is not None:
        y = y + _f32(beta).reshape(normalized_shape)
    return y


@kernel("local_response_norm")
def local_response_norm(ctx, x, size, alpha=1e-4, beta=0.75, k=1.0):
    """``x / (k + alpha / size * sum(x_j**2))**beta``, the sum running over channels
    ``c - size//2 .. c + (size-1)//2`` (zero beyond the edges), as torch's LocalResponseNorm.

    The channel axis is ``-3`` (Core ML's layer convention, which coremltools' op tests pin: for a
    rank-3 ``x`` it is axis 0, not the docstring's ``C``); for rank 4 it is axis 1 as usual.
    """
    x = _f32(x)
    size = int(size)
    widths = [(0, 0)] * x.ndim
    widths[-3] = (size // 2, (size - 1) // 2)
    window_sum = sliding_window_view(np.pad(np.square(x), widths), size, axis=x.ndim - 3).sum(axis=-1)
    return x / np.power(_f32(k) + _f32(alpha) / size * window_sum, _f32(beta))
