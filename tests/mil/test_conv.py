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

from tests.mil.harness import run_builder  # noqa: E402

IOS17 = ct.target.iOS17
RNG = np.random.default_rng(0)


def _run(build, specs, inputs, **kw):
    kw.setdefault("opset_version", IOS17)
    kw.setdefault("target", IOS17)
    return run_builder(build, specs, inputs, **kw)


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
