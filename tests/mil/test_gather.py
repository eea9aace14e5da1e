"""Gather / scatter kernels against numpy and torch, through saved .mlpackages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coremltools as ct
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from .harness import run_builder as _run_builder

RNG = np.random.default_rng(0)


def run_builder(build, specs, inputs, target=ct.target.iOS17, **kw):
    return list(_run_builder(build, specs, inputs, opset_version=target, **kw).values())


def _spec(shape, dtype=types.fp32):
    return mb.TensorSpec(shape=shape, dtype=dtype)


def test_gather_negative_indices_and_batch_dims():
    x = RNG.random((2, 3, 4), dtype=np.float32)
    idx = np.array([[0, -1], [2, 1]], np.int32)

    def build(x, idx):
        return mb.gather(x=x, indices=idx, axis=2), mb.gather(x=x, indices=idx, axis=2, batch_dims=1)

    got = run_builder(build, [_spec(x.shape), _spec(idx.shape, types.int32)], {"x": x, "idx": idx})
    np.testing.assert_array_equal(got[0], np.take(x, idx, axis=2))
    batched = np.stack([np.take(x[b], idx[b], axis=1) for b in range(2)])
    np.testing.assert_array_equal(got[1], batched)


def test_gather_fp16_program_rounds_to_fp16():
    x = RNG.random((5, 3), dtype=np.float32)
    idx = np.array([4, 0, 4], np.int32)

    def build(x, idx):
        return mb.gather(x=x, indices=idx, axis=0)

    got = run_builder(build, [_spec(x.shape), _spec(idx.shape, types.int32)], {"x": x, "idx": idx}, precision="fp16")
    np.testing.assert_array_equal(got[0], x[idx].astype(np.float16).astype(np.float32))


def test_gather_out_of_range_index_is_an_error():
    x = np.zeros((3,), np.float32)

    def build(x, idx):
        return mb.gather(x=x, indices=idx)

    with pytest.raises(IndexError):
        run_builder(build, [_spec(x.shape), _spec((1,), types.int32)], {"x": x, "idx": np.array([3], np.int32)})


def test_gather_along_axis_and_gather_nd():
    x = RNG.random((3, 4), dtype=np.float32)
    along = np.array([[0, 3], [-1, 1], [2, 2]], np.int32)
    nd = np.array([[[1, 2]], [[2, -1]]], np.int32)

    def build(x, along, nd):
        return mb.gather_along_axis(x=x, indices=along, axis=1), mb.gather_nd(x=x, indices=nd)

    got = run_builder(build, [_spec(x.shape), _spec(along.shape, types.int32), _spec(nd.shape, types.int32)],
                      {"x": x, "along": along, "nd": nd})
    np.testing.assert_array_equal(got[0], np.take_along_axis(x, along % 4, axis=1))
    np.testing.assert_array_equal(got[1], x[nd[..., 0], nd[..., 1] % 4])


def test_gather_nd_with_batch_dims():
    x = RNG.random((2, 3, 4), dtype=np.float32)
    idx = np.array([[[1], [2]], [[0], [1]]], np.int32)

    def build(x, idx):
        return mb.gather_nd(x=x, indices=idx, batch_dims=1)

    got = run_builder(build, [_spec(x.shape), _spec(idx.shape, types.int32)], {"x": x, "idx": idx})
    np.testing.assert_array_equal(got[0], np.stack([x[b][idx[b][:, 0]] for b in range(2)]))


def _sequential_scatter(data, indices, updates, mode):
    out = data.copy()
    ops = {"update": lambda a, b: b, "add": np.add, "sub": np.subtract, "mul": np.multiply,
           "div": np.divide, "max": np.maximum, "min": np.minimum}
    for i, row in zip(indices.ravel(), updates.reshape(indices.size, *data.shape[1:])):
        out[i] = ops[mode](out[i], row)
    return out


@pytest.mark.parametrize("mode", ["update", "add", "sub", "mul", "div", "max", "min"])
def test_scatter_modes_accumulate_repeated_indices(mode):
    data = RNG.random((4, 3), dtype=np.float32) + 0.5
    indices = np.array([[1, 3], [1, 0]], np.int32)
    updates = RNG.random((2, 2, 3), dtype=np.float32) + 0.5

    def build(data, indices, updates):
        return mb.scatter(data=data, indices=indices, updates=updates, mode=mode)

    got = run_builder(build, [_spec(data.shape), _spec(indices.shape, types.int32), _spec(updates.shape)],
                      {"data": data, "indices": indices, "updates": updates})
    np.testing.assert_allclose(got[0], _sequential_scatter(data, indices, updates, mode), rtol=1e-6)


def test_scatter_on_inner_axis_matches_torch_index_add():
    data = RNG.random((2, 5), dtype=np.float32)
    indices = np.array([4, 0, 4], np.int32)
    updates = RNG.random((2, 3), dtype=np.float32)

    def build(data, indices, updates):
        return mb.scatter(data=data, indices=indices, updates=updates, axis=1, mode="add")

    got = run_builder(build, [_spec(data.shape), _spec(indices.shape, types.int32), _spec(updates.shape)],
                      {"data": data, "indices": indices, "updates": updates})
    expected = torch.from_numpy(data).index_add(1, torch.from_numpy(indices).long(), torch.from_numpy(updates))
    np.testing.assert_allclose(got[0], expected.numpy(), rtol=1e-6)


def test_ios17_scatter_drops_out_of_bound_updates_and_ios16_wraps_negatives():
    data = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    updates = np.array([[5, 6, 7], [8, 9, 10]], np.float32)
    indices = np.array([-1, 0], np.int32)

    def build(data, indices, updates):
        return mb.scatter(data=data, indices=indices, updates=updates, mode="add")

    specs = [_spec(data.shape), _spec(indices.shape, types.int32), _spec(updates.shape)]
    feeds = {"data": data, "indices": indices, "updates": updates}
    np.testing.assert_array_equal(run_builder(build, specs, feeds)[0], [[9, 11, 13], [4, 5, 6]])
    np.testing.assert_array_equal(run_builder(build, specs, feeds, target=ct.target.iOS16)[0],
                                  [[9, 11, 13], [9, 11, 13]])


def test_ios17_scatter_validate_indices_raises_at_runtime():
    def build(data, indices):
        return mb.scatter(data=data, indices=indices, updates=np.ones((2, 3), np.float32), validate_indices=True)

    with pytest.raises(IndexError):
        run_builder(build, [_spec((2, 3)), _spec((2,), types.int32)],
                    {"data": np.zeros((2, 3), np.float32), "indices": np.array([10, 0], np.int32)})


def test_scatter_along_axis_and_scatter_nd():
    data = RNG.random((3, 4), dtype=np.float32)
    along = np.array([[0, 2, 1, 2], [2, 0, 0, 1]], np.int32)
    along_upd = RNG.random(along.shape, dtype=np.float32)
    nd = np.array([[0, 1], [2, 3], [0, 1]], np.int32)
    nd_upd = np.array([1.0, 2.0, 3.0], np.float32)

    def build(data, along, along_upd, nd):
        return (mb.scatter_along_axis(data=data, indices=along, updates=along_upd, axis=0, mode="update"),
                mb.scatter_nd(data=data, indices=nd, updates=nd_upd, mode="add"))

    got = run_builder(build, [_spec(data.shape), _spec(along.shape, types.int32), _spec(along.shape),
                              _spec(nd.shape, types.int32)],
                      {"data": data, "along": along, "along_upd": along_upd, "nd": nd})
    expected = data.copy()
    np.put_along_axis(expected, along, along_upd, axis=0)
    np.testing.assert_array_equal(got[0], expected)
    expected = data.copy()
    np.add.at(expected, (nd[:, 0], nd[:, 1]), nd_upd)
    np.testing.assert_allclose(got[1], expected, rtol=1e-6)


def test_scatter_int32_data():
    data = np.arange(6, dtype=np.int32).reshape(3, 2)

    def build(data, indices):
        return mb.scatter(data=data, indices=indices, updates=np.full((2, 2), 7, np.int32), mode="mul")

    got = run_builder(build, [_spec(data.shape, types.int32), _spec((2,), types.int32)],
                      {"data": data, "indices": np.array([2, 2], np.int32)})
    assert got[0].dtype == np.int32
    np.testing.assert_array_equal(got[0], [[0, 1], [2, 3], [4 * 49, 5 * 49]])
