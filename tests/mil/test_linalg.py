"""linear / matmul / einsum kernels of the Core ML reference runtime, run from saved packages and
checked against numpy / torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from tests.mil.harness import run_builder  # noqa: E402

IOS17 = ct.target.iOS17
RNG = np.random.default_rng(0)


def _run(build, arrays: dict, **kw):
    kw.setdefault("opset_version", IOS17)
    kw.setdefault("target", IOS17)
    specs = [
        mb.TensorSpec(shape=a.shape, dtype=types.int32 if a.dtype == np.int32 else types.fp32)
        for a in arrays.values()
    ]
    return run_builder(build, specs, arrays, **kw)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_linear_matches_torch():
    x, w, b = _rand(2, 3, 5), _rand(4, 5), _rand(4)

    def build(x):
        return mb.linear(x=x, weight=w, bias=b, name="with_bias"), mb.linear(x=x, weight=w, name="no_bias")

    out = _run(build, {"x": x})
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    np.testing.assert_allclose(out["with_bias"], torch.nn.functional.linear(tx, tw, torch.from_numpy(b)).numpy(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["no_bias"], torch.nn.functional.linear(tx, tw).numpy(), rtol=1e-5, atol=1e-5)


def test_matmul_transposes_broadcasting_and_rank1_x():
    x, y, v = _rand(2, 1, 4, 3), _rand(5, 4, 6), _rand(4)

    def build(x, y, v):
        return (
            mb.matmul(x=x, y=y, transpose_x=True, name="bcast"),  # [2,1,3,4] @ [5,4,6] -> [2,5,3,6]
            mb.matmul(x=y, y=y, transpose_y=True, name="t_y"),
            mb.matmul(x=v, y=y, name="vec_mat"),  # [4] @ [5,4,6] -> [5,6]
        )

    out = _run(build, {"x": x, "y": y, "v": v})
    np.testing.assert_allclose(out["bcast"], np.matmul(np.swapaxes(x, -1, -2), y), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["t_y"], np.matmul(y, np.swapaxes(y, -1, -2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["vec_mat"], np.matmul(v, y), rtol=1e-5, atol=1e-5)


def test_matmul_int32_and_fp16():
    a = RNG.integers(-50, 50, size=(3, 4)).astype(np.int32)
    b = RNG.integers(-50, 50, size=(4, 2)).astype(np.int32)
    out = _run(lambda a, b: mb.matmul(x=a, y=b, name="out"), {"a": a, "b": b})
    np.testing.assert_array_equal(out["out"], a @ b)

    x, y = _rand(8, 64), _rand(64, 8)
    out = _run(lambda x, y: mb.matmul(x=x, y=y, name="out"), {"x": x, "y": y}, precision="fp16")
    x16, y16 = (t.astype(np.float16).astype(np.float32) for t in (x, y))
    np.testing.assert_allclose(out["out"], x16 @ y16, rtol=5e-3, atol=5e-2)


def test_einsum_both_layouts_with_broadcasting():
    a4, b4 = _rand(2, 3, 1, 4), _rand(1, 4, 5, 6)
    a3, b3 = _rand(3, 5, 4), _rand(4, 1, 6)

    def build(a4, b4, a3, b3):
        return (
            mb.einsum(values=(a4, b4), equation="bnhm,bmhq->bnhq", name="rank4"),
            mb.einsum(values=(a3, b3), equation="chw,whr->chr", name="rank3"),
        )

    out = _run(build, {"a4": a4, "b4": b4, "a3": a3, "b3": b3})
    ref4 = torch.einsum("bnhm,bmhq->bnhq", torch.from_numpy(a4), torch.from_numpy(b4)).numpy()
    ref3 = torch.einsum("chw,whr->chr", torch.from_numpy(a3), torch.from_numpy(b3)).numpy()
    np.testing.assert_allclose(out["rank4"], ref4, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["rank3"], ref3, rtol=1e-5, atol=1e-5)
