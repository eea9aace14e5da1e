"""avg_pool / max_pool / l2_pool kernels of the Core ML reference runtime, run from saved packages
and checked against torch (or the values of coremltools' own op tests)."""

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


# --- the kernels' strided-view path, called directly, against the generic definition ---------

from interop.runtimes.mil.kernels import pool as pool_kernels  # noqa: E402

_KERNELS = {"max": pool_kernels.max_pool, "avg": pool_kernels.avg_pool, "l2": pool_kernels.l2_pool}


def _pool_call(kind, x, kernel_sizes, strides, pad_type="valid", pad=None, ceil_mode=False, exclude=False, ctx=None):
    n = x.ndim - 2
    kw = dict(x=x, kernel_sizes=np.array(kernel_sizes, np.int32), strides=np.array(strides, np.int32),
              pad_type=pad_type, pad=np.array(pad if pad is not None else [0] * 2 * n, np.int32),
              ceil_mode=np.array(ceil_mode))
    if kind == "avg":
        kw["exclude_padding_from_average"] = np.array(exclude)
    return _KERNELS[kind](ctx, **kw), kw


def _check_against_generic(kind, x, *args, **kw):
    out, call = _pool_call(kind, x, *args, **kw)
    call = {k: v for k, v in call.items() if k != "x"}
    expected = pool_kernels._generic_pool(kind, x, **call)
    assert out.dtype == np.float32 and out.shape == expected.shape
    if kind == "max":  # no arithmetic: bit for bit
        np.testing.assert_array_equal(out, expected)
    else:  # sums in another order
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    return out


POOL_CASES = [
    # (x shape, kernel, strides, pad_type, pad, ceil_mode)
    ((1, 16, 64, 64), [2, 2], [2, 2], "valid", None, False),         # the CNN's: non-overlapping, even
    ((1, 3, 9, 7), [2, 2], [2, 2], "valid", None, False),            # odd sizes: the last row/col dropped
    ((1, 3, 9, 7), [2, 2], [2, 2], "valid", None, True),             # ceil_mode: a half-window at the end
    ((2, 3, 9, 8), [3, 3], [2, 2], "custom", [1, 1, 1, 1], True),    # ceil_mode with padding
    ((1, 2, 8, 8), [3, 3], [2, 2], "same", None, False),             # "same": asymmetric padding
    ((1, 2, 7, 8), [3, 2], [1, 2], "same_lower", None, False),
    ((1, 2, 5, 6), [2, 3], [1, 1], "custom", [3, 2, 0, 4], False),   # padding > kernel/2 (torch refuses)
    ((1, 2, 2, 2), [2, 2], [2, 2], "custom", [3, 3, 3, 3], True),    # windows lying entirely in padding
    ((1, 2, 6, 6), [1, 1], [2, 3], "custom", [1, 0, 0, 1], False),   # 1x1 windows: a strided subsample
    ((1, 2, 6, 6), [1, 1], [1, 1], "valid", None, False),            # identity
    ((1, 2, 40, 9), [12, 3], [4, 1], "custom", [2, 3, 1, 1], True),  # long strided window: unfold
    ((1, 2, 40), [9], [1], "valid", None, False),                    # long stride-1 window: elementwise
    ((1, 2, 30), [8], [3], "same", None, True),                      # 1-D, unfold at the threshold
    ((1, 2, 5, 6, 7), [2, 3, 2], [1, 2, 2], "custom", [1, 0, 1, 2, 0, 1], True),  # 3-D
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("kind", ["max", "avg", "l2"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
def test_pool_kernels_match_the_generic_definition(case, kind, dtype):
    shape, kernel_sizes, strides, pad_type, pad, ceil_mode = case
    x = RNG.standard_normal(shape).astype(dtype)
    for exclude in ((False, True) if kind == "avg" else (False,)):
        _check_against_generic(kind, x, kernel_sizes, strides, pad_type, pad, ceil_mode, exclude)


def test_pool_corner_values():
    # max over a window of padding only is -inf; an average over it is 0 when padding is excluded
    x = np.ones((1, 1, 2, 2), np.float32)
    out, _ = _pool_call("max", x, [2, 2], [2, 2], "custom", [2, 0, 2, 0])
    np.testing.assert_array_equal(out[0, 0], [[-np.inf, -np.inf], [-np.inf, 1.0]])
    out, _ = _pool_call("avg", x, [2, 2], [2, 2], "custom", [2, 0, 2, 0], exclude=True)
    np.testing.assert_array_equal(out[0, 0], [[0.0, 0.0], [0.0, 1.0]])
    out, _ = _pool_call("avg", x, [2, 2], [2, 2], "custom", [1, 0, 1, 0], ceil_mode=True)
    # windows: [pad, x0] x [pad, x0] -> 1/4 ... and the ceil_mode extra is not counted
    np.testing.assert_array_equal(out[0, 0], [[0.25, 0.5], [0.5, 1.0]])
    # NaN propagates through max like numpy's maximum
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    out, _ = _pool_call("max", x, [2, 2], [2, 2])
    assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 0, 1, 1])


def test_pool_results_are_new_arrays_and_the_memo_follows_shapes():
    ctx = type("Ctx", (), {})()
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    for kind in ("max", "avg", "l2"):
        out, _ = _pool_call(kind, x, [1, 1], [1, 1])
        assert not np.shares_memory(out, x)
    first, _ = _pool_call("max", x, [2, 2], [2, 2], ctx=ctx)
    assert first.shape == (1, 2, 3, 3)
    bigger = RNG.standard_normal((1, 2, 10, 8)).astype(np.float32)
    out = _check_against_generic("max", bigger, [2, 2], [2, 2], ctx=ctx)
    assert out.shape == (1, 2, 5, 4)


def test_pool_random_geometries_match_the_generic_definition():
    rng = np.random.default_rng(3)
    checked = 0
    while checked < 150:
        rank = int(rng.integers(1, 4))
        sizes = [int(v) for v in rng.integers(1, 9, size=rank)]
        kernel_sizes = [int(rng.integers(1, s + 3)) for s in sizes]
        strides = [int(rng.integers(1, 4)) for _ in sizes]
        pad_type = str(rng.choice(["valid", "same", "same_lower", "custom"]))
        pad = [int(v) for v in rng.integers(0, 5, size=2 * rank)]
        ceil_mode = bool(rng.random() < 0.4)
        x = rng.standard_normal((1, 2, *sizes)).astype(np.float32)
        geo = pool_kernels._Geometry(x.shape, kernel_sizes, strides, pad_type, pad, ceil_mode)
        if min(geo.out_sizes) < 1:
            continue
        for kind in ("max", "avg", "l2"):
            _check_against_generic(kind, x, kernel_sizes, strides, pad_type, pad, ceil_mode,
                                   exclude=bool(rng.random() < 0.5))
        checked += 1


def test_fp16_program_pools_on_the_fast_path_like_torch():
    """The CNN benchmark's pattern, as an fp16 program: 2x2 max / avg pooling over even sizes."""
    x = RNG.standard_normal((1, 4, 16, 16)).astype(np.float32)

    def build(x):
        return (mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid", name="max"),
                mb.avg_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid", name="avg"))

    out = _run(build, x, precision="fp16")
    t = torch.from_numpy(x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(out["max"], F.max_pool2d(t, 2).numpy().astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(out["avg"], F.avg_pool2d(t, 2).numpy(), rtol=1e-3, atol=1e-3)
