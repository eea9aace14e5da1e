"""Recurrent MIL ops: ``lstm``, ``gru``, ``rnn``.

Semantics of coremltools' iOS15 op definitions (fp16 allowed from iOS17, ``gru`` gains
``reset_after`` / ``input_bias`` in iOS18), with the details their docstrings leave open fixed
the way coremltools' own op tests (which pass on Core ML) pin them:

* ``x`` is ``(seq, batch, input)``; states are ``(batch, H)`` (``(batch, 2H)`` for a
  bidirectional lstm, forward half first).
* Gate blocks are stacked along the rows of the weights: lstm ``[i, f, o, z]``, gru
  ``[r, o, z]`` (``o`` is the candidate / "new" gate). lstm and rnn ``bias`` is the sum of input
  and hidden biases; gru ``bias`` is the hidden bias (inside ``r * (...)`` when ``reset_after``),
  iOS18's ``input_bias`` the input one.
* ``direction="reverse"`` runs the sequence back to front and emits its outputs in processing
  order; a bidirectional lstm emits the backward outputs aligned with input time (like torch).
* lstm ``clip`` clips the cell state after each update; peepholes see the previous cell state
  for ``i`` / ``f`` and the new one for ``o``.

Everything is computed in float32; the interpreter rounds outputs typed fp16.

How it is computed (speed only; every path computes the function above):

* **The step loop** (every op, any activation, peepholes, ``clip``). The input projection
  ``x @ W_ih^T + b`` is one matrix product over all time steps; each step is then one gemv
  ``h @ W_hh^T`` on a transposed, contiguous copy of ``W_hh`` plus a handful of numpy ufuncs
  writing into preallocated buffers (``out=``): ~10 us per step at H=128, where the first version
  (``np.split``, temporaries) took ~35 us.
* **torch's fused oneDNN LSTM** (``torch.lstm`` with oneDNN enabled) for an ``lstm`` with the
  default activations, no ``clip`` and no (or all-zero) peepholes, weights reordered to torch's
  gate order ``[i, f, g, o]``, MIL's summed bias as torch's input bias. It costs ~4-5 us per step
  but ~0.1 ms per call at H=128 (and ~5 ms once per shape, building the primitive), and for
  batch 1 at large hidden sizes it is slower than the loop, so :func:`_use_fused_lstm` picks it
  by shape. torch's other RNN kernels (its non-oneDNN LSTM, its GRU and RNN: several dispatched
  ops per step, a gemv on a transposed weight view) are slower than the loop and not used; MIL's
  default ``gru`` (``reset_after=False``) has no torch equivalent anyway.
* Weights are program constants: their reordered / transposed fp32 copies are made once and
  kept in the runtime's cache of constants' derived forms (:data:`values.CONSTANT_CACHE`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..registry import kernel
from ..values import CONSTANT_CACHE as _CACHE
from ..values import widen

Array = np.ndarray
_F32 = np.float32


# ------------------------------------------------------------------------------- activations
# ``act(src, out)`` writes ``activation(src)`` into ``out`` (float32; ``out`` may be ``src``).


def _sigmoid(src: Array, out: Array) -> None:
    # 1 / (1 + exp(-x)). Not np.negative(src, out=out): numpy 2.3's in-place negative reads the
    # wrong elements of a strided float32 view (e.g. the (batch, 1) gate columns when H = 1).
    np.multiply(src, -1.0, out=out)
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)


def _tanh(src: Array, out: Array) -> None:
    np.tanh(src, out=out)


def _hard_sigmoid(src: Array, out: Array) -> None:  # alpha = 0.2, beta = 0.5: the recurrent ops' defaults
    np.multiply(src, 0.2, out=out)
    out += 0.5
    np.clip(out, 0.0, 1.0, out=out)


def _relu(src: Array, out: Array) -> None:
    np.maximum(src, 0.0, out=out)


def _linear(src: Array, out: Array) -> None:
    if out is not src:
        np.copyto(out, src)


_ACTIVATIONS: dict[str, Callable[[Array, Array], None]] = {
    "sigmoid": _sigmoid,
    "tanh": _tanh,
    "scaled_tanh": _tanh,  # alpha = beta = 1, the defaults the recurrent ops use
    "hard_sigmoid": _hard_sigmoid,
    "sigmoid_hard": _hard_sigmoid,
    "relu": _relu,
    "linear": _linear,
}


def _activation(name: Any) -> Callable[[Array, Array], None]:
    try:
        return _ACTIVATIONS[str(name).lower()]
    except KeyError:
        raise ValueError(f"unsupported recurrent activation {name!r}") from None


# ---------------------------------------------------------------------------- prepared weights




def _f32(a: Any) -> Array | None:
    """``a`` as a float32 array (fp16 widened by ``values.widen``); may be ``a`` itself."""
    return None if a is None else np.asarray(widen(a), dtype=_F32)


def _copy(a: Any) -> Array | None:
    """A float32 copy of ``a`` (what the cache keeps must not reference the program's arrays)."""
    return None if a is None else np.array(_f32(a), dtype=_F32)


def _transposed(w: Any) -> Array:
    """A contiguous float32 copy of ``W^T``: a step's ``h @ W^T`` is then a plain gemv."""
    return np.array(_f32(w).T, dtype=_F32, order="C")


def _all_zero(a: Any) -> bool:
    return a is None or not np.any(a)


def _order(seq_len: int, reverse: bool) -> range:
    return range(seq_len - 1, -1, -1) if reverse else range(seq_len)


def _project(x: Array, w_ih_t: Array, bias: Array | None) -> Array:
    """``x @ W_ih^T + bias`` for every time step at once: ``(seq, batch, G*H)``."""
    seq, batch, size = x.shape
    projected = (x.reshape(seq * batch, size) @ w_ih_t).reshape(seq, batch, w_ih_t.shape[1])
    if bias is not None:
        projected += bias
    return projected


def _last(outputs: Array, h0: Array) -> Array:
    """The final hidden state: the last output (a copy), or ``h0`` for an empty sequence."""
    return np.array(outputs[-1] if len(outputs) else h0, dtype=_F32)


def _sequence_output(outputs: Array, output_sequence: Any) -> Array:
    return outputs if bool(output_sequence) else outputs[-1:]


# ---------------------------------------------------------------------------------------- lstm


def _lstm_loop_weights(weight_ih, weight_hh, bias, peephole) -> tuple:
    """``(W_ih^T, W_hh^T, bias, peephole as (3, H) or None if absent / all zero)``, gates ``[i, f, o, z]``."""
    hidden = weight_hh.shape[1]
    p = None if _all_zero(peephole) else _copy(peephole).reshape(3, hidden)
    return _transposed(weight_ih), _transposed(weight_hh), _copy(bias), p


def _lstm_loop(x: Array, h0: Array, c0: Array, weights: tuple, acts: tuple, clip: float | None,
               reverse: bool) -> tuple[Array, Array, Array]:
    """One direction, step by step: ``(outputs in processing order, last h, last c)``."""
    w_ih_t, w_hh_t, bias, peephole = weights
    recurrent_act, cell_act, act = acts
    seq, batch, _ = x.shape
    hidden = w_hh_t.shape[0]
    projected = _project(x, w_ih_t, bias)
    outputs = np.empty((seq, batch, hidden), _F32)
    gates = np.empty((batch, 4 * hidden), _F32)
    tmp = np.empty((batch, hidden), _F32)
    g_i, g_f, g_o, g_z = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
    g_ifo, g_if = gates[:, :3 * hidden], gates[:, :2 * hidden]
    h, c = h0, np.array(c0, dtype=_F32)
    for k, t in enumerate(_order(seq, reverse)):
        np.matmul(h, w_hh_t, out=gates)
        gates += projected[t]
        if peephole is None:
            recurrent_act(g_ifo, g_ifo)
        else:
            np.multiply(c, peephole[0], out=tmp)
            g_i += tmp
            np.multiply(c, peephole[1], out=tmp)
            g_f += tmp
            recurrent_act(g_if, g_if)
        cell_act(g_z, g_z)
        c *= g_f  # c = f * c + i * z
        np.multiply(g_i, g_z, out=tmp)
        c += tmp
        if clip is not None:
            np.clip(c, -clip, clip, out=c)
        if peephole is not None:
            np.multiply(c, peephole[2], out=tmp)
            g_o += tmp
            recurrent_act(g_o, g_o)
        h = outputs[k]  # h = o * act(c)
        act(c, h)
        h *= g_o
    return outputs, _last(outputs, h0), c


def _torch_lstm_weights(weight_ih, weight_hh, bias, with_bias: bool = True) -> list:
    """One direction of torch's flat LSTM weight list, gates ``[i, f, o, z]`` reordered to torch's
    ``[i, f, g, o]``: ``[w_ih, w_hh]``, or with ``with_bias`` ``[w_ih, w_hh, bias, 0]`` (MIL's
    summed bias as torch's input bias, zeros as its hidden bias; zeros for an absent ``bias``)."""
    import torch

    hidden = weight_hh.shape[1]
    order = np.r_[0:2 * hidden, 3 * hidden:4 * hidden, 2 * hidden:3 * hidden]
    flat = [torch.from_numpy(np.ascontiguousarray(_f32(w)[order])) for w in (weight_ih, weight_hh)]
    if with_bias:
        b = np.zeros(4 * hidden, _F32) if bias is None else np.ascontiguousarray(_f32(bias)[order])
        flat += [torch.from_numpy(b), torch.zeros(4 * hidden)]
    return flat


FUSED_LSTM_MIN_STEPS = 20
"""Shortest sequence of batch 1 given to torch's oneDNN LSTM: its per-call setup (~0.1-0.3 ms)
costs about as much as 10-20 steps of the loop."""
FUSED_LSTM_MAX_HIDDEN = 160
"""Largest hidden size of batch 1 given to torch's oneDNN LSTM: above it oneDNN's setup grows
fast (~2 ms at H=384, ~4 ms at H=512) and the loop's gemv is as fast per step."""
FUSED_LSTM_MIN_STEPS_BATCHED = 8
"""Shortest sequence given to torch's oneDNN LSTM for batch > 1, at any hidden size: there the
loop's per-step (batch, H) x (H, 4H) product is slow (OpenBLAS: 2-5x a gemv)."""


def _fused_lstm_enabled() -> bool:
    """oneDNN is there, enabled, and left to compute float32 in float32 (a user may let it use
    bf16 / tf32: ``torch.backends.mkldnn[.rnn].fp32_precision``, ``set_float32_matmul_precision``)."""
    import torch

    mkldnn = torch.backends.mkldnn
    if not (mkldnn.is_available() and torch._C._get_mkldnn_enabled()):
        return False
    precisions = (getattr(getattr(mkldnn, "rnn", None), "fp32_precision", "none"),
                  getattr(mkldnn, "fp32_precision", "none"))
    return all(p in ("none", "ieee") for p in precisions) and torch.get_float32_matmul_precision() == "highest"


def _use_fused_lstm(seq: int, batch: int, hidden: int, activations: tuple, clip: float | None,
                    peepholes: tuple) -> bool:
    """Whether to run torch's oneDNN LSTM: only for the function it computes (the default
    activations, no clip, no peepholes) and only where it is the faster path. Measured on x86-64
    (AVX-512), 1 thread, median ms, oneDNN vs loop: H=128 batch 1 at 8 steps 0.30 vs 0.20, at
    32 steps 0.37 vs 0.46; H=512 batch 1, 32 steps 7.3 vs 4.9; batch 4, 32 steps 10.3 vs 25.8."""
    if activations != ("sigmoid", "tanh", "tanh") or clip is not None or not all(_all_zero(p) for p in peepholes):
        return False
    if batch == 1:
        fast = seq >= FUSED_LSTM_MIN_STEPS and hidden <= FUSED_LSTM_MAX_HIDDEN
    else:
        fast = seq >= FUSED_LSTM_MIN_STEPS_BATCHED
    return fast and _fused_lstm_enabled()


def _torch_tensor(a: Array):
    """``a`` as a float32 CPU tensor, sharing its memory when it is a writeable C-contiguous
    float32 array (``torch.from_numpy`` warns on read-only arrays)."""
    import torch

    if a.dtype != _F32 or not (a.flags.c_contiguous and a.flags.writeable):
        a = np.array(a, dtype=_F32, order="C")
    return torch.from_numpy(a)


def _lstm_fused(x: Array, h0: Array, c0: Array, flat: list, has_bias: bool, direction: str):
    """torch's fused LSTM: ``(outputs, h, c)`` as the MIL op returns them (every step's output);
    ``flat`` holds the forward direction's weights, then the backward one's when bidirectional."""
    import torch

    # reversed: run on x back to front (a copy: torch takes no negative strides), outputs in processing order
    xt = torch.from_numpy(np.array(x[::-1], dtype=_F32)) if direction == "reverse" else _torch_tensor(x)
    # no_grad: with grad mode on, oneDNN builds (~40 ms, once) and runs a training primitive
    if direction != "bidirectional":  # (indexing numpy arrays, not tensors: ~10x cheaper)
        with torch.no_grad():
            out, h, c = torch.lstm(xt, (_torch_tensor(h0[None]), _torch_tensor(c0[None])), flat, has_bias,
                                   1, 0.0, False, False, False)
        return out.numpy(), h.numpy()[0], c.numpy()[0]
    batch, hidden = x.shape[1], h0.shape[-1] // 2
    # states (batch, 2H) <-> torch's (2, batch, H)
    h0t, c0t = (_torch_tensor(s.reshape(batch, 2, hidden).transpose(1, 0, 2)) for s in (h0, c0))
    with torch.no_grad():
        out, h, c = torch.lstm(xt, (h0t, c0t), flat, has_bias, 1, 0.0, False, True, False)
    h, c = (s.permute(1, 0, 2).reshape(batch, 2 * hidden).numpy() for s in (h, c))
    return out.numpy(), h, c


@kernel("lstm")
def lstm(ctx, x, initial_h, initial_c, weight_ih, weight_hh, bias=None, peephole=None,
         weight_ih_back=None, weight_hh_back=None, bias_back=None, peephole_back=None,
         direction="forward", output_sequence=False, recurrent_activation="sigmoid",
         cell_activation="tanh", activation="tanh", clip=None):
    """MIL ``lstm`` (iOS15 / iOS17): returns (outputs, last h, last c)."""
    x, h0, c0 = _f32(x), _f32(initial_h), _f32(initial_c)
    direction = str(direction)
    bidirectional = direction == "bidirectional"
    names = tuple(str(a).lower() for a in (recurrent_activation, cell_activation, activation))
    names = tuple("tanh" if n == "scaled_tanh" else n for n in names)
    clip = None if clip is None else float(clip)
    hidden = weight_hh.shape[1]
    directions = [(weight_ih, weight_hh, bias, peephole)]
    if bidirectional:
        directions.append((weight_ih_back, weight_hh_back, bias_back, peephole_back))

    if _use_fused_lstm(x.shape[0], x.shape[1], hidden, names, clip, tuple(d[3] for d in directions)):
        has_bias = any(d[2] is not None for d in directions)
        layout = "lstm-torch-bias" if has_bias else "lstm-torch"
        flat = [t for d in directions
                for t in _CACHE.get(layout, d[:3], lambda *w: _torch_lstm_weights(*w, with_bias=has_bias))]
        outputs, h, c = _lstm_fused(x, h0, c0, flat, has_bias, direction)
        if not bool(output_sequence):
            outputs = h[None] if bidirectional else outputs[-1:]
        return outputs, h, c

    acts = tuple(_activation(n) for n in names)
    weights = [_CACHE.get("lstm-loop", d, _lstm_loop_weights) for d in directions]
    with np.errstate(over="ignore"):  # exp overflowing to inf is sigmoid's 0
        if not bidirectional:
            outputs, h, c = _lstm_loop(x, h0, c0, weights[0], acts, clip, reverse=direction == "reverse")
            return _sequence_output(outputs, output_sequence), h, c
        out_f, h_f, c_f = _lstm_loop(x, h0[:, :hidden], c0[:, :hidden], weights[0], acts, clip, reverse=False)
        out_b, h_b, c_b = _lstm_loop(x, h0[:, hidden:], c0[:, hidden:], weights[1], acts, clip, reverse=True)
    h, c = np.concatenate([h_f, h_b], axis=-1), np.concatenate([c_f, c_b], axis=-1)
    outputs = np.concatenate([out_f, out_b[::-1]], axis=-1) if bool(output_sequence) else h[None]
    return outputs, h, c


# ----------------------------------------------------------------------------------------- gru


def _gru_loop_weights(weight_ih, weight_hh, bias, input_bias, reset_after: bool) -> tuple:
    """``(W_ih^T, W_hh^T, input-side bias, b_ho or None)`` with the gates reordered ``[r, o, z]``
    -> ``[r, z, o]`` (the two recurrent-activation gates adjacent). The hidden biases that sit
    outside ``r * (...)`` are folded into the input-side bias; only ``reset_after``'s ``b_ho``
    stays apart. Without ``reset_after``, ``W_hh^T`` is split into its ``[r, z]`` and ``o``
    columns, as ``(r * h)`` meets only the latter."""
    hidden = weight_hh.shape[1]
    order = np.r_[0:hidden, 2 * hidden:3 * hidden, hidden:2 * hidden]
    w_ih_t = _transposed(_f32(weight_ih)[order])
    w_hh_t = _transposed(_f32(weight_hh)[order])
    b_in = np.zeros(3 * hidden, _F32) if input_bias is None else _f32(input_bias)[order]
    b_h = np.zeros(3 * hidden, _F32) if bias is None else _f32(bias)[order]
    if reset_after:
        b_in = np.concatenate([b_in[:2 * hidden] + b_h[:2 * hidden], b_in[2 * hidden:]])
        return w_ih_t, w_hh_t, b_in, b_h[2 * hidden:].copy()
    w_hh_t = (np.ascontiguousarray(w_hh_t[:, :2 * hidden]), np.ascontiguousarray(w_hh_t[:, 2 * hidden:]))
    return w_ih_t, w_hh_t, b_in + b_h, None


def _gru_loop(x: Array, h0: Array, weights: tuple, reset_after: bool, acts: tuple, reverse: bool):
    """``r = ract(x_r + h W_hr + b_r)``, ``z`` alike, ``o = act(x_o + r * (h W_ho + b_ho))``
    (``reset_after``) or ``act(x_o + (r * h) W_ho + b_ho)``, ``h = (1 - z) * o + z * h``:
    ``(outputs in processing order, last h)``."""
    w_ih_t, w_hh_t, b_in, b_ho = weights
    recurrent_act, act = acts
    seq, batch, _ = x.shape
    hidden = w_ih_t.shape[1] // 3
    projected = _project(x, w_ih_t, b_in)
    outputs = np.empty((seq, batch, hidden), _F32)
    gates = np.empty((batch, 3 * hidden), _F32)
    tmp = np.empty((batch, hidden), _F32)
    g_rz, g_r, g_z, g_o = gates[:, :2 * hidden], gates[:, :hidden], gates[:, hidden:2 * hidden], gates[:, 2 * hidden:]
    h = h0
    for k, t in enumerate(_order(seq, reverse)):
        p = projected[t]
        if reset_after:
            np.matmul(h, w_hh_t, out=gates)
            g_rz += p[:, :2 * hidden]
            recurrent_act(g_rz, g_rz)
            g_o += b_ho
            g_o *= g_r
        else:
            np.matmul(h, w_hh_t[0], out=g_rz)
            g_rz += p[:, :2 * hidden]
            recurrent_act(g_rz, g_rz)
            np.multiply(g_r, h, out=tmp)
            np.matmul(tmp, w_hh_t[1], out=g_o)
        g_o += p[:, 2 * hidden:]
        act(g_o, g_o)
        np.subtract(1.0, g_z, out=tmp)  # h = (1 - z) * o + z * h
        tmp *= g_o
        h_new = outputs[k]
        np.multiply(g_z, h, out=h_new)
        h_new += tmp
        h = h_new
    return outputs, _last(outputs, h0)


@kernel("gru")
def gru(ctx, x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        recurrent_activation="sigmoid", activation="tanh", reset_after=False, input_bias=None):
    """MIL ``gru`` (iOS15 / iOS17; iOS18 ``reset_after`` and ``input_bias``): returns (outputs, last h)."""
    reset_after = bool(reset_after)
    acts = (_activation(recurrent_activation), _activation(activation))
    layout = "gru-loop-reset-after" if reset_after else "gru-loop"
    weights = _CACHE.get(layout, (weight_ih, weight_hh, bias, input_bias),
                         lambda *w: _gru_loop_weights(*w, reset_after=reset_after))
    with np.errstate(over="ignore"):
        outputs, h = _gru_loop(_f32(x), _f32(initial_h), weights, reset_after, acts,
                               reverse=str(direction) == "reverse")
    return _sequence_output(outputs, output_sequence), h


# ----------------------------------------------------------------------------------------- rnn


def _rnn_loop_weights(weight_ih, weight_hh, bias) -> tuple:
    return _transposed(weight_ih), _transposed(weight_hh), _copy(bias)


@kernel("rnn")
def rnn(ctx, x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        activation="tanh"):
    """MIL ``rnn`` (iOS15 / iOS17): ``h_t = act(W_ih x_t + W_hh h_{t-1} + b)``; returns (outputs, last h)."""
    act = _activation(activation)
    w_ih_t, w_hh_t, bias = _CACHE.get("rnn-loop", (weight_ih, weight_hh, bias), _rnn_loop_weights)
    x, h0 = _f32(x), _f32(initial_h)
    seq, batch, _ = x.shape
    projected = _project(x, w_ih_t, bias)
    outputs = np.empty((seq, batch, w_hh_t.shape[0]), _F32)
    h = h0
    with np.errstate(over="ignore"):
        for k, t in enumerate(_order(seq, str(direction) == "reverse")):
            h_new = outputs[k]
            np.matmul(h, w_hh_t, out=h_new)
            h_new += projected[t]
            act(h_new, h_new)
            h = h_new
    return _sequence_output(outputs, output_sequence), _last(outputs, h0)
