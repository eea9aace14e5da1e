"""avg_pool / max_pool / l2_pool kernels of the Core ML reference runtime, run from saved packages
and checked against torch (or the values of coremltools' own op tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402

from tests.mil.harness import run_builder  # noqa: E402

IOS17 = ct.target.iOS17
RNG = np.random.default_rng(0)


def _run(build, x, **kw):
    kw.setdefault("opset_version", IOS17)
    return run_builder(build, [mb.TensorSpec(shape=x.shape)], {"x": x}, **kw)


def test_pool2d_valid_custom_and_ceil_mode_match_torch():
    x = RNG.standard_normal((2, 3, 9, 8)).astype(np.float32)

    def build(x):
        return (
            mb.max_pool(x=x, kernel_sizes=[3, 2], strides=[2, 2], pad_type="valid", name="max"),
            mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 1], pad_type="custom", pad=[1, 1, 1, 1],
                        name="avg_pad"),
            mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                        exclude_padding_from_average=True, ceil_mode=True, name="avg_ceil"),
            mb.max_pool(x=x, kernel_sizes=[2, 3], strides=[2, 2], pad_type="valid", ceil_mode=True,
                        name="max_ceil"),
            mb.l2_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid", name="l2"),
        )

    out = _run(build, x)
    t = torch.from_numpy(x)
    expected = {
        "max": F.max_pool2d(t, (3, 2), (2, 2)),
        "avg_pad": F.avg_pool2d(t, 3, (2, 1), padding=1, count_include_pad=True),
        "avg_ceil": F.avg_pool2d(t, 3, 2, padding=1, ceil_mode=True, count_include_pad=False),
        "max_ceil": F.max_pool2d(t, (2, 3), 2, ceil_mode=True),
        "l2": F.lp_pool2d(t, 2, 2, 2),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(out[name], value.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


def test_pool_same_padding_follows_coremltools_op_tests():
    """Expected values from coremltools' iOS14 test_pool.py (``same``/``same_lower``, 1-D/2-D)."""
    x1 = np.arange(1, 8, dtype=np.float32).reshape(1, 1, 7)

    def build(x):
        return (
            mb.avg_pool(x=x, kernel_sizes=[3], strides=[3], pad_type="same", exclude_padding_from_average=True,
                        name="avg"),
            mb.max_pool(x=x, kernel_sizes=[3], strides=[3], pad_type="same", name="max"),
            mb.l2_pool(x=x, kernel_sizes=[3], strides=[3], pad_type="same", name="l2"),
        )

    out = _run(build, x1)
    np.testing.assert_allclose(out["avg"].ravel(), [1.5, 4.0, 6.5], rtol=1e-6)
    np.testing.assert_allclose(out["max"].ravel(), [2.0, 5.0, 7.0], rtol=1e-6)
    np.testing.assert_allclose(out["l2"].ravel(), [2.236068, 7.071068, 9.219544], rtol=1e-6)

    x2 = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    out = _run(lambda x: mb.avg_pool(x=x, kernel_sizes=[2, 2], pad_type="same_lower", name="y"), x2)
    np.testing.assert_allclose(out["y"].ravel(), [0.25, 0.75, 1.0, 2.5], rtol=1e-6)


def test_pool3d_and_fp16():
    x = RNG.standard_normal((1, 2, 5, 6, 4)).astype(np.float32)

    def build(x):
        return (
            mb.max_pool(x=x, kernel_sizes=[2, 3, 2], strides=[1, 2, 2], pad_type="valid", name="max"),
            mb.avg_pool(x=x, kernel_sizes=[3, 3, 3], strides=[2, 2, 2], pad_type="custom", pad=[1] * 6,
                        name="avg"),
        )

    out = _run(build, x, precision="fp16")
    t = torch.from_numpy(x.astype(np.float16).astype(np.float32))
    expected_max = F.max_pool3d(t, (2, 3, 2), (1, 2, 2)).numpy()
    np.testing.assert_array_equal(out["max"], expected_max.astype(np.float16).astype(np.float32))
    expected_avg = F.avg_pool3d(t, 3, 2, padding=1).numpy()
    np.testing.assert_allclose(out["avg"], expected_avg, rtol=1e-3, atol=1e-3)
