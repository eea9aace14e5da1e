"""Recurrent kernels (lstm, gru, rnn) against torch / numpy, through saved .mlpackages, and their
computation paths (torch's fused oneDNN lstm, the step loop) against each other, called directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coremltools as ct
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from interop.runtimes.mil.kernels import recurrent as rec
from interop.runtimes.mil.values import ConstantCache

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
    torch.manual_seed(6)
    model = _BatchFirstLSTM().eval()
    x = torch.randn(BATCH, SEQ, INPUT)
    got = _convert_and_run(model, x, precision, tmp_path)
    atol = 1e-5 if precision == "fp32" else 1e-2
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=atol)


def _convert_and_run(model, x, precision: str, folder) -> np.ndarray:
    """``model`` traced at ``x`` -> coremltools (iOS17) -> saved package -> the reference runtime."""
    from interop.runtimes import mil

    mlmodel = ct.convert(
        torch.jit.trace(model, x), inputs=[ct.TensorType(name="x", shape=x.shape)], convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS17,
    )
    mlmodel.save(str(folder / "lstm.mlpackage"))
    return _outputs(mil.predict(folder / "lstm.mlpackage", {"x": x.numpy()}))[0]


# ------------------------------------------------------------------------------------------------
# The kernels' computation paths, called directly (no package): torch's fused oneDNN lstm vs the
# step loop vs a plain numpy transcription of the op definitions.


def _np_act(name):
    return {
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "tanh": np.tanh,
        "scaled_tanh": np.tanh,
        "hard_sigmoid": lambda v: np.clip(0.2 * v + 0.5, 0, 1),
        "relu": lambda v: np.maximum(v, 0),
        "linear": lambda v: v,
    }[name]


def _ref_lstm_direction(x, h, c, w_ih, w_hh, b, p, acts, clip, reverse):
    """coremltools' lstm definition, gates [i, f, o, z], in float64."""
    ract, cact, act = (_np_act(a) for a in acts)
    hidden = w_hh.shape[1]
    b = np.zeros(4 * hidden) if b is None else b
    p_i, p_f, p_o = np.split(np.zeros(3 * hidden) if p is None else p, 3)
    outs = []
    for x_t in (x[::-1] if reverse else x):
        g_i, g_f, g_o, g_z = np.split(x_t @ w_ih.T + h @ w_hh.T + b, 4, axis=-1)
        i, f = ract(g_i + p_i * c), ract(g_f + p_f * c)
        c = f * c + i * cact(g_z)
        if clip is not None:
            c = np.clip(c, -clip, clip)
        h = ract(g_o + p_o * c) * act(c)
        outs.append(h)
    return np.stack(outs), h, c


def _ref_lstm(kw):
    f64 = {k: (np.asarray(v, np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
           for k, v in kw.items()}
    acts = (f64.get("recurrent_activation", "sigmoid"), f64.get("cell_activation", "tanh"),
            f64.get("activation", "tanh"))
    clip = f64.get("clip")
    direction, x = f64.get("direction", "forward"), f64["x"]
    h0, c0 = f64["initial_h"], f64["initial_c"]
    if direction != "bidirectional":
        out, h, c = _ref_lstm_direction(x, h0, c0, f64["weight_ih"], f64["weight_hh"], f64.get("bias"),
                                        f64.get("peephole"), acts, clip, direction == "reverse")
    else:
        hid = f64["weight_hh"].shape[1]
        out_f, h_f, c_f = _ref_lstm_direction(x, h0[:, :hid], c0[:, :hid], f64["weight_ih"], f64["weight_hh"],
                                              f64.get("bias"), f64.get("peephole"), acts, clip, False)
        out_b, h_b, c_b = _ref_lstm_direction(x, h0[:, hid:], c0[:, hid:], f64["weight_ih_back"],
                                              f64["weight_hh_back"], f64.get("bias_back"),
                                              f64.get("peephole_back"), acts, clip, True)
        out = np.concatenate([out_f, out_b[::-1]], -1)
        h, c = np.concatenate([h_f, h_b], -1), np.concatenate([c_f, c_b], -1)
    return (out if f64.get("output_sequence") else h[None]), h, c


def _lstm_kwargs(seq, batch, direction="forward", output_sequence=True, bias=True, peephole=None,
                 dtype=np.float32, seed=0, inputs=3, hidden=4, **extra):
    rng = np.random.default_rng(seed)

    def rnd(*shape):
        return rng.standard_normal(shape).astype(np.float32).astype(dtype)

    dirs = 2 if direction == "bidirectional" else 1
    kw = dict(x=rnd(seq, batch, inputs), initial_h=rnd(batch, dirs * hidden), initial_c=rnd(batch, dirs * hidden),
              direction=direction, output_sequence=np.bool_(output_sequence), **extra)
    for suffix in ("", "_back")[:dirs]:
        kw[f"weight_ih{suffix}"] = rnd(4 * hidden, inputs)
        kw[f"weight_hh{suffix}"] = rnd(4 * hidden, hidden)
        kw[f"bias{suffix}"] = rnd(4 * hidden) if bias else None
        if peephole == "zero":
            kw[f"peephole{suffix}"] = np.zeros(3 * hidden, dtype)
        elif peephole == "random":
            kw[f"peephole{suffix}"] = rnd(3 * hidden)
    return kw


@pytest.fixture
def lstm_path(monkeypatch):
    """``lstm_path("fused")`` / ``lstm_path("loop")``: make the kernel take that path whatever the
    shape; ``lstm_path.taken`` records, call by call, whether the fused path was taken."""
    decide = rec._use_fused_lstm

    def spy(*args):
        force.taken.append(decide(*args))
        return force.taken[-1]

    def force(path):
        fused = path == "fused"
        monkeypatch.setattr(rec, "FUSED_LSTM_MIN_STEPS", 0 if fused else 10**9)
        monkeypatch.setattr(rec, "FUSED_LSTM_MIN_STEPS_BATCHED", 0 if fused else 10**9)
        monkeypatch.setattr(rec, "FUSED_LSTM_MAX_HIDDEN", 10**9 if fused else -1)

    force.taken = []
    monkeypatch.setattr(rec, "_use_fused_lstm", spy)
    return force


@pytest.mark.skipif(not rec._fused_lstm_enabled(), reason="torch without oneDNN")
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("output_sequence", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_fused_path_matches_loop(lstm_path, direction, output_sequence, batch, bias):
    kw = _lstm_kwargs(24, batch, direction, output_sequence, bias=bias, peephole="zero", hidden=5, seed=batch)
    lstm_path("fused")
    fused = rec.lstm(None, **kw)
    lstm_path("loop")
    loop = rec.lstm(None, **kw)
    assert lstm_path.taken == [True, False]
    expected = _ref_lstm(kw)
    for f, lp, e in zip(fused, loop, expected):
        assert f.dtype == lp.dtype == np.float32 and f.shape == lp.shape == e.shape
        np.testing.assert_allclose(f, lp, rtol=1e-6, atol=2e-6)
        np.testing.assert_allclose(f, e, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not rec._fused_lstm_enabled(), reason="torch without oneDNN")
def test_lstm_fused_path_fp16_inputs_and_cached_weights(lstm_path):
    kw = _lstm_kwargs(16, 2, "bidirectional", dtype=np.float16, hidden=8, seed=7)
    lstm_path("fused")
    first = rec.lstm(None, **kw)
    entries = len(rec._CACHE)
    again = rec.lstm(None, **kw)  # reordered weights from the cache: same result, no new entry
    assert len(rec._CACHE) == entries
    lstm_path("loop")
    loop = rec.lstm(None, **kw)
    for a, b, c in zip(first, again, loop):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=2e-6)


@pytest.mark.parametrize("acts", [("sigmoid", "tanh", "tanh"), ("hard_sigmoid", "relu", "linear"),
                                  ("tanh", "sigmoid", "scaled_tanh")])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("peephole,clip", [(None, None), ("random", None), ("random", 0.5)])
@pytest.mark.parametrize("hidden", [1, 4])
def test_lstm_loop_matches_definition(lstm_path, acts, direction, peephole, clip, hidden):
    """hidden=1 with batch 3: the gate blocks are strided (batch, 1) columns."""
    kw = _lstm_kwargs(6, 3, direction, peephole=peephole, hidden=hidden, recurrent_activation=acts[0],
                      cell_activation=acts[1], activation=acts[2], clip=None if clip is None else np.float32(clip))
    lstm_path("loop")
    for got, expected in zip(rec.lstm(None, **kw), _ref_lstm(kw)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seq", [1, 24])  # 24: the fused path (default activations) where available
def test_lstm_zero_peephole_is_no_peephole(seq):
    kw = _lstm_kwargs(seq, 1, peephole="zero", hidden=6)
    without = dict(kw, peephole=None)
    for a, b in zip(rec.lstm(None, **kw), rec.lstm(None, **without)):
        np.testing.assert_array_equal(a, b)


def _ref_gru(x, h, w_ih, w_hh, b, b_in, acts, reset_after, reverse):
    """coremltools' gru definition (iOS18), gates [r, o, z], in float64."""
    ract, act = (_np_act(a) for a in acts)
    hidden = w_hh.shape[1]
    (w_r, w_o, w_z), (r_r, r_o, r_z) = np.split(w_ih, 3), np.split(w_hh, 3)
    b_r, b_o, b_z = np.split(np.zeros(3 * hidden) if b is None else b, 3)
    i_r, i_o, i_z = np.split(np.zeros(3 * hidden) if b_in is None else b_in, 3)
    outs = []
    for x_t in (x[::-1] if reverse else x):
        r = ract(x_t @ w_r.T + i_r + h @ r_r.T + b_r)
        z = ract(x_t @ w_z.T + i_z + h @ r_z.T + b_z)
        if reset_after:
            o = act(x_t @ w_o.T + i_o + r * (h @ r_o.T + b_o))
        else:
            o = act(x_t @ w_o.T + i_o + (r * h) @ r_o.T + b_o)
        h = (1 - z) * o + z * h
        outs.append(h)
    return np.stack(outs), h


@pytest.mark.parametrize("reset_after", [False, True])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("output_sequence", [True, False])
@pytest.mark.parametrize("batch,hidden", [(1, 5), (3, 1), (3, 4)])
@pytest.mark.parametrize("biases", ["both", "hidden", "none"])
@pytest.mark.parametrize("acts", [("sigmoid", "tanh"), ("hard_sigmoid", "relu")])
def test_gru_matches_definition(reset_after, direction, output_sequence, batch, hidden, biases, acts):
    rng = np.random.default_rng(batch * 10 + hidden)

    def rnd(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x, h0 = rnd(7, batch, 3), rnd(batch, hidden)
    w_ih, w_hh = rnd(3 * hidden, 3), rnd(3 * hidden, hidden)
    b = None if biases == "none" else rnd(3 * hidden)
    b_in = rnd(3 * hidden) if biases == "both" else None
    got = rec.gru(None, x=x, initial_h=h0, weight_ih=w_ih, weight_hh=w_hh, bias=b, input_bias=b_in,
                  direction=direction, output_sequence=np.bool_(output_sequence), reset_after=np.bool_(reset_after),
                  recurrent_activation=acts[0], activation=acts[1])
    f64 = [None if a is None else a.astype(np.float64) for a in (x, h0, w_ih, w_hh, b, b_in)]
    outs, h = _ref_gru(*f64, acts, reset_after, direction == "reverse")
    expected = (outs if output_sequence else outs[-1:], h)
    for g, e in zip(got, expected):
        assert g.dtype == np.float32 and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_gru_reset_after_differs_from_reset_before():
    """The two gru variants are different functions (the test above would not notice a swap if
    they were not): same weights, different outputs."""
    rng = np.random.default_rng(9)
    kw = dict(x=rng.standard_normal((4, 2, 3), np.float32), initial_h=rng.standard_normal((2, 4), np.float32),
              weight_ih=rng.standard_normal((12, 3), np.float32), weight_hh=rng.standard_normal((12, 4), np.float32),
              bias=rng.standard_normal(12, np.float32))
    before, after = rec.gru(None, **kw, reset_after=False)[1], rec.gru(None, **kw, reset_after=True)[1]
    assert np.max(np.abs(before - after)) > 1e-2


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "hard_sigmoid", "linear"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("batch", [1, 3])
def test_rnn_matches_definition(activation, direction, batch):
    rng = np.random.default_rng(batch)
    x, h0 = rng.standard_normal((6, batch, 3), np.float32), rng.standard_normal((batch, 4), np.float32)
    w_ih, w_hh, b = (rng.standard_normal(s, np.float32) * 0.5 for s in ((4, 3), (4, 4), (4,)))
    outs, h = rec.rnn(None, x=x, initial_h=h0, weight_ih=w_ih, weight_hh=w_hh, bias=b, direction=direction,
                      output_sequence=np.bool_(True), activation=activation)
    act, ref = _np_act(activation), h0.astype(np.float64)
    expected = []
    for x_t in (x[::-1] if direction == "reverse" else x):
        ref = act(x_t @ w_ih.T.astype(np.float64) + ref @ w_hh.T.astype(np.float64) + b)
        expected.append(ref)
    np.testing.assert_allclose(outs, np.stack(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, ref, rtol=1e-5, atol=1e-5)


def test_prepared_weights_cache_follows_the_arrays():
    """The cache never hands an array the prepared copy of another (even one reusing a dead
    array's id) and does not keep weights alive."""
    import gc

    cache = ConstantCache(max_bytes=10_000)
    calls = []

    def build(w):
        calls.append(1)
        return np.array(w) * 2

    w = np.arange(10, dtype=np.float32)
    assert cache.get("t", (w,), build) is cache.get("t", (w,), build) and len(calls) == 1
    assert len(cache) == 1
    del w
    gc.collect()
    assert len(cache) == 0 and cache.nbytes == 0  # went with its array
    for k in range(50):  # fresh arrays, some reusing freed ids: each gets its own values
        v = np.full(10, k, np.float32)
        np.testing.assert_array_equal(cache.get("t", (v,), build), 2 * k)
    big = [np.zeros(1000, np.float32) for _ in range(4)]  # 4000 bytes prepared each: budget keeps 2
    for b in big:
        cache.get("t", (b,), build)
    assert cache.nbytes <= 10_000 and len(cache) == 2


@pytest.mark.parametrize("seq", [SEQ, 24])  # 24 steps: the fused oneDNN path where available
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_lstm_model_both_paths(tmp_path, precision, seq):
    """A 2-layer torch LSTM converted by coremltools, long enough to take torch's fused path."""
    torch.manual_seed(7)
    model = _BatchFirstLSTM().eval()
    x = torch.randn(1, seq, INPUT)
    got = _convert_and_run(model, x, precision, tmp_path)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5 if precision == "fp32" else 1e-2)


@pytest.mark.skipif(not rec._fused_lstm_enabled(), reason="torch without oneDNN")
def test_lstm_fused_path_not_taken_when_onednn_may_use_reduced_precision(lstm_path):
    lstm_path("fused")
    kw = _lstm_kwargs(24, 1)
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # oneDNN may then compute fp32 in bf16
        rec.lstm(None, **kw)
    finally:
        torch.set_float32_matmul_precision(previous)
    rec.lstm(None, **kw)
    assert lstm_path.taken == [False, True]
