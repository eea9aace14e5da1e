"""Reduction kernels of the Core ML reference runtime, run from saved packages and checked
against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from tests.mil.harness import run_builder  # noqa: E402

SHAPE = (2, 3, 4)
REDUCTIONS = {
    "reduce_sum": lambda t, d, k: t.sum(dim=d, keepdim=k),
    "reduce_mean": lambda t, d, k: t.mean(dim=d, keepdim=k),
    "reduce_max": lambda t, d, k: t.amax(dim=d, keepdim=k),
    "reduce_min": lambda t, d, k: t.amin(dim=d, keepdim=k),
    "reduce_prod": lambda t, d, k: _prod(t, d, k),
    "reduce_l1_norm": lambda t, d, k: t.abs().sum(dim=d, keepdim=k),
    "reduce_l2_norm": lambda t, d, k: t.square().sum(dim=d, keepdim=k).sqrt(),
    "reduce_sum_square": lambda t, d, k: t.square().sum(dim=d, keepdim=k),
    "reduce_log_sum": lambda t, d, k: t.sum(dim=d, keepdim=k).log(),
    "reduce_log_sum_exp": lambda t, d, k: t.logsumexp(dim=d, keepdim=k),
}
# (axes, keep_dims); axes None reduces everything
CASES = [([1], False), ([0, -1], True), (None, False), (None, True)]


def _prod(t, dims, keep):
    for d in sorted((d % t.ndim for d in dims), reverse=True):
        t = t.prod(dim=d, keepdim=keep)
    return t


def _run(build, x, dtype=types.fp32, **kw):
    spec = [mb.TensorSpec(shape=x.shape, dtype=dtype)]
    return run_builder(build, spec, {"x": x}, opset_version=ct.target.iOS17, **kw)


def _program(x):
    return tuple(
        getattr(mb, op)(x=x, axes=axes, keep_dims=keep, name=f"{op}_{i}")
        for op in REDUCTIONS
        for i, (axes, keep) in enumerate(CASES)
    )


def _expected(x_np):
    t = torch.from_numpy(x_np).double()
    want = {}
    for op, fn in REDUCTIONS.items():
        for i, (axes, keep) in enumerate(CASES):
            dims = list(range(t.ndim)) if axes is None else axes
            want[f"{op}_{i}"] = fn(t, dims, keep).numpy()
    return want


def _x():
    return np.random.default_rng(0).uniform(0.5, 2.0, size=SHAPE).astype(np.float32)  # positive: log_sum


def test_reductions_match_torch():
    x = _x()
    out = _run(_program, x)
    for name, want in _expected(x).items():
        assert out[name].shape == want.shape, name
        np.testing.assert_allclose(out[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_reductions_fp16():
    x = _x()
    out, trace = _run(_program, x, precision="fp16", intermediate=True)
    assert trace["reduce_sum_0_cast_fp16"].dtype == np.float16
    for name, want in _expected(x.astype(np.float16).astype(np.float32)).items():
        np.testing.assert_allclose(out[name], want, rtol=3e-3, atol=3e-3, err_msg=name)


def test_int32_reductions_stay_int32():
    x = np.array([[1, 2, 4], [-3, 5, 7]], dtype=np.int32)

    def build(x):
        return (
            mb.reduce_sum(x=x, axes=[1], name="sum"),
            mb.reduce_mean(x=x, axes=[1], name="mean"),
            mb.reduce_prod(x=x, axes=[0], name="prod"),
        )

    out = _run(build, x, dtype=types.int32)
    np.testing.assert_array_equal(out["sum"], [7, 9])
    np.testing.assert_array_equal(out["mean"], [2, 3])  # 7/3 and 9/3, truncated
    np.testing.assert_array_equal(out["prod"], [-3, 10, 28])
    assert out["mean"].dtype == np.int32


def test_argmax_argmin():
    x = np.array([[[1, 5, 5], [0, -2, -2]], [[3, 3, 1], [9, 0, 9]]], dtype=np.float32)  # ties: first index

    def build(x):
        return (
            mb.reduce_argmax(x=x, name="argmax_last"),
            mb.reduce_argmin(x=x, axis=-1, name="argmin_last"),
            mb.reduce_argmax(x=x, axis=1, keep_dims=True, name="argmax_keep"),
            mb.reduce_argmin(x=x, axis=0, output_dtype="uint16", name="argmin_u16"),
        )

    out = _run(build, x)
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(out["argmax_last"], [[1, 0], [0, 0]])
    np.testing.assert_array_equal(out["argmin_last"], [[0, 1], [2, 1]])
    np.testing.assert_array_equal(out["argmax_keep"], t.argmax(dim=1, keepdim=True).numpy())
    np.testing.assert_array_equal(out["argmin_u16"], t.argmin(dim=0).numpy())
    assert out["argmax_last"].dtype == np.int32
