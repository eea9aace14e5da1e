"""Recurrent kernels (lstm, gru, rnn) against torch / numpy, through saved .mlpackages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coremltools as ct
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from .harness import run_builder as _run_builder


def run_builder(build, specs, inputs, target=ct.target.iOS17, **kw):
    return _run_builder(build, specs, inputs, opset_version=target, **kw)

SEQ, BATCH, INPUT, HIDDEN = 5, 2, 3, 4


def _ifzo_to_ifoz(w: np.ndarray) -> np.ndarray:
    i, f, z, o = np.split(w, 4)
    return np.concatenate([i, f, o, z])


def _torch_lstm_weights(layer: torch.nn.LSTM, suffix: str = "") -> dict[str, np.ndarray]:
    sd = {k: v.detach().numpy() for k, v in layer.state_dict().items()}
    return {
        "weight_ih": _ifzo_to_ifoz(sd[f"weight_ih_l0{suffix}"]),
        "weight_hh": _ifzo_to_ifoz(sd[f"weight_hh_l0{suffix}"]),
        "bias": _ifzo_to_ifoz(sd[f"bias_ih_l0{suffix}"] + sd[f"bias_hh_l0{suffix}"]),
    }


def _specs(*shapes, dtype=types.fp32):
    return [mb.TensorSpec(shape=s, dtype=dtype) for s in shapes]


def _outputs(result: dict) -> list[np.ndarray]:
    return list(result.values())


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_lstm_matches_torch(direction):
    torch.manual_seed(0)
    layer = torch.nn.LSTM(INPUT, HIDDEN)
    x = torch.randn(SEQ, BATCH, INPUT)
    h0, c0 = torch.randn(1, BATCH, HIDDEN), torch.randn(1, BATCH, HIDDEN)
    ref_x = torch.flip(x, [0]) if direction == "reverse" else x
    out, (hn, cn) = layer(ref_x, (h0, c0))
    w = _torch_lstm_weights(layer)

    def build(x, h, c):
        return mb.lstm(x=x, initial_h=h, initial_c=c, direction=direction, output_sequence=True, **w)

    got = _outputs(run_builder(build, _specs((SEQ, BATCH, INPUT), (BATCH, HIDDEN), (BATCH, HIDDEN)),
                               {"x": x.numpy(), "h": h0[0].numpy(), "c": c0[0].numpy()},
                               target=ct.target.iOS17))
    for g, e in zip(got, [out, hn[0], cn[0]]):
        np.testing.assert_allclose(g, e.detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("output_sequence", [True, False])
def test_bidirectional_lstm_matches_torch(output_sequence):
    torch.manual_seed(1)
    layer = torch.nn.LSTM(INPUT, HIDDEN, bidirectional=True)
    x = torch.randn(SEQ, BATCH, INPUT)
    h0, c0 = torch.randn(2, BATCH, HIDDEN), torch.randn(2, BATCH, HIDDEN)
    out, (hn, cn) = layer(x, (h0, c0))
    if not output_sequence:
        out = torch.cat([out[-1:, :, :HIDDEN], out[:1, :, HIDDEN:]], dim=2)
    fwd, back = _torch_lstm_weights(layer), _torch_lstm_weights(layer, "_reverse")

    def build(x, h, c):
        return mb.lstm(x=x, initial_h=h, initial_c=c, direction="bidirectional",
                       output_sequence=output_sequence, weight_ih_back=back["weight_ih"],
                       weight_hh_back=back["weight_hh"], bias_back=back["bias"], **fwd)

    def both(t):
        return torch.cat([t[0], t[1]], dim=-1).detach().numpy()

    got = _outputs(run_builder(build, _specs((SEQ, BATCH, INPUT), (BATCH, 2 * HIDDEN), (BATCH, 2 * HIDDEN)),
                               {"x": x.numpy(), "h": both(h0), "c": both(c0)}))
    for g, e in zip(got, [out.detach().numpy(), both(hn), both(cn)]):
        np.testing.assert_allclose(g, e, atol=1e-5)


def _numpy_peephole_lstm(x, w_ih, w_hh, b, p, clip):
    """coremltools' reference: hard_sigmoid cell gates, peepholes, cell state clipped."""
    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    h = np.zeros((x.shape[1], HIDDEN))
    c = np.zeros((x.shape[1], HIDDEN))
    p_i, p_f, p_o = np.split(p, 3)
    for x_t in x:
        g_i, g_f, g_o, g_z = np.split(x_t @ w_ih.T + h @ w_hh.T + b, 4, axis=-1)
        i, f = sigmoid(g_i + c * p_i), sigmoid(g_f + c * p_f)
        c = np.clip(f * c + i * np.tanh(g_z), -clip, clip)
        o = sigmoid(g_o + c * p_o)
        h = o * np.clip(0.2 * c + 0.5, 0, 1)
    return h


def test_lstm_peephole_clip_activations():
    rng = np.random.default_rng(0)
    x = rng.random((SEQ, BATCH, INPUT), dtype=np.float32)
    w_ih = rng.random((4 * HIDDEN, INPUT), dtype=np.float32)
    w_hh = rng.random((4 * HIDDEN, HIDDEN), dtype=np.float32)
    b = rng.random(4 * HIDDEN, dtype=np.float32) - 0.5
    p = rng.random(3 * HIDDEN, dtype=np.float32) - 0.5

    def build(x):
        zeros = np.zeros((BATCH, HIDDEN), np.float32)
        return mb.lstm(x=x, initial_h=zeros, initial_c=zeros, weight_ih=w_ih, weight_hh=w_hh, bias=b,
                       peephole=p, activation="hard_sigmoid", clip=np.float32(0.2))[0]

    got = _outputs(run_builder(build, _specs((SEQ, BATCH, INPUT)), {"x": x}))[0]
    np.testing.assert_allclose(got[0], _numpy_peephole_lstm(x, w_ih, w_hh, b, p, 0.2), atol=1e-5)


def test_lstm_fp16_program_stays_close_to_torch():
    torch.manual_seed(2)
    layer = torch.nn.LSTM(INPUT, HIDDEN)
    x = torch.randn(SEQ, BATCH, INPUT)
    out, _ = layer(x)
    w = {k: v.astype(np.float16) for k, v in _torch_lstm_weights(layer).items()}

    def build(x):
        zeros = np.zeros((BATCH, HIDDEN), np.float16)
        return mb.lstm(x=mb.cast(x=x, dtype="fp16"), initial_h=zeros, initial_c=zeros,
                       output_sequence=True, **w)[0]

    result, trace = run_builder(build, _specs((SEQ, BATCH, INPUT)), {"x": x.numpy()},
                                target=ct.target.iOS17, intermediate=True)
    got = _outputs(result)[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), out.detach().numpy(), atol=5e-3)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_rnn_matches_torch(direction):
    torch.manual_seed(3)
    layer = torch.nn.RNN(INPUT, HIDDEN)
    x, h0 = torch.randn(SEQ, BATCH, INPUT), torch.randn(1, BATCH, HIDDEN)
    out, hn = layer(torch.flip(x, [0]) if direction == "reverse" else x, h0)
    sd = {k: v.detach().numpy() for k, v in layer.state_dict().items()}

    def build(x, h):
        return mb.rnn(x=x, initial_h=h, weight_ih=sd["weight_ih_l0"], weight_hh=sd["weight_hh_l0"],
                      bias=sd["bias_ih_l0"] + sd["bias_hh_l0"], direction=direction, output_sequence=True)

    got = _outputs(run_builder(build, _specs((SEQ, BATCH, INPUT), (BATCH, HIDDEN)),
                               {"x": x.numpy(), "h": h0[0].numpy()}))
    np.testing.assert_allclose(got[0], out.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], hn[0].detach().numpy(), atol=1e-5)


def _torch_gru_as_mil(layer: torch.nn.GRU) -> dict[str, np.ndarray]:
    """torch stacks [r, z, n]; MIL stacks [r, o(=n), z]."""
    sd = {k: v.detach().numpy() for k, v in layer.state_dict().items()}

    def roz(w):
        r, z, n = np.split(w, 3)
        return np.concatenate([r, n, z])

    return {"weight_ih": roz(sd["weight_ih_l0"]), "weight_hh": roz(sd["weight_hh_l0"]),
            "input_bias": roz(sd["bias_ih_l0"]), "bias": roz(sd["bias_hh_l0"])}


def test_gru_reset_after_matches_torch_ios18():
    torch.manual_seed(4)
    layer = torch.nn.GRU(INPUT, HIDDEN)
    x, h0 = torch.randn(SEQ, BATCH, INPUT), torch.randn(1, BATCH, HIDDEN)
    out, hn = layer(x, h0)

    def build(x, h):
        return mb.gru(x=x, initial_h=h, reset_after=True, output_sequence=True, **_torch_gru_as_mil(layer))

    got = _outputs(run_builder(build, _specs((SEQ, BATCH, INPUT), (BATCH, HIDDEN)),
                               {"x": x.numpy(), "h": h0[0].numpy()}, target=ct.target.iOS18))
    np.testing.assert_allclose(got[0], out.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], hn[0].detach().numpy(), atol=1e-5)


def test_gru_reset_before_matches_numpy():
    """iOS15 gru applies the reset gate to h before the recurrent matmul of the candidate gate."""
    rng = np.random.default_rng(5)
    x = rng.random((SEQ, BATCH, INPUT), dtype=np.float32)
    h0 = rng.random((BATCH, HIDDEN), dtype=np.float32)
    w_ih = rng.random((3 * HIDDEN, INPUT), dtype=np.float32) * 2 - 1
    w_hh = rng.random((3 * HIDDEN, HIDDEN), dtype=np.float32) * 2 - 1
    b = rng.random(3 * HIDDEN, dtype=np.float32) * 2 - 1

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    h, outs = h0, []
    (w_r, w_o, w_z), (r_r, r_o, r_z), (b_r, b_o, b_z) = (np.split(a, 3) for a in (w_ih, w_hh, b))
    for x_t in x[::-1]:
        z = sigmoid(x_t @ w_z.T + h @ r_z.T + b_z)
        r = sigmoid(x_t @ w_r.T + h @ r_r.T + b_r)
        o = np.tanh(x_t @ w_o.T + (h * r) @ r_o.T + b_o)
        h = (1 - z) * o + z * h
        outs.append(h)

    def build(x, h):
        return mb.gru(x=x, initial_h=h, weight_ih=w_ih, weight_hh=w_hh, bias=b, direction="reverse",
                      output_sequence=True)

    got = _outputs(run_builder(build, _specs((SEQ, BATCH, INPUT), (BATCH, HIDDEN)), {"x": x, "h": h0}))
    np.testing.assert_allclose(got[0], np.stack(outs), atol=1e-5)
    np.testing.assert_allclose(got[1], h, atol=1e-5)


class _BatchFirstLSTM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(INPUT, HIDDEN, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(HIDDEN, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_batch_first_lstm_converted_by_coremltools(tmp_path, precision):
    """The path of interop's LSTM sample: torch nn.LSTM(batch_first) -> coremltools -> runtime."""
    from interop.runtimes import mil

    torch.manual_seed(6)
    model = _BatchFirstLSTM().eval()
    x = torch.randn(BATCH, SEQ, INPUT)
    mlmodel = ct.convert(
        torch.jit.trace(model, x), inputs=[ct.TensorType(name="x", shape=x.shape)], convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS17,
    )
    mlmodel.save(str(tmp_path / "lstm.mlpackage"))
    got = _outputs(mil.predict(tmp_path / "lstm.mlpackage", {"x": x.numpy()}))[0]
    atol = 1e-5 if precision == "fp32" else 1e-2
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=atol)
