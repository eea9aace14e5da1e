"""Kernels of the MIL tensor_operation family, run from saved .mlpackages and checked against
numpy / torch."""

from __future__ import annotations

import coremltools as ct
import numpy as np
import torch
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from tests.mil.harness import run_outputs as run
from tests.mil.harness import spec

RNG = np.random.default_rng(0)


def test_concat_interleave_split_stack():
    a = RNG.normal(size=(2, 3)).astype(np.float32)
    b = RNG.normal(size=(2, 3)).astype(np.float32)

    def build(a, b):
        parts = mb.split(x=a, split_sizes=[1, 2], axis=1)
        halves = mb.split(x=b, num_splits=2, axis=0)
        return (
            mb.concat(values=(a, b), axis=-1),
            mb.concat(values=(a, b), axis=0, interleave=True),
            mb.stack(values=(a, b), axis=1),
            *parts,
            *halves,
        )

    got = run(build, [spec(a.shape), spec(b.shape)], {"a": a, "b": b})
    np.testing.assert_array_equal(got[0], np.concatenate([a, b], -1))
    np.testing.assert_array_equal(got[1], np.stack([a, b], 1).reshape(4, 3))  # a0, b0, a1, b1
    np.testing.assert_array_equal(got[2], np.stack([a, b], 1))
    np.testing.assert_array_equal(got[3], a[:, :1])
    np.testing.assert_array_equal(got[4], a[:, 1:])
    np.testing.assert_array_equal(got[5], b[:1])
    np.testing.assert_array_equal(got[6], b[1:])


def test_pad_modes_and_runtime_pad():
    x = RNG.normal(size=(1, 2, 3, 4)).astype(np.float32)
    t = torch.from_numpy(x)

    def build(x, p):
        return (
            mb.pad(x=x, pad=[1, 2, 0, 1], mode="constant", constant_val=3.5),
            mb.pad(x=x, pad=[2, 1, 3, 1], mode="reflect"),
            mb.pad(x=x, pad=[1, 0, 2, 3], mode="replicate"),
            mb.pad(x=x, pad=p),
        )

    p = np.array([0, 0, 1, 0, 0, 2, 1, 1], np.int32)
    got = run(build, [spec(x.shape), spec((8,), types.int32)], {"x": x, "p": p})
    F = torch.nn.functional
    np.testing.assert_array_equal(got[0], F.pad(t, (0, 1, 1, 2), value=3.5).numpy())
    np.testing.assert_array_equal(got[1], F.pad(t, (3, 1, 2, 1), mode="reflect").numpy())
    np.testing.assert_array_equal(got[2], F.pad(t, (2, 3, 1, 0), mode="replicate").numpy())
    np.testing.assert_array_equal(got[3], np.pad(x, p.reshape(4, 2)))


def test_fill_range_one_hot_shape():
    def build(x, n, idx):
        return (
            mb.fill(shape=mb.shape(x=x), value=2.5),
            mb.fill_like(ref_tensor=x, value=7),
            mb.range_1d(start=1.0, end=mb.squeeze(x=n), step=1.5),
            mb.one_hot(indices=idx, one_hot_vector_size=4, axis=0, on_value=5.0, off_value=-1.0),
            mb.shape(x=x),
        )

    x = np.zeros((2, 3), np.float32)
    n = np.array([6.0], np.float32)
    idx = np.array([3, 0, 1], np.int32)
    got = run(build, [spec(x.shape), spec((1,)), spec((3,), types.int32)], {"x": x, "n": n, "idx": idx})
    np.testing.assert_array_equal(got[0], np.full((2, 3), 2.5))
    np.testing.assert_array_equal(got[1], np.full((2, 3), 7))
    np.testing.assert_allclose(got[2], np.arange(1.0, 6.0, 1.5))
    np.testing.assert_array_equal(got[3], torch.nn.functional.one_hot(torch.from_numpy(idx).long(), 4).numpy().T * 6 - 1)
    np.testing.assert_array_equal(got[4], [2, 3])


def test_tile_flatten_band_part_non_zero_identity():
    x = RNG.integers(-2, 3, size=(2, 3, 4)).astype(np.float32)

    def build(x, reps):
        return (
            mb.tile(x=x, reps=reps),
            mb.flatten2d(x=x, axis=-1),
            mb.band_part(x=x, lower=1, upper=0),
            mb.band_part(x=x, lower=-1, upper=1),
            mb.non_zero(x=x),
            mb.identity(x=x),
        )

    reps = np.array([1, 2, 3], np.int32)
    got = run(build, [spec(x.shape), spec((3,), types.int32)], {"x": x, "reps": reps})
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(got[0], np.tile(x, reps))
    np.testing.assert_array_equal(got[1], x.reshape(6, 4))
    np.testing.assert_array_equal(got[2], (torch.tril(t) - torch.tril(t, -2)).numpy())
    np.testing.assert_array_equal(got[3], torch.triu(t, -10).numpy() - torch.triu(t, 2).numpy())
    np.testing.assert_array_equal(got[4], torch.nonzero(t).numpy())
    np.testing.assert_array_equal(got[5], x)


def test_cumsum_exclusive_reverse_fp16():
    x = RNG.normal(size=(3, 5)).astype(np.float32)

    def build(x):
        return (
            mb.cumsum(x=x, axis=1),
            mb.cumsum(x=x, axis=1, exclusive=True),
            mb.cumsum(x=x, axis=0, reverse=True),
            mb.cumsum(x=x, axis=1, exclusive=True, reverse=True),
        )

    got = run(build, [spec(x.shape)], {"x": x}, precision="fp16")
    x16 = x.astype(np.float16).astype(np.float32)
    inclusive = np.cumsum(x16, 1)
    exclusive = inclusive - x16
    reverse = np.flip(np.cumsum(np.flip(x16, 0), 0), 0)
    rev_exclusive = np.flip(np.cumsum(np.flip(x16, 1), 1), 1) - x16
    for value, expected in zip(got, [inclusive, exclusive, reverse, rev_exclusive]):
        assert value.dtype == np.float16 or value.dtype == np.float32
        np.testing.assert_allclose(value.astype(np.float32), expected, atol=1e-2, rtol=1e-2)


def test_topk_and_argsort_match_torch():
    x = RNG.normal(size=(3, 6)).astype(np.float32)

    def build(x):
        return (
            *mb.topk(x=x, k=2, axis=1),
            *mb.topk(x=x, k=3, axis=0, ascending=True),
            mb.topk(x=x, k=3, return_indices=False),
            mb.argsort(x=x, axis=0),
            mb.argsort(x=x, ascending=True),
        )

    got = run(build, [spec(x.shape)], {"x": x})
    t = torch.from_numpy(x)
    values, indices = torch.topk(t, 2, dim=1)
    np.testing.assert_array_equal(got[0], values.numpy())
    np.testing.assert_array_equal(got[1], indices.numpy())
    values, indices = torch.sort(t, dim=0)
    np.testing.assert_array_equal(got[2], values.numpy())
    np.testing.assert_array_equal(got[3], indices.numpy())
    np.testing.assert_array_equal(got[4], torch.topk(t, 3).values.numpy())
    np.testing.assert_array_equal(got[5], torch.argsort(t, dim=0, descending=True).numpy())
    np.testing.assert_array_equal(got[6], torch.argsort(t, dim=1).numpy())


def test_topk_int_dtype_and_uint16_indices():
    x = np.array([[2, 3, 1], [5, 4, 6]], np.int32)

    def build(x):
        return mb.topk(x=x, k=2, axis=1, output_indices_dtype="uint16")

    values, indices = run(build, [spec(x.shape, types.int32)], {"x": x})
    np.testing.assert_array_equal(values, [[3, 2], [6, 5]])
    np.testing.assert_array_equal(indices, [[1, 0], [2, 0]])


def _torchvision_style_nms(boxes, scores, iou_threshold):
    """Reference greedy NMS on (cx, cy, w, h) boxes: kept indices in descending score order."""
    xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    order = np.argsort(-scores)
    keep = []
    for i in order:
        ok = True
        for j in keep:
            lt = np.maximum(xyxy[i, :2], xyxy[j, :2])
            rb = np.minimum(xyxy[i, 2:], xyxy[j, 2:])
            inter = np.prod(np.clip(rb - lt, 0, None))
            union = np.prod(boxes[i, 2:]) + np.prod(boxes[j, 2:]) - inter
            ok &= inter / union <= iou_threshold
        if ok:
            keep.append(i)
    return keep


def test_non_maximum_suppression_ios15_and_ios17():
    boxes = np.concatenate([RNG.uniform(0, 10, (1, 12, 2)), RNG.uniform(1, 5, (1, 12, 2))], -1).astype(np.float32)
    scores = RNG.permutation(12).astype(np.float32).reshape(1, 12, 1)
    keep = _torchvision_style_nms(boxes[0], scores[0, :, 0], 0.3)

    def build15(boxes, scores):
        return mb.non_maximum_suppression(
            boxes=boxes, scores=scores, iou_threshold=0.3, score_threshold=-1.0, max_boxes=20
        )

    out_boxes, out_scores, indices, count = run(
        build15, [spec(boxes.shape), spec(scores.shape)], {"boxes": boxes, "scores": scores}, opset=ct.target.iOS15
    )
    n = len(keep)
    assert count.tolist() == [n]
    np.testing.assert_array_equal(indices[0, :n], keep)
    np.testing.assert_array_equal(indices[0, n:], -1)
    np.testing.assert_array_equal(out_boxes[0, :n], boxes[0, keep])
    np.testing.assert_array_equal(out_scores[0, :n, 0], scores[0, keep, 0])

    def build17(boxes, scores):
        return mb.non_maximum_suppression(boxes=boxes, scores=scores, iou_threshold=0.3, max_boxes=3)

    boxes_cf, scores_cf = boxes.transpose(0, 2, 1), scores.transpose(0, 2, 1)
    out_boxes, out_scores, indices = run(
        build17, [spec(boxes_cf.shape), spec(scores_cf.shape)], {"boxes": boxes_cf, "scores": scores_cf}
    )
    np.testing.assert_array_equal(indices[0], keep[:3])
    np.testing.assert_array_equal(out_boxes[0], boxes_cf[0][:, keep[:3]])
    np.testing.assert_array_equal(out_scores[0], scores_cf[0][:, keep[:3]])
