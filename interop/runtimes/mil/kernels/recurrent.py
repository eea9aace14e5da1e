"""Recurrent MIL ops: ``lstm``, ``gru``, ``rnn``.

Semantics of coremltools' iOS15 op definitions (fp16 allowed from iOS17, ``gru`` gains
``reset_after`` / ``input_bias`` in iOS18), with the details their docstrings leave open fixed
the way coremltools' own op tests (which pass on Core ML) pin them:

* ``x`` is ``(seq, batch, input)``; states are ``(batch, H)`` (``(batch, 2H)`` for a
  bidirectional lstm, forward half first).
* Gate blocks are stacked along the rows of the weights: lstm ``[i, f, o, z]``, gru
  ``[r, o, z]`` (``o`` is the candidate / "new" gate). ``bias`` is the sum of input and
  hidden biases.
* ``direction="reverse"`` runs the sequence back to front and emits its outputs in processing
  order; a bidirectional lstm emits the backward outputs aligned with input time (like torch).
* lstm ``clip`` clips the cell state after each update; peepholes see the previous cell state
  for ``i`` / ``f`` and the new one for ``o``.

Everything is computed in float32; the interpreter rounds outputs typed fp16.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..registry import kernel

Array = np.ndarray


def _sigmoid(x: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-x))


_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "scaled_tanh": np.tanh,  # alpha = beta = 1, the defaults the recurrent ops use
    "hard_sigmoid": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),
    "sigmoid_hard": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
}


def _activation(name: str) -> Callable[[Array], Array]:
    try:
        return _ACTIVATIONS[str(name).lower()]
    except KeyError:
        raise ValueError(f"unsupported recurrent activation {name!r}") from None


def _f32(value: Array | None) -> Array | None:
    return None if value is None else np.asarray(value, dtype=np.float32)


def _input_projection(x: Array, weight_ih: Array, bias: Array | None) -> Array:
    """``x @ W_ih^T + bias`` for every time step at once: ``(seq, batch, G*H)``."""
    projected = x @ weight_ih.T
    return projected if bias is None else projected + bias


def _scan(step: Callable, projected: Array, state: tuple, reverse: bool) -> tuple[Array, tuple]:
    """Run ``step(projected_t, *state) -> (h, *state)`` over time; outputs in processing order."""
    order = range(projected.shape[0] - 1, -1, -1) if reverse else range(projected.shape[0])
    outputs = []
    for t in order:
        state = step(projected[t], *state)
        outputs.append(state[0])
    return np.stack(outputs), state


def _sequence_output(outputs: Array, output_sequence: bool) -> Array:
    return outputs if bool(output_sequence) else outputs[-1:]


# ---------------------------------------------------------------------------------------- lstm


def _lstm_step_fn(weight_hh: Array, peephole: Array | None, clip, acts: tuple) -> Callable:
    """One lstm time step with gates stacked ``[i, f, o, z]``."""
    recurrent_act, cell_act, act = acts
    hidden = weight_hh.shape[1]
    p_i, p_f, p_o = (np.zeros(hidden, np.float32),) * 3 if peephole is None else np.split(peephole, 3)

    def step(projected_t: Array, h: Array, c: Array) -> tuple[Array, Array]:
        gates = projected_t + h @ weight_hh.T
        g_i, g_f, g_o, g_z = np.split(gates, 4, axis=-1)
        i = recurrent_act(g_i + p_i * c)
        f = recurrent_act(g_f + p_f * c)
        c = f * c + i * cell_act(g_z)
        if clip is not None:
            c = np.clip(c, -clip, clip)
        o = recurrent_act(g_o + p_o * c)
        return o * act(c), c

    return step


def _lstm_direction(x, h0, c0, weight_ih, weight_hh, bias, peephole, clip, acts, reverse):
    step = _lstm_step_fn(_f32(weight_hh), _f32(peephole), clip, acts)
    projected = _input_projection(x, _f32(weight_ih), _f32(bias))
    return _scan(step, projected, (h0, c0), reverse)


@kernel("lstm")
def lstm(ctx, x, initial_h, initial_c, weight_ih, weight_hh, bias=None, peephole=None,
         weight_ih_back=None, weight_hh_back=None, bias_back=None, peephole_back=None,
         direction="forward", output_sequence=False, recurrent_activation="sigmoid",
         cell_activation="tanh", activation="tanh", clip=None):
    """MIL ``lstm`` (iOS15 / iOS17): returns (outputs, last h, last c)."""
    x, h0, c0 = _f32(x), _f32(initial_h), _f32(initial_c)
    acts = tuple(_activation(a) for a in (recurrent_activation, cell_activation, activation))
    clip = None if clip is None else float(clip)
    if str(direction) != "bidirectional":
        outputs, (h, c) = _lstm_direction(x, h0, c0, weight_ih, weight_hh, bias, peephole, clip, acts,
                                          reverse=str(direction) == "reverse")
        return _sequence_output(outputs, output_sequence), h, c
    hidden = weight_hh.shape[1]
    out_f, (h_f, c_f) = _lstm_direction(x, h0[:, :hidden], c0[:, :hidden], weight_ih, weight_hh, bias,
                                        peephole, clip, acts, reverse=False)
    out_b, (h_b, c_b) = _lstm_direction(x, h0[:, hidden:], c0[:, hidden:], weight_ih_back, weight_hh_back,
                                        bias_back, peephole_back, clip, acts, reverse=True)
    if bool(output_sequence):
        outputs = np.concatenate([out_f, out_b[::-1]], axis=-1)
    else:
        outputs = np.concatenate([h_f, h_b], axis=-1)[None]
    return outputs, np.concatenate([h_f, h_b], axis=-1), np.concatenate([c_f, c_b], axis=-1)


# ----------------------------------------------------------------------------------------- gru


def _gru_step_fn(weight_hh: Array, hidden_bias: Array, reset_after: bool, acts: tuple) -> Callable:
    """One gru time step with gates stacked ``[r, o, z]``; ``projected_t`` holds ``W_i x + b_i``."""
    recurrent_act, act = acts
    r_r, r_o, r_z = np.split(weight_hh, 3)
    b_r, b_o, b_z = np.split(hidden_bias, 3)

    def step(projected_t: Array, h: Array) -> tuple[Array]:
        x_r, x_o, x_z = np.split(projected_t, 3, axis=-1)
        r = recurrent_act(x_r + h @ r_r.T + b_r)
        z = recurrent_act(x_z + h @ r_z.T + b_z)
        if reset_after:
            o = act(x_o + r * (h @ r_o.T + b_o))
        else:
            o = act(x_o + (r * h) @ r_o.T + b_o)
        return ((1.0 - z) * o + z * h,)

    return step


@kernel("gru")
def gru(ctx, x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        recurrent_activation="sigmoid", activation="tanh", reset_after=False, input_bias=None):
    """MIL ``gru`` (iOS15 / iOS17; iOS18 ``reset_after`` and ``input_bias``): returns (outputs, last h)."""
    weight_hh = _f32(weight_hh)
    hidden_bias = np.zeros(weight_hh.shape[0], np.float32) if bias is None else _f32(bias)
    acts = (_activation(recurrent_activation), _activation(activation))
    step = _gru_step_fn(weight_hh, hidden_bias, bool(reset_after), acts)
    projected = _input_projection(_f32(x), _f32(weight_ih), _f32(input_bias))
    outputs, (h,) = _scan(step, projected, (_f32(initial_h),), reverse=str(direction) == "reverse")
    return _sequence_output(outputs, output_sequence), h


# ----------------------------------------------------------------------------------------- rnn


@kernel("rnn")
def rnn(ctx, x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        activation="tanh"):
    """MIL ``rnn`` (iOS15 / iOS17): ``h_t = act(W_ih x_t + W_hh h_{t-1} + b)``; returns (outputs, last h)."""
    weight_hh, act = _f32(weight_hh), _activation(activation)

    def step(projected_t: Array, h: Array) -> tuple[Array]:
        return (act(projected_t + h @ weight_hh.T),)

    projected = _input_projection(_f32(x), _f32(weight_ih), _f32(bias))
    outputs, (h,) = _scan(step, projected, (_f32(initial_h),), reverse=str(direction) == "reverse")
    return _sequence_output(outputs, output_sequence), h
