"""MIL tensor_operation ops: concat/split/stack, pad, fill, range, sorting, NMS and friends.

Semantics follow coremltools' op definitions in ``ops/defs/iOS15/tensor_operation.py`` and their
iOS16 (``fill_like``, ``topk`` sort/return_indices) and iOS17 (``topk`` k=-1 and index dtype,
``non_maximum_suppression`` channel-first layout) overrides. Ops that do arithmetic compute fp16
inputs in fp32; the interpreter rounds outputs to the declared dtype.
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import kernel


def _axis(axis, rank: int) -> int:
    axis = int(axis)
    return axis + rank if axis < 0 else axis


def _upcast(x: np.ndarray) -> np.ndarray:
    """fp16 -> fp32 for kernels that do arithmetic; other dtypes unchanged."""
    return x.astype(np.float32) if x.dtype == np.float16 else x


# --- joining and splitting ------------------------------------------------------------------


@kernel("concat")
def concat(ctx, values, axis, interleave=False):
    """MIL ``concat``; with ``interleave`` the inputs (all the same shape) alternate item by item
    along ``axis``. Scalars are stacked into a vector."""
    values = [np.asarray(v) for v in values]
    if values[0].ndim == 0:
        return np.stack(values)
    axis = _axis(axis, values[0].ndim)
    if not bool(interleave):
        return np.concatenate(values, axis=axis)
    out_shape = list(values[0].shape)
    out_shape[axis] *= len(values)
    return np.stack(values, axis=axis + 1).reshape(out_shape)


@kernel("stack")
def stack(ctx, values, axis):
    """MIL ``stack``: join same-shape tensors along a new ``axis``."""
    return np.stack([np.asarray(v) for v in values], axis=int(axis))


@kernel("split")
def split(ctx, x, axis, num_splits=None, split_sizes=None):
    """MIL ``split``: by ``split_sizes`` when given, else into ``num_splits`` equal parts."""
    axis = _axis(axis, x.ndim)
    if split_sizes is not None:
        cuts = np.cumsum(np.asarray(split_sizes).reshape(-1))[:-1]
        parts = np.split(x, cuts, axis=axis)
    else:
        parts = np.split(x, int(num_splits), axis=axis)
    return parts[0] if len(parts) == 1 else tuple(parts)


@kernel("tile")
def tile(ctx, x, reps):
    """MIL ``tile``: repeat dim ``i`` ``reps[i]`` times."""
    return np.tile(x, [int(r) for r in np.asarray(reps).reshape(-1)])


@kernel("pad")
def pad(ctx, x, pad, mode="constant", constant_val=0.0):
    """MIL ``pad``: ``pad`` holds (before, after) pairs for the last ``len(pad) // 2`` dims;
    modes ``constant``, ``reflect`` (no edge repeat) and ``replicate`` (numpy ``edge``)."""
    pairs = np.asarray(pad).reshape(-1, 2).astype(np.int64)
    widths = [(0, 0)] * (x.ndim - len(pairs)) + [tuple(p) for p in pairs.tolist()]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(constant_val).astype(x.dtype))
    return np.pad(x, widths, mode="edge" if mode == "replicate" else "reflect")


# --- reshaping helpers ----------------------------------------------------------------------


@kernel("flatten2d")
def flatten2d(ctx, x, axis=1):
    """MIL ``flatten2d``: ``(prod(shape[:axis]), prod(shape[axis:]))``; negative ``axis`` counts
    from the end."""
    axis = _axis(axis, x.ndim)
    return x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))


@kernel("shape")
def shape(ctx, x):
    """MIL ``shape``: the dims of ``x`` as an int32 vector."""
    return np.array(np.shape(x), dtype=np.int32)


@kernel("identity")
def identity(ctx, x):
    """MIL ``identity``."""
    return x


# --- generators -----------------------------------------------------------------------------


@kernel("fill")
def fill(ctx, shape, value=0.0):
    """MIL ``fill``: a tensor of runtime ``shape`` holding ``value`` (typed as ``value``)."""
    return np.full([int(d) for d in np.asarray(shape).reshape(-1)], value)


@kernel("fill_like")
def fill_like(ctx, ref_tensor, value=0.0):
    """iOS16 ``fill_like``: ``value`` in the shape of ``ref_tensor``."""
    return np.full(np.shape(ref_tensor), value)


@kernel("range_1d")
def range_1d(ctx, end, start, step):
    """MIL ``range_1d``: ``start + i * step`` for ``i < ceil((end - start) / step)``."""
    start, end, step = (np.asarray(v).reshape(()) for v in (start, end, step))
    count = max(0, math.ceil((float(end) - float(start)) / float(step)))
    if start.dtype.kind in "iu":
        return int(start) + np.arange(count, dtype=np.int64) * int(step)
    return float(start) + np.arange(count, dtype=np.float64) * float(step)


@kernel("one_hot")
def one_hot(ctx, indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0):
    """MIL ``one_hot``: a new dim of size ``one_hot_vector_size`` at ``axis``; out-of-range
    indices give all ``off_value``."""
    depth = int(np.asarray(one_hot_vector_size).reshape(-1)[0])
    hot = np.asarray(indices)[..., None] == np.arange(depth)
    out = np.where(hot, on_value, off_value)
    return np.moveaxis(out, -1, _axis(axis, hot.ndim))


@kernel("band_part")
def band_part(ctx, x, lower=-1, upper=-1):
    """MIL ``band_part``: keep ``x[..., m, n]`` where ``(lower < 0 or m - n <= lower) and
    (upper < 0 or n - m <= upper)``, zero elsewhere."""
    lower, upper = int(lower), int(upper)
    rows, cols = x.shape[-2:]
    diff = np.arange(rows)[:, None] - np.arange(cols)[None, :]
    keep = ((lower < 0) | (diff <= lower)) & ((upper < 0) | (-diff <= upper))
    return np.where(keep, x, np.zeros((), dtype=x.dtype))


@kernel("cumsum")
def cumsum(ctx, x, axis=0, exclusive=False, reverse=False):
    """MIL ``cumsum`` along ``axis``; ``exclusive`` shifts by one (first item 0), ``reverse``
    sums from the end."""
    axis = _axis(axis, x.ndim)
    data = _upcast(x)
    if bool(reverse):
        data = np.flip(data, axis=axis)
    out = np.cumsum(data, axis=axis, dtype=data.dtype)
    if bool(exclusive):
        out = np.concatenate([np.zeros_like(np.take(out, [0], axis=axis)), np.delete(out, -1, axis=axis)], axis=axis)
    return np.flip(out, axis=axis) if bool(reverse) else out


@kernel("non_zero")
def non_zero(ctx, x):
    """MIL ``non_zero``: ``(N, rank)`` int32 indices of the non-zero items, in C order."""
    return np.transpose(np.nonzero(x)).astype(np.int32)


# --- sorting --------------------------------------------------------------------------------


def _sort_order(x: np.ndarray, axis: int, ascending: bool) -> np.ndarray:
    """Stable argsort; descending keeps equal items in index order."""
    key = x.astype(np.float64) if x.dtype.kind == "f" else x.astype(np.int64)
    return np.argsort(key if ascending else -key, axis=axis, kind="stable")


@kernel("argsort")
def argsort(ctx, x, axis=-1, ascending=False):
    """MIL ``argsort``: indices that sort ``x`` along ``axis``, descending unless ``ascending``."""
    return _sort_order(x, _axis(axis, x.ndim), bool(ascending)).astype(np.int32)


@kernel("topk")
def topk(ctx, x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, output_indices_dtype="int32"):
    """MIL ``topk`` (iOS15-17): the ``k`` largest (smallest if ``ascending``) items along ``axis``
    and their indices; iOS17 ``k = -1`` takes all. Results are always sorted (``sort=False``
    allows any order). Without ``return_indices`` only the values are returned; the index dtype
    (``output_indices_dtype``) is applied by the interpreter's output cast."""
    axis = _axis(axis, x.ndim)
    k = int(k)
    order = _sort_order(x, axis, bool(ascending))
    indices = np.take(order, np.arange(x.shape[axis] if k == -1 else k), axis=axis)
    values = np.take_along_axis(x, indices, axis=axis)
    return (values, indices) if bool(return_indices) else values


# --- non maximum suppression ----------------------------------------------------------------


def _iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(B, 4)`` boxes in (center x, center y, width, height)."""
    cx, cy, w, h = (boxes[:, i].astype(np.float64) for i in range(4))
    x1, x2, y1, y2 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
    inter_w = np.maximum(0.0, np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]))
    inter_h = np.maximum(0.0, np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]))
    inter = inter_w * inter_h
    area = np.abs(w * h)
    union = area[:, None] + area[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _nms_select(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class) -> list[int]:
    """Greedy NMS of one batch item, as TensorFlow's ``non_max_suppression`` (which Core ML
    matches): candidates scoring above ``score_threshold`` by their best class score, a box is
    dropped when its IoU with an already kept box (of the same best class if ``per_class``) is
    above ``iou_threshold``. If nothing survives, the best-scoring box is kept."""
    best = scores.max(axis=-1)
    label = scores.argmax(axis=-1)
    iou = _iou_matrix(boxes)
    kept: list[int] = []
    for i in np.argsort(-best, kind="stable"):
        if len(kept) == max_boxes or best[i] <= score_threshold:
            break
        rivals = [j for j in kept if not per_class or label[j] == label[i]]
        if all(iou[i, j] <= iou_threshold for j in rivals):
            kept.append(int(i))
    return kept or [int(np.argmax(best))]


def _nms_batch(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class):
    """NMS over ``(n, B, 4)`` boxes and ``(n, B, K)`` scores; unused output slots hold zeros and
    index ``-1``. Returns (boxes, scores, indices, counts)."""
    n, _, k = scores.shape
    out_boxes = np.zeros((n, max_boxes, 4), dtype=np.float32)
    out_scores = np.zeros((n, max_boxes, k), dtype=np.float32)
    out_indices = np.full((n, max_boxes), -1, dtype=np.int32)
    counts = np.zeros((n,), dtype=np.int32)
    for b in range(n):
        kept = _nms_select(boxes[b], scores[b], iou_threshold, score_threshold, max_boxes, per_class)
        out_boxes[b, : len(kept)] = boxes[b, kept]
        out_scores[b, : len(kept)] = scores[b, kept]
        out_indices[b, : len(kept)] = kept
        counts[b] = len(kept)
    return out_boxes, out_scores, out_indices, counts


@kernel("non_maximum_suppression")
def non_maximum_suppression(
    ctx, boxes, scores, iou_threshold, max_boxes, score_threshold=None, per_class_suppression=False
):
    """MIL ``non_maximum_suppression``.

    iOS15: boxes ``(n, B, 4)``, scores ``(n, B, K)``; returns boxes, scores, indices, counts.
    iOS17: boxes ``(n, 4, B)``, scores ``(n, K, B)``, no ``score_threshold`` and no counts output;
    outputs are channel-first as well.
    """
    channel_first = score_threshold is None
    boxes, scores = _upcast(np.asarray(boxes)), _upcast(np.asarray(scores))
    if channel_first:
        boxes, scores = boxes.transpose(0, 2, 1), scores.transpose(0, 2, 1)
    threshold = -np.inf if channel_first else float(score_threshold)
    out_boxes, out_scores, indices, counts = _nms_batch(
        boxes, scores, float(iou_threshold), threshold, int(max_boxes), bool(per_class_suppression)
    )
    if channel_first:
        return out_boxes.transpose(0, 2, 1), out_scores.transpose(0, 2, 1), indices
    return out_boxes, out_scores, indices, counts
