"""Gather and scatter MIL ops: ``gather``, ``gather_along_axis``, ``gather_nd``, ``scatter``,
``scatter_along_axis``, ``scatter_nd``.

Semantics of coremltools' op definitions (iOS15 ``scatter_gather.py``; ``batch_dims`` from
iOS16; ``validate_indices`` and the stricter index rules from iOS17):

* Gathers accept negative indices (counted from the end) in every opset; an index outside
  ``[-D, D)`` is an error.
* Scatters follow TF's ``scatter_*`` family: updates are applied one after another, so
  ``add`` / ``mul`` / ``max`` ... accumulate over repeated indices and ``update`` keeps the last.
  Before iOS17 negative indices count from the end; from iOS17 an index outside ``[0, D)`` is
  out of bounds: an error with ``validate_indices``, otherwise the update is dropped (the op
  definition calls it undefined but memory safe).
"""

from __future__ import annotations

import numpy as np
from coremltools import target

from ..registry import kernel


def _gather_index(indices, dim: int, validate: bool = False) -> np.ndarray:
    """Indices into a dimension of size ``dim``, negatives wrapped; raises when out of range."""
    idx = np.asarray(indices).astype(np.int64)
    out_of_range = (idx >= dim) | ((idx < 0) if validate else (idx < -dim))
    if np.any(out_of_range):
        raise IndexError(f"gather index out of bounds for a dimension of size {dim}: {np.unique(idx[out_of_range])}")
    return np.where(idx < 0, idx + dim, idx)


@kernel("gather")
def gather(ctx, x, indices, axis=0, batch_dims=0, validate_indices=False):
    """MIL ``gather``: ``x[..., indices, ...]`` along ``axis``; ``batch_dims`` leading dims are shared."""
    x = np.asarray(x)
    axis, batch_dims = int(axis) % x.ndim, int(batch_dims)
    idx = _gather_index(indices, x.shape[axis], bool(validate_indices))
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    batch_shape = x.shape[:batch_dims]
    xs = x.reshape((-1,) + x.shape[batch_dims:])
    ids = idx.reshape((-1,) + idx.shape[batch_dims:])
    out = np.stack([np.take(xb, ib, axis=axis - batch_dims) for xb, ib in zip(xs, ids)])
    return out.reshape(batch_shape + out.shape[1:])


@kernel("gather_along_axis")
def gather_along_axis(ctx, x, indices, axis=0, validate_indices=False):
    """MIL ``gather_along_axis``: ``np.take_along_axis``."""
    x = np.asarray(x)
    axis = int(axis) % x.ndim
    return np.take_along_axis(x, _gather_index(indices, x.shape[axis], bool(validate_indices)), axis=axis)


@kernel("gather_nd")
def gather_nd(ctx, x, indices, batch_dims=0, validate_indices=False):
    """MIL ``gather_nd`` (``batch_dims`` from iOS16): ``x[b..., indices[b..., i..., :]]``."""
    x, indices = np.asarray(x), np.asarray(indices)
    b, depth = int(batch_dims), indices.shape[-1]
    batch = int(np.prod(x.shape[:b], dtype=np.int64))
    xs = x.reshape((batch,) + x.shape[b:])
    ids = indices.reshape(batch, -1, depth)
    coords = tuple(_gather_index(ids[..., k], x.shape[b + k], bool(validate_indices)) for k in range(depth))
    out = xs[(np.arange(batch)[:, None],) + coords]
    return out.reshape(indices.shape[:-1] + x.shape[b + depth:])


# ------------------------------------------------------------------------------------- scatter

_ACCUMULATE = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
}


def _scatter_index(ctx, indices, dim: int, validate: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices normalised into ``[0, dim)``, mask of the updates to apply) for one dimension."""
    idx = np.asarray(indices).astype(np.int64)
    if ctx.op.opset_version < target.iOS17:
        idx = np.where(idx < 0, idx + dim, idx)
    keep = (idx >= 0) & (idx < dim)
    if not np.all(keep) and (validate or ctx.op.opset_version < target.iOS17):
        raise IndexError(f"{ctx.op.op_type} index out of bounds for a dimension of size {dim}: "
                         f"{np.unique(idx[~keep])}")
    return np.where(keep, idx, 0), keep


def _scatter_rows(table: np.ndarray, rows: np.ndarray, updates: np.ndarray, keep: np.ndarray,
                  mode: str) -> np.ndarray:
    """Apply ``updates[i]`` to ``table[rows[i]]`` by ``mode``, in order; ``table`` is (P, R)."""
    rows, updates = rows[keep], updates[keep]
    work = table.astype(np.float64 if table.dtype.kind in "iub" else np.float32)
    updates = updates.astype(work.dtype)
    if mode == "update":
        last = len(rows) - 1 - np.unique(rows[::-1], return_index=True)[1]
        work[rows[last]] = updates[last]
    elif mode in _ACCUMULATE:
        _ACCUMULATE[mode].at(work, rows, updates)
    else:
        raise ValueError(f"unsupported scatter mode {mode!r}")
    return work


@kernel("scatter")
def scatter(ctx, data, indices, updates, axis=0, mode="add", validate_indices=False):
    """MIL ``scatter``: slices of ``updates`` combined into ``data`` at ``indices`` along ``axis``."""
    data = np.asarray(data)
    axis = int(axis) % data.ndim
    idx, keep = _scatter_index(ctx, indices, data.shape[axis], bool(validate_indices))
    moved = np.moveaxis(data, axis, 0)
    table = moved.reshape(moved.shape[0], -1)
    upd = np.moveaxis(np.asarray(updates), list(range(axis, axis + idx.ndim)), list(range(idx.ndim)))
    out = _scatter_rows(table, idx.ravel(), upd.reshape(idx.size, -1), keep.ravel(), str(mode))
    return np.moveaxis(out.reshape(moved.shape), 0, axis)


@kernel("scatter_along_axis")
def scatter_along_axis(ctx, data, indices, updates, axis=0, mode="add", validate_indices=False):
    """MIL ``scatter_along_axis``: the inverse of ``gather_along_axis`` (``np.put_along_axis``)."""
    data = np.asarray(data)
    axis = int(axis) % data.ndim
    idx, keep = _scatter_index(ctx, indices, data.shape[axis], bool(validate_indices))
    coords = list(np.indices(idx.shape))
    coords[axis] = idx
    flat = np.ravel_multi_index(tuple(coords), data.shape).ravel()
    out = _scatter_rows(data.reshape(-1, 1), flat, np.asarray(updates).reshape(-1, 1), keep.ravel(), str(mode))
    return out.reshape(data.shape)


@kernel("scatter_nd")
def scatter_nd(ctx, data, indices, updates, mode="add", validate_indices=False):
    """MIL ``scatter_nd``: ``data[indices[i..., :]] (op)= updates[i...]``."""
    data, indices = np.asarray(data), np.asarray(indices)
    depth = indices.shape[-1]
    points = indices.reshape(-1, depth)
    keep = np.ones(len(points), bool)
    coords = []
    for k in range(depth):
        idx, ok = _scatter_index(ctx, points[:, k], data.shape[k], bool(validate_indices))
        coords.append(idx)
        keep &= ok
    rows = np.ravel_multi_index(tuple(coords), data.shape[:depth]) if depth else np.zeros(len(points), np.int64)
    table = data.reshape(int(np.prod(data.shape[:depth], dtype=np.int64)), -1)
    out = _scatter_rows(table, rows, np.asarray(updates).reshape(len(points), -1), keep, str(mode))
    return out.reshape(data.shape)
