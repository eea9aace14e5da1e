"""Activation MIL ops (``mil/ops/defs/iOS15/activation.py``; iOS17 only lets ``alpha``/``beta``
have a dtype other than ``x``'s, which changes nothing here).

Formulas are those of the defs' docstrings / ``value_inference``, written in numerically stable
forms (``expit``, ``logaddexp``). fp16 operands are computed in fp32; the interpreter rounds the
result to the declared dtype.
"""

from __future__ import annotations

import numpy as np
import scipy.special

from ..registry import kernel
from ..values import torch_tensor
from .elementwise import upcast

_TORCH_MIN_SIZE = 4096  # below this numpy's lower call overhead wins


def _via_torch(x: np.ndarray) -> bool:
    """Whether to compute on ``x`` (already widened) with torch: large float arrays."""
    return x.size >= _TORCH_MIN_SIZE and x.dtype.kind == "f"


def _per_channel(param, rank: int) -> np.ndarray:
    """A rank-1 per-channel parameter shaped to broadcast along axis 1 of a rank-``rank`` x."""
    return upcast(param).reshape((1, -1) + (1,) * (rank - 2))


@kernel("relu")
def relu(ctx, x):
    """``max(x, 0)``."""
    x = upcast(x)
    if _via_torch(x):
        return torch_tensor(x).relu().numpy()
    return np.maximum(x, 0)


@kernel("relu6")
def relu6(ctx, x):
    """``min(max(x, 0), 6)``."""
    x = upcast(x)
    if _via_torch(x):
        return torch_tensor(x).clamp(0, 6).numpy()
    return np.clip(x, x.dtype.type(0), x.dtype.type(6))


@kernel("clamped_relu")
def clamped_relu(ctx, x, alpha, beta):
    """``min(max(x, 0), beta) + min(min(x, 0) * alpha, beta)``, the def's value_inference."""
    x, alpha, beta = upcast(x), upcast(alpha), upcast(beta)
    return np.minimum(np.maximum(x, 0), beta) + np.minimum(np.minimum(x, 0) * alpha, beta)


@kernel("elu")
def elu(ctx, x, alpha):
    """``x`` if ``x > 0`` else ``alpha * (exp(x) - 1)``."""
    x = upcast(x)
    return np.where(x > 0, x, upcast(alpha) * np.expm1(np.minimum(x, 0)))


@kernel("leaky_relu")
def leaky_relu(ctx, x, alpha):
    """``x`` if ``x >= 0`` else ``alpha * x``."""
    x = upcast(x)
    return np.where(x >= 0, x, upcast(alpha) * x)


@kernel("thresholded_relu")
def thresholded_relu(ctx, x, alpha):
    """``x`` if ``x >= alpha`` else ``0``."""
    x = upcast(x)
    return np.where(x >= upcast(alpha), x, np.zeros_like(x))


@kernel("prelu")
def prelu(ctx, x, alpha):
    """``max(x, 0) + min(x, 0) * alpha[c]`` with ``c`` the channel (axis 1) of a rank 3-5 ``x``."""
    x = upcast(x)
    return np.maximum(x, 0) + np.minimum(x, 0) * _per_channel(alpha, x.ndim)


@kernel("linear_activation")
def linear_activation(ctx, x, alpha, beta):
    """``alpha * x + beta``."""
    return upcast(alpha) * upcast(x) + upcast(beta)


@kernel("scaled_tanh")
def scaled_tanh(ctx, x, alpha, beta):
    """``alpha * tanh(beta * x)``."""
    return upcast(alpha) * np.tanh(upcast(beta) * upcast(x))


@kernel("sigmoid")
def sigmoid(ctx, x):
    """``1 / (1 + exp(-x))``."""
    x = upcast(x)
    if _via_torch(x):
        return torch_tensor(x).sigmoid().numpy()
    return scipy.special.expit(x)


@kernel("sigmoid_hard")
def sigmoid_hard(ctx, x, alpha, beta):
    """``min(max(alpha * x + beta, 0), 1)``."""
    return np.clip(upcast(alpha) * upcast(x) + upcast(beta), 0, 1)


@kernel("silu")
def silu(ctx, x):
    """``x * sigmoid(x)``."""
    x = upcast(x)
    if _via_torch(x):
        t = torch_tensor(x)
        return (t * t.sigmoid()).numpy()
    return x * scipy.special.expit(x)


@kernel("softplus")
def softplus(ctx, x):
    """``log(1 + exp(x))``."""
    return np.logaddexp(0, upcast(x))


@kernel("softplus_parametric")
def softplus_parametric(ctx, x, alpha, beta):
    """``alpha[c] * log(1 + exp(beta[c] * x))`` with ``c`` the channel (axis 1) of ``x``."""
    x = upcast(x)
    return _per_channel(alpha, x.ndim) * np.logaddexp(0, _per_channel(beta, x.ndim) * x)


@kernel("softsign")
def softsign(ctx, x):
    """``x / (1 + |x|)``."""
    x = upcast(x)
    return x / (1 + np.abs(x))


@kernel("softmax")
def softmax(ctx, x, axis):
    """``exp(x) / sum(exp(x), axis)``, computed after subtracting the max along ``axis``."""
    x = upcast(x)
    if _via_torch(x):
        return torch_tensor(x).softmax(int(axis)).numpy()
    return scipy.special.softmax(x, axis=int(axis))


@kernel("gelu")
def gelu(ctx, x, mode):
    """GELU in the def's three modes: ``EXACT`` (erf), ``TANH_APPROXIMATION``,
    ``SIGMOID_APPROXIMATION`` (``x * sigmoid(1.702 x)``)."""
    x = upcast(x)
    if _via_torch(x) and mode in ("EXACT", "TANH_APPROXIMATION"):
        import torch.nn.functional as F

        return F.gelu(torch_tensor(x), approximate="tanh" if mode == "TANH_APPROXIMATION" else "none").numpy()
    if mode == "TANH_APPROXIMATION":
        inner = np.sqrt(2 / np.pi).astype(x.dtype) * (x + 0.044715 * x**3)
        return 0.5 * x * (1 + np.tanh(inner))
    if mode == "SIGMOID_APPROXIMATION":
        return x * scipy.special.expit(1.702 * x)
    if mode == "EXACT":
        return 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2).astype(x.dtype)))
    raise ValueError(f"gelu: unknown mode {mode!r}")
