"""Activation kernels of the Core ML reference runtime, run from saved packages and checked
against torch.nn.functional."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402

from tests.mil.harness import run_builder  # noqa: E402

SHAPE = (2, 3, 4, 5)
ALPHA_C = np.array([0.1, 0.5, 2.0], dtype=np.float32)
BETA_C = np.array([1.0, 0.5, 3.0], dtype=np.float32)


def _x():
    x = np.random.default_rng(0).uniform(-6, 8, size=SHAPE).astype(np.float32)
    x[0, 0, 0, :3] = [0.0, 0.3, 6.0]  # boundaries of relu / thresholded_relu / relu6
    return x


def _program(x):
    return (
        mb.relu(x=x, name="relu"),
        mb.relu6(x=x, name="relu6"),
        mb.clamped_relu(x=x, alpha=0.2, beta=5.0, name="clamped_relu"),
        mb.elu(x=x, alpha=1.5, name="elu"),
        mb.leaky_relu(x=x, alpha=0.1, name="leaky_relu"),
        mb.thresholded_relu(x=x, alpha=0.3, name="thresholded_relu"),
        mb.prelu(x=x, alpha=ALPHA_C, name="prelu"),
        mb.linear_activation(x=x, alpha=2.0, beta=-1.0, name="linear_activation"),
        mb.scaled_tanh(x=x, alpha=1.7, beta=0.6, name="scaled_tanh"),
        mb.sigmoid(x=x, name="sigmoid"),
        mb.sigmoid_hard(x=x, alpha=0.2, beta=0.5, name="sigmoid_hard"),
        mb.silu(x=x, name="silu"),
        mb.softplus(x=x, name="softplus"),
        mb.softplus_parametric(x=x, alpha=ALPHA_C, beta=BETA_C, name="softplus_parametric"),
        mb.softsign(x=x, name="softsign"),
        mb.softmax(x=x, axis=1, name="softmax"),
        mb.softmax(x=x, name="softmax_last"),
        mb.gelu(x=x, name="gelu_exact"),
        mb.gelu(x=x, mode="TANH_APPROXIMATION", name="gelu_tanh"),
        mb.gelu(x=x, mode="SIGMOID_APPROXIMATION", name="gelu_sigmoid"),
    )


def _expected(x_np):
    x = torch.from_numpy(x_np).double()
    a = torch.from_numpy(ALPHA_C).double().view(1, -1, 1, 1)
    b = torch.from_numpy(BETA_C).double().view(1, -1, 1, 1)
    want = {
        "relu": F.relu(x),
        "relu6": F.relu6(x),
        "clamped_relu": torch.where(x >= 0, torch.clamp(x, max=5.0), torch.clamp(0.2 * x, max=5.0)),
        "elu": F.elu(x, alpha=1.5),
        "leaky_relu": F.leaky_relu(x, 0.1),
        "thresholded_relu": torch.where(x >= 0.3, x, torch.zeros_like(x)),
        "prelu": F.prelu(x, torch.from_numpy(ALPHA_C).double()),
        "linear_activation": 2.0 * x - 1.0,
        "scaled_tanh": 1.7 * torch.tanh(0.6 * x),
        "sigmoid": torch.sigmoid(x),
        "sigmoid_hard": torch.clamp(0.2 * x + 0.5, 0, 1),
        "silu": F.silu(x),
        "softplus": F.softplus(x),
        "softplus_parametric": a * torch.log1p(torch.exp(b * x)),
        "softsign": F.softsign(x),
        "softmax": F.softmax(x, dim=1),
        "softmax_last": F.softmax(x, dim=-1),
        "gelu_exact": F.gelu(x),
        "gelu_tanh": F.gelu(x, approximate="tanh"),
        "gelu_sigmoid": x * torch.sigmoid(1.702 * x),
    }
    return {k: v.numpy() for k, v in want.items()}


def _run(x, **kw):
    spec = [mb.TensorSpec(shape=SHAPE)]
    return run_builder(_program, spec, {"x": x}, opset_version=ct.target.iOS17, **kw)


def test_activations_match_torch():
    x = _x()
    out = _run(x)
    for name, want in _expected(x).items():
        np.testing.assert_allclose(out[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_activations_fp16():
    x = _x()
    out, trace = _run(x, precision="fp16", intermediate=True)
    assert trace["gelu_exact_cast_fp16"].dtype == np.float16
    for name, want in _expected(x.astype(np.float16).astype(np.float32)).items():
        np.testing.assert_allclose(out[name], want, rtol=2e-3, atol=2e-3, err_msg=name)


def test_alpha_of_another_dtype_ios17():
    """From iOS17, alpha/beta may be fp16 while x is fp32."""
    x = _x()

    def build(x):
        return (
            mb.leaky_relu(x=x, alpha=np.float16(0.1), name="leaky_relu"),
            mb.prelu(x=x, alpha=ALPHA_C.astype(np.float16), name="prelu"),
        )

    out = run_builder(build, [mb.TensorSpec(shape=SHAPE)], {"x": x}, opset_version=ct.target.iOS17,
                      target=ct.target.iOS17)
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(out["leaky_relu"], F.leaky_relu(xt, float(np.float16(0.1))).numpy(), rtol=1e-6)
    alpha16 = torch.from_numpy(ALPHA_C.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(out["prelu"], F.prelu(xt, alpha16).numpy(), rtol=1e-6)
