"""MIL tensor_transformation ops: reshapes, slices, permutations, depth/space rearrangements.

Semantics follow coremltools' op definitions in ``ops/defs/iOS15/tensor_transformation.py`` and
their iOS16/iOS17/iOS18 overrides (``reshape_like``, ``pixel_unshuffle``, iOS17 ``reshape`` zero
handling, iOS18 ``slice_update``). These ops only move data, so every dtype is kept as it is.
"""

from __future__ import annotations

import numpy as np

from ..registry import kernel


def _ints(values) -> list[int]:
    """A 1-D int tensor (or list of 0-d arrays) as a list of Python ints."""
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _flags(values, rank: int) -> list[bool]:
    """A bool mask input as a list, all ``False`` when the optional input is absent."""
    return [False] * rank if values is None else [bool(v) for v in np.asarray(values).reshape(-1)]


def _since_ios17(ctx) -> bool:
    """True when the op's definition is the iOS17 (or later) version."""
    from coremltools.converters.mil._deployment_compatibility import AvailableTarget

    return ctx.op.opset_version >= AvailableTarget.iOS17


def _normalize_axis(axis, rank: int) -> int:
    axis = int(axis)
    return axis + rank if axis < 0 else axis


# --- reshapes -------------------------------------------------------------------------------


def _resolve_reshape_zeros(from_shape: list[int], to_shape: list[int], right_aligned: bool) -> list[int]:
    """Replace ``0`` in ``to_shape`` by the matching input dim.

    iOS15/16: ``0`` copies ``x.shape[i]`` at the same position (same rank required).
    iOS17+: positions are matched from the right; a ``0`` with no matching dim becomes ``1``.
    """
    if 0 not in to_shape:
        return to_shape
    if not right_aligned:
        if len(from_shape) != len(to_shape):
            raise ValueError(f"reshape: a 0 in shape {to_shape} needs rank {len(to_shape)}, x has {from_shape}")
        return [from_shape[i] if s == 0 else s for i, s in enumerate(to_shape)]
    offset = len(to_shape) - len(from_shape)
    return [
        (from_shape[i - offset] if i - offset >= 0 else 1) if s == 0 else s for i, s in enumerate(to_shape)
    ]


@kernel("reshape")
def reshape(ctx, x, shape):
    """MIL ``reshape``: ``0`` copies an input dim (per opset, see above), ``-1`` is inferred."""
    to_shape = _resolve_reshape_zeros(list(x.shape), _ints(shape), right_aligned=_since_ios17(ctx))
    return np.reshape(x, to_shape)


@kernel("reshape_like")
def reshape_like(ctx, x, ref_tensors, begins, ends, end_masks):
    """iOS16 ``reshape_like``: the new shape concatenates ``ref_tensors[i].shape[begins[i]:ends[i]]``."""
    new_shape: list[int] = []
    for ref, begin, end, end_mask in zip(ref_tensors, begins, ends, end_masks):
        dims = np.shape(ref)
        new_shape += dims[int(begin):] if bool(end_mask) else dims[int(begin):int(end)]
    return np.reshape(x, new_shape)


@kernel("expand_dims")
def expand_dims(ctx, x, axes):
    """MIL ``expand_dims``: insert size-1 dims at ``axes`` (indices into the output rank)."""
    out_rank = np.ndim(x) + np.size(axes)
    return np.expand_dims(x, tuple(sorted(_normalize_axis(a, out_rank) for a in _ints(axes))))


@kernel("squeeze")
def squeeze(ctx, x, axes=None):
    """MIL ``squeeze``: drop size-1 dims; listed ``axes`` that are not size 1 are ignored (PyTorch rule)."""
    if axes is None:
        return np.squeeze(x)
    rank = np.ndim(x)
    drop = tuple(a for a in {_normalize_axis(a, rank) for a in _ints(axes)} if x.shape[a] == 1)
    return np.squeeze(x, axis=drop)


@kernel("transpose")
def transpose(ctx, x, perm):
    """MIL ``transpose``: permute dims by ``perm`` (negative entries allowed)."""
    return np.transpose(x, _ints(perm)) if np.ndim(x) else x


@kernel("reverse")
def reverse(ctx, x, axes=None):
    """MIL ``reverse``: flip along ``axes`` (all dims when absent)."""
    return np.flip(x, axis=None if axes is None else tuple(_ints(axes)))


@kernel("reverse_sequence")
def reverse_sequence(ctx, x, lengths, seq_axis=0, batch_axis=0):
    """MIL ``reverse_sequence``: for batch ``i``, reverse the first ``lengths[i]`` items along ``seq_axis``."""
    out = np.array(x, copy=True)
    rank = np.ndim(x)
    seq_axis, batch_axis = _normalize_axis(seq_axis, rank), _normalize_axis(batch_axis, rank)
    for b, length in enumerate(_ints(lengths)):
        index: list = [slice(None)] * rank
        index[batch_axis] = b
        src = list(index)
        index[seq_axis] = slice(0, length)
        src[seq_axis] = slice(length - 1, None, -1) if length > 0 else slice(0, 0)
        out[tuple(index)] = x[tuple(src)]
    return out


# --- slices ---------------------------------------------------------------------------------


def _index_slices(rank, begin, end, stride, begin_mask, end_mask, squeeze_mask) -> tuple[slice, ...]:
    """Python slices of ``slice_by_index`` / ``slice_update``, as coremltools'
    ``solve_slice_by_index_slice`` builds them (a squeezed dim takes the single item at ``begin``)."""
    begin, end = _ints(begin), _ints(end)
    stride = [1] * rank if stride is None else _ints(stride)
    slices = []
    for i in range(rank):
        b = None if begin_mask[i] else begin[i]
        e = None if end_mask[i] or squeeze_mask[i] else end[i]
        s = np.iinfo(np.int32).max if squeeze_mask[i] else stride[i]
        slices.append(slice(b, e, s))
    return tuple(slices)


@kernel("slice_by_index")
def slice_by_index(ctx, x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """MIL ``slice_by_index``: ``x[begin:end:stride, ...]`` with numpy-style masks."""
    rank = np.ndim(x)
    squeeze = _flags(squeeze_mask, rank)
    slices = _index_slices(rank, begin, end, stride, _flags(begin_mask, rank), _flags(end_mask, rank), squeeze)
    out = x[slices]
    return np.squeeze(out, axis=tuple(i for i, m in enumerate(squeeze) if m))


@kernel("slice_update")
def slice_update(ctx, x, update, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """iOS18 ``slice_update``: a copy of ``x`` whose ``slice_by_index`` region is set to ``update``."""
    rank = np.ndim(x)
    slices = _index_slices(
        rank, begin, end, stride, _flags(begin_mask, rank), _flags(end_mask, rank), _flags(squeeze_mask, rank)
    )
    out = np.array(x, copy=True)
    out[slices] = np.reshape(update, out[slices].shape)
    return out


@kernel("slice_by_size")
def slice_by_size(ctx, x, begin, size):
    """MIL ``slice_by_size``: ``size[i] == -1`` takes everything from ``begin[i]`` to the end."""
    slices = []
    for dim, b, s in zip(np.shape(x), _ints(begin), _ints(size)):
        b = b + dim if b < 0 else b
        slices.append(slice(b, None) if s == -1 else slice(b, b + s))
    return x[tuple(slices)]


@kernel("sliding_windows")
def sliding_windows(ctx, x, axis, size, stride=1):
    """MIL ``sliding_windows``: windows of ``size`` every ``stride`` along ``axis``, which becomes
    ``(num_windows, size)``."""
    axis = _normalize_axis(axis, np.ndim(x))
    size, stride = int(size), int(stride)
    count = (x.shape[axis] - size) // stride + 1
    index = np.arange(count)[:, None] * stride + np.arange(size)[None, :]
    return np.take(x, index, axis=axis)


# --- depth / space / batch rearrangements (NCHW) -------------------------------------------


@kernel("depth_to_space")
def depth_to_space(ctx, x, block_size):
    """MIL ``depth_to_space`` (TensorFlow DCR order): channel ``(i*bs + j)*C' + c`` goes to
    pixel offset ``(i, j)`` of output channel ``c``."""
    bs = int(block_size)
    n, c, h, w = x.shape
    y = x.reshape(n, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (bs * bs), h * bs, w * bs)


@kernel("space_to_depth")
def space_to_depth(ctx, x, block_size):
    """MIL ``space_to_depth``: the inverse of ``depth_to_space`` (DCR order)."""
    bs = int(block_size)
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bs, bs, w // bs, bs).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * bs * bs, h // bs, w // bs)


@kernel("pixel_shuffle")
def pixel_shuffle(ctx, x, upscale_factor):
    """MIL ``pixel_shuffle`` = ``torch.nn.PixelShuffle`` (CRD order)."""
    f = int(upscale_factor)
    n, c, h, w = x.shape
    y = x.reshape(n, c // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (f * f), h * f, w * f)


@kernel("pixel_unshuffle")
def pixel_unshuffle(ctx, x, downscale_factor):
    """iOS16 ``pixel_unshuffle`` = ``torch.nn.PixelUnshuffle``."""
    f = int(downscale_factor)
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // f, f, w // f, f).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * f * f, h // f, w // f)


@kernel("space_to_batch")
def space_to_batch(ctx, x, block_shape, paddings):
    """MIL ``space_to_batch`` (TensorFlow ``space_to_batch_nd`` on NCHW): zero-pad H and W, then
    move each ``(bh, bw)`` block offset into the batch, offset-major: batch ``(i*bw + j)*n + b``."""
    bh, bw = _ints(block_shape)
    (pt, pb), (pl, pr) = np.asarray(paddings).reshape(2, 2).tolist()
    x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bh, bh, w // bw, bw).transpose(3, 5, 0, 1, 2, 4)
    return y.reshape(bh * bw * n, c, h // bh, w // bw)


@kernel("batch_to_space")
def batch_to_space(ctx, x, block_shape, crops):
    """MIL ``batch_to_space``: the inverse of ``space_to_batch``, then crop H and W."""
    bh, bw = _ints(block_shape)
    (ct, cb), (cl, cr) = np.asarray(crops).reshape(2, 2).tolist()
    nb, c, h, w = x.shape
    n = nb // (bh * bw)
    y = x.reshape(bh, bw, n, c, h, w).transpose(2, 3, 4, 0, 5, 1).reshape(n, c, h * bh, w * bw)
    return y[:, :, ct : h * bh - cb, cl : w * bw - cr]
