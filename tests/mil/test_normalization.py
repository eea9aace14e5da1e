"""Normalization kernels of the Core ML reference runtime, run from saved packages and checked
against torch / numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402

from tests.mil.harness import run_x as _run  # noqa: E402

IOS17 = ct.target.iOS17
RNG = np.random.default_rng(0)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_batch_instance_layer_norm_match_torch():
    x = _rand(2, 3, 4, 5)
    mean, var, gamma, beta = _rand(3), np.abs(_rand(3)) + 0.1, _rand(3), _rand(3)
    ln_gamma, ln_beta = _rand(4, 5), _rand(4, 5)

    def build(x):
        return (
            mb.batch_norm(x=x, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=1e-3, name="bn"),
            mb.batch_norm(x=x, mean=mean, variance=var, name="bn_plain"),
            mb.instance_norm(x=x, gamma=gamma, beta=beta, epsilon=1e-2, name="inorm"),
            mb.layer_norm(x=x, axes=[-2, -1], gamma=ln_gamma, beta=ln_beta, epsilon=1e-4, name="ln"),
            mb.layer_norm(x=x, axes=[1], name="ln_mid"),
        )

    out = _run(build, x)
    t = torch.from_numpy(x)
    tm, tv, tg, tb = (torch.from_numpy(a) for a in (mean, var, gamma, beta))
    expected = {
        "bn": F.batch_norm(t, tm, tv, tg, tb, eps=1e-3),
        "bn_plain": F.batch_norm(t, tm, tv, eps=1e-5),
        "inorm": F.instance_norm(t, weight=tg, bias=tb, eps=1e-2),
        "ln": F.layer_norm(t, (4, 5), torch.from_numpy(ln_gamma), torch.from_numpy(ln_beta), eps=1e-4),
        "ln_mid": F.layer_norm(t.transpose(1, 3), (3,)).transpose(1, 3),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(out[name], value.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_l2_norm_and_local_response_norm():
    x = _rand(2, 4, 3, 5)

    def build(x):
        return (
            mb.l2_norm(x=x, epsilon=1e-6, name="l2"),
            mb.local_response_norm(x=x, size=3, alpha=1e-2, beta=0.75, k=2.0, name="lrn"),
            mb.local_response_norm(x=x, size=2, name="lrn_even"),
        )

    out = _run(build, x)
    flat = x.reshape(2, -1)
    l2 = (flat / np.sqrt((flat**2).sum(axis=1, keepdims=True) + 1e-6)).reshape(x.shape)
    np.testing.assert_allclose(out["l2"], l2, rtol=1e-5, atol=1e-6)
    t = torch.from_numpy(x)
    lrn = F.local_response_norm(t, 3, alpha=1e-2, beta=0.75, k=2.0).numpy()
    np.testing.assert_allclose(out["lrn"], lrn, rtol=1e-5, atol=1e-6)
    lrn_even = F.local_response_norm(t, 2, alpha=1e-4, beta=0.75, k=1.0).numpy()
    np.testing.assert_allclose(out["lrn_even"], lrn_even, rtol=1e-5, atol=1e-6)


def test_local_response_norm_rank3_normalizes_along_axis_minus_3():
    """Values of coremltools' iOS14 LRN smoke test: for ``[1, 3, 2]`` the channel axis (-3) has size 1."""
    x = np.array([[[1.0, -7.0], [5.0, -6.0], [-3.0, -5.0]]], dtype=np.float32)
    out = _run(lambda x: mb.local_response_norm(x=x, size=2, name="y"), x)
    expected = [[[0.99996257, -6.98716545], [4.99531746, -5.99191284], [-2.99898791, -4.99531746]]]
    np.testing.assert_allclose(out["y"], expected, rtol=1e-6)


def test_layer_norm_fp16():
    x = (_rand(2, 8, 16) * 4 + 3).astype(np.float32)
    out = _run(lambda x: mb.layer_norm(x=x, axes=[-1], epsilon=1e-5, name="y"), x, precision="fp16")
    x16 = torch.from_numpy(x.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(out["y"], F.layer_norm(x16, (16,)).numpy(), rtol=1e-2, atol=1e-2)
    assert out["y"].dtype == np.float32 and np.array_equal(out["y"], out["y"].astype(np.float16).astype(np.float32))
