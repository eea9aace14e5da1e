"""Weight-compression and quantization MIL ops.

* iOS16 ``constexpr_ops.py``: ``constexpr_affine_dequantize``, ``constexpr_cast``, and the packed
  forms of ``constexpr_lut_to_dense`` / ``constexpr_sparse_to_dense`` (bit fields packed LSB
  first into uint8 bytes, plus an explicit ``shape``).
* iOS17 ``quantization_ops.py``: ``quantize``, ``dequantize``.
* iOS18 ``compression.py``: ``constexpr_blockwise_shift_scale``, the block-wise / vector forms of
  ``constexpr_lut_to_dense`` and ``constexpr_sparse_to_dense`` (indices and masks arrive
  unpacked, one element per value, already shaped), ``constexpr_lut_to_sparse``,
  ``constexpr_sparse_blockwise_shift_scale``.

Every kernel decompresses from the op's stored inputs (never from a value coremltools inferred),
so a damaged weight blob shows up in the outputs. Decompressed values are computed in float32
and rounded to the declared output dtype by the interpreter.
"""

from __future__ import annotations

import numpy as np

from ..registry import kernel


def _along_axis(param, rank: int, axis) -> np.ndarray:
    """A scalar or per-``axis`` vector parameter reshaped to broadcast against a rank-``rank`` tensor."""
    param = np.asarray(param)
    if param.ndim == 0 or param.ndim == rank:
        return param
    shape = [1] * rank
    shape[int(axis) % rank] = param.size
    return param.reshape(shape)


def _affine_dequantize(data, scale, zero_point, axis) -> np.ndarray:
    """``scale * (data - zero_point)`` with per-tensor or per-``axis`` parameters."""
    data = np.asarray(data, dtype=np.float32)
    out = data if zero_point is None else data - _along_axis(zero_point, data.ndim, axis).astype(np.float32)
    return out * _along_axis(scale, data.ndim, axis).astype(np.float32)


@kernel("constexpr_affine_dequantize")
def constexpr_affine_dequantize(ctx, quantized_data, zero_point, scale, axis):
    """iOS16 ``constexpr_affine_dequantize``: ``scale * (quantized_data - zero_point)``."""
    return _affine_dequantize(quantized_data, scale, zero_point, axis)


@kernel("constexpr_cast")
def constexpr_cast(ctx, source_val, output_dtype):
    """iOS16 / iOS18 ``constexpr_cast``: fp16 weights widened to the declared output dtype."""
    return np.asarray(source_val).astype(ctx.output_dtype())


@kernel("dequantize")
def dequantize(ctx, input, scale, zero_point=None, axis=None):
    """iOS17 ``dequantize``: ``scale * (input - zero_point)``."""
    return _affine_dequantize(input, scale, zero_point, axis)


@kernel("quantize")
def quantize(ctx, input, scale, output_dtype, zero_point=None, axis=None):
    """iOS17 ``quantize``: ``clip(round(input / scale) + zero_point)`` (round half to even)."""
    data = np.asarray(input, dtype=np.float32)
    out = np.around(data / _along_axis(scale, data.ndim, axis).astype(np.float32))
    if zero_point is not None:
        out = out + _along_axis(zero_point, data.ndim, axis).astype(np.float32)
    info = np.iinfo(ctx.output_dtype())
    return np.clip(out, info.min, info.max)


# ----------------------------------------------------------------------------------- block-wise


def _repeat_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Expand a per-block parameter to ``shape`` (block size = ``shape[i] // param.shape[i]``)."""
    for axis, (size, blocks) in enumerate(zip(shape, param.shape)):
        if size != blocks:
            param = np.repeat(param, size // blocks, axis=axis)
    return param


def _blockwise_shift_scale(data, scale, offset) -> np.ndarray:
    """``scale * (data - offset)`` with one scale / offset per block of ``data``."""
    data = np.asarray(data, dtype=np.float32)
    if offset is not None:
        data = data - _repeat_blocks(np.asarray(offset, dtype=np.float32), data.shape)
    return data * _repeat_blocks(np.asarray(scale, dtype=np.float32), data.shape)


@kernel("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(ctx, data, scale, offset=None):
    """iOS18 ``constexpr_blockwise_shift_scale``: block-wise ``scale * (data - offset)``."""
    return _blockwise_shift_scale(data, scale, offset)


# ------------------------------------------------------------------------------------------ lut


def _unpack_bits(packed, nbits: int, count: int) -> np.ndarray:
    """``count`` unsigned ``nbits``-bit fields packed LSB first into the bytes ``packed``."""
    bits = np.unpackbits(np.asarray(packed).astype(np.uint8), bitorder="little")[: count * nbits]
    return (bits.reshape(count, nbits).astype(np.int64) << np.arange(nbits)).sum(axis=1)


def _lut_packed(indices, lut, shape) -> np.ndarray:
    """iOS16 form: one palette ``lut`` of 2^n values, ``indices`` packed n bits each."""
    lut = np.asarray(lut)
    shape = tuple(int(d) for d in np.asarray(shape))
    nbits = int(np.log2(lut.size))
    return lut[_unpack_bits(indices, nbits, int(np.prod(shape)))].reshape(shape)


def _lut_blockwise(indices, lut, vector_axis) -> np.ndarray:
    """iOS18 form: ``lut`` is ``[*blocks, 2^n, VECTOR_SIZE]``; each element reads its block's palette
    and a vector entry is laid out contiguously along ``vector_axis``."""
    indices, lut = np.asarray(indices), np.asarray(lut)
    rank = indices.ndim
    table = tuple(
        (np.arange(size) // (size // blocks)).reshape([-1 if i == axis else 1 for i in range(rank)])
        for axis, (size, blocks) in enumerate(zip(indices.shape, lut.shape[:rank]))
    )
    values = lut[table + (indices.astype(np.intp),)]  # indices.shape + (VECTOR_SIZE,)
    vector_size = lut.shape[-1]
    if vector_size == 1:
        return values[..., 0]
    axis = int(vector_axis) % rank
    out_shape = list(indices.shape)
    out_shape[axis] *= vector_size
    return np.moveaxis(values, -1, axis + 1).reshape(out_shape)


@kernel("constexpr_lut_to_dense")
def constexpr_lut_to_dense(ctx, indices, lut, shape=None, vector_axis=None):
    """``constexpr_lut_to_dense``: iOS16 packed form (with ``shape``) or iOS18 block-wise form."""
    if shape is not None:
        return _lut_packed(indices, lut, shape)
    return _lut_blockwise(indices, lut, vector_axis)


# --------------------------------------------------------------------------------------- sparse


def _sparse_to_dense(nonzero_data, mask) -> np.ndarray:
    """Zeros shaped like ``mask`` with ``nonzero_data`` at its set positions, in row-major order."""
    mask = np.asarray(mask)
    out = np.zeros(mask.shape, dtype=np.asarray(nonzero_data).dtype)
    out[mask != 0] = nonzero_data
    return out


@kernel("constexpr_sparse_to_dense")
def constexpr_sparse_to_dense(ctx, nonzero_data, mask, shape=None):
    """``constexpr_sparse_to_dense``: iOS16 bit-packed ``mask`` + ``shape``, or iOS18 shaped mask."""
    if shape is None:
        return _sparse_to_dense(nonzero_data, mask)
    shape = tuple(int(d) for d in np.asarray(shape))
    flat_mask = _unpack_bits(mask, 1, int(np.prod(shape)))
    return _sparse_to_dense(nonzero_data, flat_mask).reshape(shape)


@kernel("constexpr_lut_to_sparse")
def constexpr_lut_to_sparse(ctx, indices_mask, indices_nonzero_data, lut, vector_axis=None):
    """iOS18 ``constexpr_lut_to_sparse``: (mask, de-palettized nonzero values)."""
    dense = _lut_blockwise(_sparse_to_dense(indices_nonzero_data, indices_mask), lut, vector_axis)
    mask = np.asarray(indices_mask)
    if vector_axis is not None:
        mask = np.repeat(mask, np.asarray(lut).shape[-1], axis=int(vector_axis))
    return mask, dense[mask != 0]


@kernel("constexpr_sparse_blockwise_shift_scale")
def constexpr_sparse_blockwise_shift_scale(ctx, data_mask, nonzero_data, scale, offset=None):
    """iOS18 ``constexpr_sparse_blockwise_shift_scale``: (mask, dequantized nonzero values)."""
    mask = np.asarray(data_mask)
    dense = _blockwise_shift_scale(_sparse_to_dense(nonzero_data, mask), scale, offset)
    return mask, dense[mask != 0]
