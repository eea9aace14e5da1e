"""Convolution MIL ops: ``conv`` and ``conv_transpose`` (``mil/ops/defs/iOS15/conv.py``; iOS17
only lets ``weight``/``bias`` have a dtype other than ``x``'s, which changes nothing here).

1-D, 2-D and 3-D convolutions run in float32 with torch-CPU; padding is applied explicitly
(``torch.nn.functional.pad``) so asymmetric ``same`` / ``same_lower`` / ``custom`` pads need no
special casing. fp16 operands are computed in fp32; the interpreter rounds the result.
"""

from __future__ import annotations

import numpy as np

from ..registry import kernel


def _torch():
    import torch

    return torch


def _f32(a):
    """``a`` as a float32 torch tensor."""
    return _torch().from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _ints(values, n: int) -> list[int]:
    """A per-spatial-dim int parameter (strides, dilations) as a list; all 1s when absent."""
    return [int(v) for v in np.asarray(values).reshape(-1)] if values is not None else [1] * n


def conv_pads(pad_type: str, pad, in_sizes, kernel_sizes, strides, dilations) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim, as the defs' ``aggregated_pad`` computes it.

    ``same`` puts the odd extra element after (bottom/right), ``same_lower`` before (top/left);
    ``custom`` reads ``pad = [before_0, after_0, before_1, after_1, ...]``; ``valid`` pads nothing.
    Shared with the pooling kernels.
    """
    pad_type = str(pad_type).lower()
    if pad_type == "custom":
        flat = [int(p) for p in np.asarray(pad).reshape(-1)]
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(in_sizes))]
    if pad_type == "valid":
        return [(0, 0)] * len(in_sizes)
    pads = []
    for size, k, s, d in zip(in_sizes, kernel_sizes, strides, dilations):
        effective = (k - 1) * d + 1
        total = max(0, s * -(-size // s) - size + effective - s)
        small, big = total // 2, total - total // 2
        pads.append((big, small) if pad_type == "same_lower" else (small, big))
    return pads


def _pad(t, pads: list[tuple[int, int]]):
    """Zero-pad the trailing spatial dims of ``t`` (torch wants the last dim first)."""
    flat = [p for before_after in reversed(pads) for p in before_after]
    return _torch().nn.functional.pad(t, flat) if any(flat) else t


def _conv_fn(rank: int, transpose: bool = False):
    """torch's 1-D / 2-D / 3-D (transposed) convolution."""
    if rank not in (1, 2, 3):
        raise ValueError(f"conv supports 1 to 3 spatial dims, got {rank}")
    return getattr(_torch().nn.functional, f"conv_transpose{rank}d" if transpose else f"conv{rank}d")


@kernel("conv")
def conv(ctx, x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """``conv`` (iOS15/iOS17): ``x [n, C_in, *D]`` * ``weight [C_out, C_in/groups, *K]`` + ``bias``."""
    n = x.ndim - 2
    strides, dilations = _ints(strides, n), _ints(dilations, n)
    pads = conv_pads(pad_type, pad, x.shape[2:], weight.shape[2:], strides, dilations)
    xt = _pad(_f32(x), pads)
    b = None if bias is None else _f32(bias)
    return _conv_fn(n)(xt, _f32(weight), b, stride=strides, dilation=dilations, groups=int(groups)).numpy()


def _transpose_crop(pad_type: str, pad, full: int, in_size: int, stride: int, out_size, dim: int) -> tuple[int, int]:
    """(start, length) of the output window in the unpadded transposed-conv result along ``dim``.

    Follows the def's ``type_inference``: ``valid`` keeps everything, ``custom`` drops
    ``pad[2*dim]`` before and ``pad[2*dim+1]`` after, ``same`` yields ``in_size * stride`` with the
    odd extra element cropped at the end; an explicit ``output_shape`` sets the length.
    """
    pad_type = str(pad_type).lower()
    if pad_type == "custom":
        flat = [int(p) for p in np.asarray(pad).reshape(-1)]
        start, length = flat[2 * dim], full - flat[2 * dim] - flat[2 * dim + 1]
    elif pad_type == "same":
        length = in_size * stride
        start = max(0, full - length) // 2
    else:
        start, length = 0, full
    if out_size is not None:
        length = int(out_size)
    return start, length


@kernel("conv_transpose")
def conv_transpose(ctx, x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None,
                   dilations=None, groups=1):
    """``conv_transpose`` (iOS15/iOS17): ``weight [C_in, C_out/groups, *K]``, output cropped per
    ``pad_type`` / ``pad`` or sized by ``output_shape``; the bias is added after cropping."""
    n = x.ndim - 2
    strides, dilations = _ints(strides, n), _ints(dilations, n)
    full = _conv_fn(n, transpose=True)(
        _f32(x), _f32(weight), None, stride=strides, dilation=dilations, groups=int(groups)
    ).numpy()
    out_sizes = [None] * n if output_shape is None else [int(s) for s in np.asarray(output_shape)[2:]]
    result = full
    for dim in range(n):
        start, length = _transpose_crop(
            pad_type, pad, full.shape[2 + dim], x.shape[2 + dim], strides[dim], out_sizes[dim], dim
        )
        result = _window(result, 2 + dim, start, length)
    if bias is not None:
        result = result + np.asarray(bias, dtype=np.float32).reshape((1, -1) + (1,) * n)
    return result


def _window(a: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    """``a[start:start+length]`` along ``axis``, zero-extended where the window runs past the end."""
    taken = np.take(a, np.arange(start, min(start + length, a.shape[axis])), axis=axis)
    missing = length - taken.shape[axis]
    if missing <= 0:
        return taken
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, missing)
    return np.pad(taken, widths)
