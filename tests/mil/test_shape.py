"""Kernels of the MIL tensor_transformation family, run from saved .mlpackages and checked
against numpy / torch."""

from __future__ import annotations

import coremltools as ct
import numpy as np
import pytest
import torch
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from tests.mil.harness import run_outputs as run
from tests.mil.harness import spec

RNG = np.random.default_rng(0)


def test_reshape_zero_and_minus_one_per_opset():
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)

    def build(x):
        return mb.reshape(x=x, shape=[0, -1]), mb.reshape(x=x, shape=[1, 0, -1, 0])

    ios15 = run(lambda x: mb.reshape(x=x, shape=[0, -1, 2]), [spec(x.shape)], {"x": x}, opset=ct.target.iOS15)
    ios17 = run(build, [spec(x.shape)], {"x": x})
    np.testing.assert_array_equal(ios15[0], x.reshape(2, 6, 2))  # 0 copies dim 0
    np.testing.assert_array_equal(ios17[0], x.reshape(3, 8))  # 0 matched from the right: dim 1
    np.testing.assert_array_equal(ios17[1], x.reshape(1, 2, 3, 4))


def test_runtime_shape_reshape_and_reshape_like():
    x = RNG.normal(size=(4, 3)).astype(np.float32)
    ref = np.zeros((2, 2, 3), np.float32)

    def build(x, shape, ref):
        return (
            mb.reshape(x=x, shape=shape),
            mb.reshape_like(x=x, ref_tensors=(ref, x), begins=(0, 1), ends=(2, 2), end_masks=(False, True)),
        )

    shape = np.array([3, -1], np.int32)
    got = run(build, [spec(x.shape), spec((2,), types.int32), spec(ref.shape)], {"x": x, "shape": shape, "ref": ref})
    np.testing.assert_array_equal(got[0], x.reshape(3, 4))
    np.testing.assert_array_equal(got[1], x.reshape(2, 2, 3))


def test_expand_squeeze_transpose_reverse():
    x = RNG.normal(size=(1, 3, 1, 4)).astype(np.float32)

    def build(x):
        return (
            mb.expand_dims(x=x, axes=[-1]),
            mb.squeeze(x=x, axes=[0, 1]),  # dim 1 is not 1: ignored
            mb.squeeze(x=x),
            mb.transpose(x=x, perm=[3, 1, -2, 0]),
            mb.reverse(x=x, axes=[1, -1]),
            mb.reverse(x=x),
        )

    got = run(build, [spec(x.shape)], {"x": x})
    np.testing.assert_array_equal(got[0], x[..., None])
    np.testing.assert_array_equal(got[1], x[0])
    np.testing.assert_array_equal(got[2], x.reshape(3, 4))
    np.testing.assert_array_equal(got[3], x.transpose(3, 1, 2, 0))
    np.testing.assert_array_equal(got[4], torch.from_numpy(x).flip([1, 3]).numpy())
    np.testing.assert_array_equal(got[5], np.flip(x))


def test_reverse_sequence():
    x = np.arange(32, dtype=np.float32).reshape(4, 8)
    lengths = np.array([7, 2, 0, 8], np.int32)

    def build(x, lengths):
        return mb.reverse_sequence(x=x, lengths=lengths, seq_axis=1, batch_axis=0)

    (got,) = run(build, [spec(x.shape), spec((4,), types.int32)], {"x": x, "lengths": lengths})
    expected = x.copy()
    for b, n in enumerate(lengths):
        expected[b, :n] = x[b, :n][::-1]
    np.testing.assert_array_equal(got, expected)


def test_slice_by_index_masks_strides_and_squeeze():
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)

    def build(x, begin, end):
        return (
            mb.slice_by_index(x=x, begin=begin, end=end),
            mb.slice_by_index(
                x=x, begin=[2, -1, 0], end=[0, 0, 5], stride=[-1, -2, 2], begin_mask=[False, False, True]
            ),
            mb.slice_by_index(
                x=x, begin=[1, 0, -2], end=[0, 3, 0], squeeze_mask=[True, False, True], end_mask=[False, True, False]
            ),
        )

    begin, end = np.array([1, 1, 1], np.int32), np.array([3, -1, 4], np.int32)
    got = run(build, [spec(x.shape), spec((3,), types.int32), spec((3,), types.int32)], {"x": x, "begin": begin, "end": end})
    np.testing.assert_array_equal(got[0], x[1:3, 1:-1, 1:4])
    np.testing.assert_array_equal(got[1], x[2:0:-1, -1:0:-2, ::2])
    np.testing.assert_array_equal(got[2], x[1, :, -2])


def test_slice_by_size_and_slice_update():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    update = -np.ones((1, 2, 2), np.float32)

    def build(x, begin, update):
        return (
            mb.slice_by_size(x=x, begin=begin, size=[-1, 2, -1]),
            mb.slice_update(x=x, update=update, begin=[1, 1, 0], end=[2, 3, 4], stride=[1, 1, 2]),
        )

    begin = np.array([1, -2, 1], np.int32)
    got = run(
        build,
        [spec(x.shape), spec((3,), types.int32), spec(update.shape)],
        {"x": x, "begin": begin, "update": update},
        opset=ct.target.iOS18,
    )
    np.testing.assert_array_equal(got[0], x[1:, 1:3, 1:])
    expected = x.copy()
    expected[1:2, 1:3, 0:4:2] = update
    np.testing.assert_array_equal(got[1], expected)


def test_sliding_windows():
    x = RNG.normal(size=(2, 7, 3)).astype(np.float32)

    def build(x):
        return mb.sliding_windows(x=x, axis=-2, size=3, stride=2)

    (got,) = run(build, [spec(x.shape)], {"x": x})
    expected = torch.from_numpy(x).unfold(1, 3, 2).permute(0, 1, 3, 2).numpy()
    np.testing.assert_array_equal(got, expected)


def test_pixel_shuffle_and_unshuffle_match_torch():
    x = RNG.normal(size=(2, 8, 3, 2)).astype(np.float32)
    y = RNG.normal(size=(1, 2, 4, 6)).astype(np.float32)

    def build(x, y):
        return mb.pixel_shuffle(x=x, upscale_factor=2), mb.pixel_unshuffle(x=y, downscale_factor=np.uint32(2))

    got = run(build, [spec(x.shape), spec(y.shape)], {"x": x, "y": y})
    np.testing.assert_array_equal(got[0], torch.nn.functional.pixel_shuffle(torch.from_numpy(x), 2).numpy())
    np.testing.assert_array_equal(got[1], torch.nn.functional.pixel_unshuffle(torch.from_numpy(y), 2).numpy())


def test_depth_space_round_trip_fp16():
    """depth_to_space uses TensorFlow's DCR channel order; space_to_depth inverts it."""
    x = RNG.normal(size=(1, 8, 2, 3)).astype(np.float32)

    def build(x):
        d2s = mb.depth_to_space(x=x, block_size=2)
        return d2s, mb.space_to_depth(x=d2s, block_size=2)

    d2s, back = run(build, [spec(x.shape)], {"x": x}, precision="fp16")
    x16 = x.astype(np.float16)
    expected = x16.reshape(1, 2, 2, 2, 2, 3).transpose(0, 3, 4, 1, 5, 2).reshape(1, 2, 4, 6)
    np.testing.assert_array_equal(d2s.astype(np.float16), expected)
    np.testing.assert_array_equal(back.astype(np.float16), x16)


def test_space_to_batch_and_back():
    x = np.arange(1, 17, dtype=np.float32).reshape(2, 1, 2, 4)

    def build(x):
        s2b = mb.space_to_batch(x=x, block_shape=[2, 2], paddings=[[0, 0], [2, 0]])
        return s2b, mb.batch_to_space(x=s2b, block_shape=[2, 2], crops=[[0, 0], [2, 0]])

    s2b, back = run(build, [spec(x.shape)], {"x": x})
    # coremltools' own op test example (TensorFlow space_to_batch_nd ordering)
    expected = np.array([[0, 1, 3], [0, 9, 11], [0, 2, 4], [0, 10, 12], [0, 5, 7], [0, 13, 15], [0, 6, 8], [0, 14, 16]])
    np.testing.assert_array_equal(s2b, expected.reshape(8, 1, 1, 3))
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("dtype", [types.int32, types.fp16])
def test_data_movement_keeps_dtype(dtype):
    np_dtype = types.nptype_from_builtin(dtype)
    x = np.arange(12).reshape(3, 4).astype(np_dtype)

    def build(x):
        return mb.transpose(x=x, perm=[1, 0]), mb.reverse(x=x, axes=[0])

    got = run(build, [spec(x.shape, dtype)], {"x": x})
    np.testing.assert_array_equal(got[0], x.T)
    np.testing.assert_array_equal(got[1], x[::-1])
