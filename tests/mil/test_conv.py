"""conv / conv_transpose kernels of the Core ML reference runtime, run from saved packages and
checked against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from tests.mil.harness import run_ios17 as _run  # noqa: E402

IOS17 = ct.target.iOS17
RNG = np.random.default_rng(0)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _t(a):
    return torch.from_numpy(np.asarray(a))


def test_conv2d_pad_types_strides_dilations_groups_match_torch():
    x, w, w_groups, bias = _rand(1, 4, 9, 10), _rand(6, 4, 3, 2), _rand(6, 2, 3, 3), _rand(6)

    def build(x):
        return (
            mb.conv(x=x, weight=w, bias=bias, strides=[2, 1], dilations=[1, 2], name="valid"),
            mb.conv(x=x, weight=w, pad_type="same", strides=[2, 3], name="same"),
            mb.conv(x=x, weight=w, pad_type="same_lower", name="same_lower"),
            mb.conv(x=x, weight=w_groups, groups=2, pad_type="custom", pad=[1, 0, 2, 1], name="custom"),
        )

    out = _run(build, [mb.TensorSpec(shape=x.shape)], {"x": x})
    tx, tw = _t(x), _t(w)
    expected = {
        "valid": F.conv2d(tx, tw, _t(bias), stride=(2, 1), dilation=(1, 2)),
        # H: out 5, total pad 2 -> (1, 1); W: out 4, total pad 1 -> extra on the right
        "same": F.conv2d(F.pad(tx, (0, 1, 1, 1)), tw, stride=(2, 3)),
        # H: total pad 2 -> (1, 1); W: total pad 1 -> extra on the left
        "same_lower": F.conv2d(F.pad(tx, (1, 0, 1, 1)), tw),
        "custom": F.conv2d(F.pad(tx, (2, 1, 1, 0)), _t(w_groups), groups=2),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(out[name], value.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("rank", [1, 3])
def test_conv_1d_and_3d_with_dynamic_weight(rank):
    x = _rand(2, 2, *([6] * rank))
    w = _rand(3, 2, *([2] * rank))
    specs = [mb.TensorSpec(shape=x.shape), mb.TensorSpec(shape=w.shape)]
    out = _run(lambda x, w: mb.conv(x=x, weight=w, strides=[2] * rank, name="y"), specs, {"x": x, "w": w})
    conv = {1: F.conv1d, 3: F.conv3d}[rank]
    np.testing.assert_allclose(out["y"], conv(_t(x), _t(w), stride=2).numpy(), rtol=1e-5, atol=1e-5)


def test_conv_transpose_padding_output_shape_groups_bias_match_torch():
    x = _rand(1, 4, 5, 6)
    w, w_groups, bias = _rand(4, 3, 4, 3), _rand(4, 2, 3, 3), _rand(4)
    full = F.conv_transpose2d(_t(x), _t(w_groups), stride=2, groups=2)  # [1, 4, 11, 13]

    def build(x):
        return (
            mb.conv_transpose(x=x, weight=w, pad_type="custom", pad=[1, 2, 0, 1], strides=[2, 1], name="custom"),
            mb.conv_transpose(x=x, weight=w, pad_type="same", strides=[2, 2], name="same"),
            mb.conv_transpose(x=x, weight=w_groups, bias=bias, groups=2, strides=[2, 2],
                              output_shape=[1, 4, 12, 13], name="out_shape"),
        )

    out = _run(build, [mb.TensorSpec(shape=x.shape)], {"x": x})
    custom = F.conv_transpose2d(_t(x), _t(w), stride=(2, 1))[..., 1:-2, 0:-1]
    np.testing.assert_allclose(out["custom"], custom.numpy(), rtol=1e-5, atol=1e-5)
    # k=(4, 3), s=2: "same" output is D * 2; H crops (1, 1), W crops (0, 1)
    same = F.conv_transpose2d(_t(x), _t(w), stride=2)[..., 1:-1, 0:-1]
    np.testing.assert_allclose(out["same"], same.numpy(), rtol=1e-5, atol=1e-5)
    # output_shape one row longer than the full result: zero-extended, then the bias added
    expected = F.pad(full, (0, 0, 0, 1)) + _t(bias).reshape(1, -1, 1, 1)
    np.testing.assert_allclose(out["out_shape"], expected.numpy(), rtol=1e-5, atol=1e-5)


def test_conv_fp16_program_rounds_to_half_precision():
    x, w = _rand(1, 3, 8, 8), _rand(4, 3, 3, 3)
    out = _run(lambda x: mb.conv(x=x, weight=w, pad_type="same", name="y"), [mb.TensorSpec(shape=x.shape)],
               {"x": x}, precision="fp16")
    x16, w16 = x.astype(np.float16).astype(np.float32), w.astype(np.float16).astype(np.float32)
    expected = F.conv2d(_t(x16), _t(w16), padding=1).numpy()
    np.testing.assert_allclose(out["y"], expected, rtol=2e-3, atol=2e-2)
    assert not np.array_equal(out["y"], F.conv2d(_t(x), _t(w), padding=1).numpy())


def test_conv_ios17_mixed_dtype_weight():
    x, w = _rand(1, 2, 5, 5), _rand(3, 2, 2, 2).astype(np.float16)

    def build(x):
        return mb.conv(x=x, weight=w, name="y")

    out = _run(build, [mb.TensorSpec(shape=x.shape, dtype=types.fp32)], {"x": x})
    expected = F.conv2d(_t(x), _t(w.astype(np.float32))).numpy()
    np.testing.assert_allclose(out["y"], expected, rtol=1e-5, atol=1e-5)


# --- the kernels' fast paths, called directly, against a numpy reference ---------------------

from interop.runtimes.mil.kernels import conv as conv_kernels  # noqa: E402


def _numpy_conv(x, w, b, strides, pads, dilations, groups):
    """Convolution straight from its definition, in float64: zero-pad, then for every kernel tap
    add ``w[:, :, tap] * x[strided window]`` (no torch)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n = x.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    out_sizes = [(x.shape[2 + i] - (w.shape[2 + i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(n)]
    cin_g, cout_g = w.shape[1], w.shape[0] // groups
    out = np.zeros((x.shape[0], w.shape[0], *out_sizes))
    for tap in np.ndindex(*w.shape[2:]):
        index = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                      for t, d, o, s in zip(tap, dilations, out_sizes, strides))
        window = x[(slice(None), slice(None)) + index]
        for g in range(groups):
            wg = w[g * cout_g:(g + 1) * cout_g, :, *tap]
            window_g = window[:, g * cin_g:(g + 1) * cin_g]
            out[:, g * cout_g:(g + 1) * cout_g] += np.einsum("oc,nc...->no...", wg, window_g)
    if b is not None:
        out += np.asarray(b, np.float64).reshape((1, -1) + (1,) * n)
    return out


def _conv_call(x, w, b=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1, ctx=None):
    n = x.ndim - 2
    return conv_kernels.conv(
        ctx, x=x, weight=w, bias=b, strides=np.array(strides or [1] * n, np.int32), pad_type=pad_type,
        pad=np.array(pad if pad is not None else [0] * 2 * n, np.int32),
        dilations=np.array(dilations or [1] * n, np.int32), groups=np.array(groups, np.int32),
    )


def _setup(x, w, b=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    n = x.ndim - 2
    return conv_kernels._conv_setup(
        x.shape, w, b, np.array(strides or [1] * n), pad_type, np.array(pad if pad is not None else [0] * 2 * n),
        np.array(dilations or [1] * n), np.array(groups),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("spatial", [(1, 1), (6, 6), (12, 12), (16, 16), (3, 5, 7), (50,)])
def test_pointwise_conv_blas_path_matches_reference(spatial, dtype):
    x = _rand(1, 8, *spatial).astype(dtype)
    w, b = _rand(5, 8, *[1] * len(spatial)).astype(dtype), _rand(5).astype(dtype)
    assert _setup(x, w, b)[0], "a small batch-1 pointwise conv takes the BLAS path"
    for bias in (b, None):
        out = _conv_call(x, w, bias)
        assert out.dtype == np.float32 and out.shape == (1, 5, *spatial)
        expected = _numpy_conv(x, w, bias, [1] * len(spatial), [(0, 0)] * len(spatial), [1] * len(spatial), 1)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [
    dict(shape=(1, 4, 17, 16)),                                   # 272 positions: above the BLAS limit
    dict(shape=(2, 4, 6, 6)),                                     # batch 2
    dict(shape=(1, 4, 6, 6), strides=[2, 1]),                     # strided
    dict(shape=(1, 4, 6, 6), pad_type="custom", pad=[1, 0, 0, 2]),  # padded: bias-only borders
    dict(shape=(1, 4, 6, 6), pad_type="same", strides=[2, 2]),    # "same" with stride: asymmetric pads
    dict(shape=(1, 4, 6, 6), groups=2),                           # grouped
    dict(shape=(1, 4, 6, 6), kernel=(1, 3)),                      # not 1x1
])
def test_conv_cases_that_must_not_take_the_pointwise_path(case):
    case = dict(case)
    shape, kernel_size = case.pop("shape"), case.pop("kernel", (1, 1))
    groups = case.get("groups", 1)
    x, w, b = _rand(*shape), _rand(6, shape[1] // groups, *kernel_size), _rand(6)
    assert not _setup(x, w, b, **case)[0]
    out = _conv_call(x, w, b, **case)
    n = x.ndim - 2
    strides = case.get("strides", [1] * n)
    pads = conv_kernels.conv_pads(case.get("pad_type", "valid"), case.get("pad"), shape[2:], kernel_size, strides,
                                  [1] * n)
    expected = _numpy_conv(x, w, b, strides, pads, [1] * n, groups)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [
    dict(shape=(1, 3, 9, 10), pad_type="custom", pad=[1, 1, 2, 2]),              # symmetric: torch pads
    dict(shape=(1, 3, 9, 10), pad_type="custom", pad=[1, 0, 2, 3]),              # asymmetric: F.pad first
    dict(shape=(1, 3, 9, 10), pad_type="custom", pad=[4, 4, 5, 5]),              # pads larger than the kernel
    dict(shape=(1, 3, 9, 10), pad_type="same", strides=[2, 3]),
    dict(shape=(1, 3, 9, 10), pad_type="same_lower", dilations=[2, 1]),
    dict(shape=(2, 4, 9, 10), pad_type="same", dilations=[2, 3], groups=2),
    dict(shape=(1, 6, 8, 8), pad_type="custom", pad=[1, 1, 1, 1], strides=[2, 2], groups=6),  # depthwise
    dict(shape=(1, 6, 7, 7), pad_type="custom", pad=[1, 1, 1, 1], strides=[2, 2], groups=6),  # depthwise, odd
    dict(shape=(1, 3, 11), pad_type="custom", pad=[2, 1], strides=[2]),
    dict(shape=(1, 2, 5, 6, 7), pad_type="same", strides=[1, 2, 2], dilations=[2, 1, 1]),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_conv_padding_paths_match_reference(case, dtype):
    case = dict(case)
    shape = case.pop("shape")
    n, groups = len(shape) - 2, case.get("groups", 1)
    x, w, b = _rand(*shape).astype(dtype), _rand(6, shape[1] // groups, *[3] * n).astype(dtype), _rand(6).astype(dtype)
    _, _, f_pad, padding, *_ = _setup(x, w, b, **case)
    pads = conv_kernels.conv_pads(case["pad_type"], case.get("pad"), shape[2:], w.shape[2:],
                                  case.get("strides", [1] * n), case.get("dilations", [1] * n))
    symmetric = all(before == after for before, after in pads)
    assert (f_pad is None) == symmetric and (padding == [p for p, _ in pads] if symmetric else padding == 0)
    out = _conv_call(x, w, b, **case)
    assert out.dtype == np.float32
    expected = _numpy_conv(x, w, b, case.get("strides", [1] * n), pads, case.get("dilations", [1] * n), groups)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


class _Ctx:
    """Stands in for the interpreter's per-op kernel context (only its identity matters)."""


def test_conv_memo_follows_new_bias_and_shapes():
    ctx = _Ctx()
    x, w = _rand(1, 4, 6, 6), _rand(3, 4, 1, 1)
    b1, b2 = _rand(3), _rand(3)
    first = _conv_call(x, w, b1, ctx=ctx)
    np.testing.assert_allclose(_conv_call(x, w, b1, ctx=ctx), first)
    other_bias = _conv_call(x, w, b2, ctx=ctx)  # another bias array: not the remembered one
    np.testing.assert_allclose(other_bias, _numpy_conv(x, w, b2, [1, 1], [(0, 0)] * 2, [1, 1], 1), rtol=1e-5, atol=1e-5)
    big = _rand(1, 4, 20, 20)  # another input shape: now above the BLAS limit
    np.testing.assert_allclose(_conv_call(big, w, b2, ctx=ctx),
                               _numpy_conv(big, w, b2, [1, 1], [(0, 0)] * 2, [1, 1], 1), rtol=1e-5, atol=1e-5)
    w3 = _rand(3, 4, 3, 3)  # another weight shape with the same parameter objects
    np.testing.assert_allclose(_conv_call(x, w3, b2, ctx=ctx),
                               _numpy_conv(x, w3, b2, [1, 1], [(0, 0)] * 2, [1, 1], 1), rtol=1e-5, atol=1e-5)
    assert not np.shares_memory(_conv_call(x, w, None, ctx=ctx), x)


def _numpy_conv_transpose_full(x, w, strides, dilations, groups):
    """Transposed convolution straight from its definition (float64): every input element scatters
    ``x * w`` to ``i * stride + tap * dilation``; no cropping."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    in_sizes, k = x.shape[2:], w.shape[2:]
    full = [(i - 1) * s + (kk - 1) * d + 1 for i, s, kk, d in zip(in_sizes, strides, k, dilations)]
    cin_g, cout_g = x.shape[1] // groups, w.shape[1]
    out = np.zeros((x.shape[0], cout_g * groups, *full))
    for tap in np.ndindex(*k):
        index = tuple(slice(t * d, t * d + (i - 1) * s + 1, s) for t, d, i, s in zip(tap, dilations, in_sizes, strides))
        for g in range(groups):
            wg = w[g * cin_g:(g + 1) * cin_g, :, *tap]  # [cin_g, cout_g]
            contrib = np.einsum("co,nc...->no...", wg, x[:, g * cin_g:(g + 1) * cin_g])
            out[(slice(None), slice(g * cout_g, (g + 1) * cout_g)) + index] += contrib
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_conv_transpose_crops_and_extends_like_the_definition(dtype):
    x = _rand(1, 4, 5, 6).astype(dtype)
    w, b = _rand(4, 3, 3, 4).astype(dtype), _rand(6).astype(dtype)
    full = _numpy_conv_transpose_full(x, w, [2, 2], [1, 2], 2)  # [1, 6, 11, 17]
    bias = np.asarray(b, np.float64).reshape(1, -1, 1, 1)

    def call(**kw):
        kw.setdefault("strides", np.array([2, 2])); kw.setdefault("dilations", np.array([1, 2]))
        return conv_kernels.conv_transpose(None, x=x, weight=w, groups=np.array(2), **kw)

    out = call(bias=b, pad_type="custom", pad=np.array([1, 2, 0, 3]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, full[..., 1:-2, 0:-3] + bias, rtol=1e-5, atol=1e-4)
    out = call(pad_type="same", pad=np.zeros(4, int))  # 10 x 12: crop (0, 1) and (2, 3)
    np.testing.assert_allclose(out, full[..., 0:10, 2:14], rtol=1e-5, atol=1e-4)
    out = call(bias=b, pad_type="valid", pad=np.zeros(4, int), output_shape=np.array([1, 6, 13, 9]))
    extended = np.pad(full, [(0, 0), (0, 0), (0, 2), (0, 0)])[..., :13, :9] + bias  # zeros, then the bias
    np.testing.assert_allclose(out, extended, rtol=1e-5, atol=1e-4)
