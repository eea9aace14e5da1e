"""Compression / quantization kernels against numpy, through saved .mlpackages."""

from __future__ import annotations

import numpy as np
import pytest

import coremltools as ct
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types
from coremltools.optimize._utils import pack_elements_into_bits

from .harness import run_builder as _run_builder
from .harness import save_program

RNG = np.random.default_rng(0)


def run_builder(build, specs, inputs, target=ct.target.iOS18, **kw):
    return list(_run_builder(build, specs, inputs, opset_version=target, **kw).values())


def _zeros_input(shape):
    """A program input ``x`` of zeros: the weight under test is the output (``x + weight``)."""
    return [mb.TensorSpec(shape=shape)], {"x": np.zeros(shape, np.float32)}


def test_affine_dequantize_per_channel():
    specs, feeds = _zeros_input((1, 1, 2, 2))

    def build(x):
        y = mb.constexpr_affine_dequantize(
            quantized_data=np.array([3, 5, 5, 6], np.uint8).reshape(1, 1, 2, 2),
            zero_point=np.array([2, 4], np.uint8), scale=np.array([1, 2], np.float32), axis=3)
        return mb.add(x=x, y=y)

    got = run_builder(build, specs, feeds, target=ct.target.iOS16)
    np.testing.assert_array_equal(got[0], np.array([1, 2, 3, 4], np.float32).reshape(1, 1, 2, 2))


def test_affine_dequantize_fp16_scale_and_cast():
    """fp16 weights: dequantized in fp16, and constexpr_cast widening fp16 to fp32."""
    scale = np.array([0.1, 0.3], np.float16)
    data = np.array([[1, 255], [7, 9]], np.uint8)
    source = np.array([[1.5, -2.25], [3.0, 1 / 3]], np.float16)
    specs, feeds = _zeros_input((2, 2))

    def build(x):
        w = mb.constexpr_affine_dequantize(quantized_data=data, zero_point=np.uint8(3), scale=scale, axis=0)
        return mb.add(x=mb.cast(x=w, dtype="fp32"), y=mb.constexpr_cast(source_val=source, output_dtype="fp32"))

    got = run_builder(build, specs, feeds, target=ct.target.iOS16)
    dequantized = (scale[:, None].astype(np.float32) * (data.astype(np.float32) - 3)).astype(np.float16)
    np.testing.assert_array_equal(got[0], dequantized.astype(np.float32) + source.astype(np.float32))


def test_ios16_packed_lut_and_sparse():
    lut = np.array([0.5, -1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 1, 2, 3, 4, 5, 6, 7, 9], np.float32)
    idx = RNG.integers(0, 16, size=15).astype(np.uint8)
    mask = RNG.random(15) > 0.5
    nonzero = RNG.random(int(mask.sum()), dtype=np.float32)
    specs, feeds = _zeros_input((3, 5))

    def build(x):
        dense_lut = mb.constexpr_lut_to_dense(indices=pack_elements_into_bits(idx, 4), lut=lut,
                                              shape=np.array([3, 5], np.uint32))
        dense_sparse = mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=np.packbits(mask, bitorder="little"),
                                                    shape=np.array([3, 5], np.uint32))
        return mb.add(x=x, y=dense_lut), mb.add(x=x, y=dense_sparse)

    got = run_builder(build, specs, feeds, target=ct.target.iOS16)
    np.testing.assert_array_equal(got[0], lut[idx].reshape(3, 5))
    expected = np.zeros(15, np.float32)
    expected[mask] = nonzero
    np.testing.assert_array_equal(got[1], expected.reshape(3, 5))


def test_quantize_dequantize_per_channel():
    x = np.array([[-3.7, 0.2, 5.5], [1.25, 2.5, -100.0]], np.float32)
    scale = np.array([0.5, 2.0], np.float32)
    zp = np.array([3, -2], np.int8)

    def build(x):
        q = mb.quantize(input=x, scale=scale, zero_point=zp, axis=0, output_dtype="int8")
        return q, mb.dequantize(input=q, scale=scale, zero_point=zp, axis=0)

    got = run_builder(build, [mb.TensorSpec(shape=x.shape)], {"x": x}, target=ct.target.iOS17)
    expected_q = np.clip(np.around(x / scale[:, None]) + zp[:, None], -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got[0], expected_q)
    np.testing.assert_array_equal(got[1], scale[:, None] * (expected_q.astype(np.float32) - zp[:, None]))


def test_blockwise_shift_scale_int4():
    data = RNG.integers(-8, 8, size=(4, 6)).astype(types.np_int4_dtype)
    scale = RNG.random((2, 3), dtype=np.float32)
    offset = RNG.integers(-8, 8, size=(2, 3)).astype(types.np_int4_dtype)
    specs, feeds = _zeros_input((4, 6))

    def build(x):
        return mb.add(x=x, y=mb.constexpr_blockwise_shift_scale(data=data, scale=scale, offset=offset))

    got = run_builder(build, specs, feeds)
    blocks = np.ones((2, 2))
    expected = np.kron(scale, blocks) * (data.astype(np.float32) - np.kron(offset.astype(np.float32), blocks))
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)


def test_ios18_lut_per_group_scalar():
    """The docstring's case 1: a 2-group 2-bit palettization over axis 0."""
    indices = np.array([2, 3, 3, 0, 1, 0, 3, 0, 2, 1, 0, 3], types.np_uint2_dtype).reshape(6, 2)
    lut = np.array([1.0, 5.0, 9.0, 13.0, 2.0, 10.0, 18.0, 26.0], np.float32).reshape(2, 1, 4, 1)
    specs, feeds = _zeros_input((6, 2))

    def build(x):
        return mb.add(x=x, y=mb.constexpr_lut_to_dense(indices=indices, lut=lut))

    got = run_builder(build, specs, feeds)
    np.testing.assert_array_equal(got[0], np.array([9, 13, 13, 1, 5, 1, 26, 2, 18, 10, 2, 26]).reshape(6, 2))


@pytest.mark.parametrize("vector_axis", [1, -1])
def test_ios18_lut_vector(vector_axis):
    """The docstring's case 2: 1-bit vector palettization, vectors laid along ``vector_axis``."""
    indices = np.array([[[0, 0], [1, 0]], [[1, 1], [0, 0]]], types.np_uint1_dtype)
    a, b = np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])
    lut = np.stack([a, b]).astype(np.float32).reshape(1, 1, 1, 2, 3)
    out_shape = (2, 6, 2) if vector_axis == 1 else (2, 2, 6)
    specs, feeds = _zeros_input(out_shape)

    def build(x):
        return mb.add(x=x, y=mb.constexpr_lut_to_dense(indices=indices, lut=lut, vector_axis=vector_axis))

    got = run_builder(build, specs, feeds)[0]
    vectors = np.where(indices[..., None] == 1, b, a)  # (2, 2, 2, 3)
    if vector_axis == 1:
        expected = np.moveaxis(vectors, -1, 2).reshape(2, 6, 2)
    else:
        expected = vectors.reshape(2, 2, 6)
    np.testing.assert_array_equal(got, expected)


def test_ios18_sparse_chains():
    """sparse_to_dense on its own and fed by lut_to_sparse / sparse_blockwise_shift_scale."""
    mask = (RNG.random((4, 6)) > 0.4).astype(types.np_uint1_dtype)
    n = int(mask.sum())
    nonzero = RNG.random(n, dtype=np.float32)
    lut_idx = RNG.integers(0, 4, size=n).astype(types.np_uint2_dtype)
    lut = np.array([-1.0, 0.5, 2.0, 7.0], np.float32).reshape(1, 1, 4, 1)
    q = RNG.integers(-128, 128, size=n).astype(np.int8)
    scale = np.array([[0.5, 2.0]], np.float32)  # per block of 3 columns
    specs, feeds = _zeros_input((4, 6))

    def build(x):
        plain = mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=mask)
        m1, v1 = mb.constexpr_lut_to_sparse(indices_mask=mask, indices_nonzero_data=lut_idx, lut=lut)
        m2, v2 = mb.constexpr_sparse_blockwise_shift_scale(data_mask=mask, nonzero_data=q, scale=scale)
        return (mb.add(x=x, y=plain), mb.add(x=x, y=mb.constexpr_sparse_to_dense(nonzero_data=v1, mask=m1)),
                mb.add(x=x, y=mb.constexpr_sparse_to_dense(nonzero_data=v2, mask=m2)))

    got = run_builder(build, specs, feeds)
    on = mask.astype(bool)

    def dense(values):
        out = np.zeros((4, 6), np.float32)
        out[on] = values
        return out

    np.testing.assert_array_equal(got[0], dense(nonzero))
    np.testing.assert_array_equal(got[1], dense(lut.ravel()[lut_idx]))
    np.testing.assert_allclose(got[2], dense(q.astype(np.float32)) * np.repeat(scale, 3, axis=1), rtol=1e-6)


def test_corrupted_weight_blob_changes_the_output(tmp_path):
    """Kernels decompress what is stored on disk, so a damaged blob is visible."""
    from coremltools.converters.mil import Builder as mb_

    from interop.runtimes import mil

    data = np.full((64, 64), 7, np.uint8)

    @mb_.program(input_specs=[mb.TensorSpec(shape=(64, 64))], opset_version=ct.target.iOS16)
    def prog(x):
        w = mb.constexpr_affine_dequantize(quantized_data=data, zero_point=np.uint8(0), scale=np.float32(1), axis=0)
        return mb.add(x=x, y=w)

    path = save_program(prog, tmp_path, target=ct.target.iOS16)
    feeds = {"x": np.zeros((64, 64), np.float32)}
    assert np.all(list(mil.predict(path, feeds).values())[0] == 7)
    blob = next(path.rglob("weight.bin"))
    raw = bytearray(blob.read_bytes())
    start = raw.find(bytes(data.ravel()))
    raw[start + 100] = 9
    blob.write_bytes(bytes(raw))
    out = list(mil.predict(path, feeds).values())[0]
    assert out.ravel()[100] == 9 and np.count_nonzero(out != 7) == 1
