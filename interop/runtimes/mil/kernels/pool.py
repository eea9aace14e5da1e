"""Pooling MIL ops: ``avg_pool``, ``max_pool``, ``l2_pool`` (``mil/ops/defs/iOS15/pool.py``).

All three slide a window over the padded input (numpy ``sliding_window_view``). Output sizes follow
the defs' ``spatial_dimensions_out_shape``, including ``ceil_mode``; windows that ``ceil_mode`` lets
run past the padded input see nothing there (they are neither summed nor counted). Padding reads
as ``0`` for average and L2 pooling and as ``-inf`` for max pooling. fp16 is computed in fp32.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..registry import kernel
from .conv import conv_pads


def _out_size(size: int, k: int, s: int, total_pad: int, ceil_mode: bool) -> int:
    """One spatial output size, as ``_utils.spatial_dimensions_out_shape`` computes it."""
    if not ceil_mode:
        return (size + total_pad - k) // s + 1
    out = (size + total_pad - k + s - 1) // s + 1
    if total_pad > 0 and (out - 1) * s >= size + total_pad / 2:
        out -= 1
    return out


def _windows(a: np.ndarray, kernel_sizes, strides, out_sizes) -> np.ndarray:
    """View of shape ``a.shape[:-n] + out_sizes + kernel_sizes`` over the trailing ``n`` dims."""
    n = len(kernel_sizes)
    axes = tuple(range(a.ndim - n, a.ndim))
    view = sliding_window_view(a, kernel_sizes, axis=axes)
    index = (Ellipsis,) + tuple(slice(0, o * s, s) for o, s in zip(out_sizes, strides)) + (slice(None),) * n
    return view[index]


class _Geometry:
    """Padding, output sizes and the extra trailing padding ``ceil_mode`` windows need."""

    def __init__(self, x: np.ndarray, kernel_sizes, strides, pad_type, pad, ceil_mode):
        n = x.ndim - 2
        self.kernel = [int(k) for k in np.asarray(kernel_sizes).reshape(-1)]
        self.strides = [int(s) for s in np.asarray(strides).reshape(-1)] if strides is not None else [1] * n
        self.in_sizes = list(x.shape[2:])
        self.pads = conv_pads(pad_type, pad, self.in_sizes, self.kernel, self.strides, [1] * n)
        self.out_sizes = [
            _out_size(size, k, s, before + after, bool(ceil_mode))
            for size, k, s, (before, after) in zip(self.in_sizes, self.kernel, self.strides, self.pads)
        ]
        self.extra = [
            max(0, (o - 1) * s + k - (size + before + after))
            for o, s, k, size, (before, after) in zip(
                self.out_sizes, self.strides, self.kernel, self.in_sizes, self.pads
            )
        ]

    def pad(self, a: np.ndarray, value: float) -> np.ndarray:
        """``a`` padded on its trailing spatial dims: the declared pads then the ``ceil_mode`` extra."""
        widths = [(0, 0)] * (a.ndim - len(self.pads))
        widths += [(before, after + extra) for (before, after), extra in zip(self.pads, self.extra)]
        return np.pad(a, widths, constant_values=value)

    def window_sums(self, a: np.ndarray) -> np.ndarray:
        """Sum of ``a`` (already padded) over every pooling window."""
        n = len(self.kernel)
        return _windows(a, self.kernel, self.strides, self.out_sizes).sum(axis=tuple(range(-n, 0)))

    def counts(self, exclude_padding: bool) -> np.ndarray:
        """Per output position, how many elements the average divides by."""
        ones = np.ones(self.in_sizes, dtype=np.float32)
        if exclude_padding:
            return self.window_sums(self.pad(ones, 0.0))
        declared = np.pad(ones, self.pads, constant_values=1.0)
        extra = [(0, e) for e in self.extra]
        return self.window_sums(np.pad(declared, extra, constant_values=0.0))


def _float(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


@kernel("avg_pool")
def avg_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, exclude_padding_from_average=False,
             ceil_mode=False):
    """``avg_pool``: padded zeros count in the divisor unless ``exclude_padding_from_average``."""
    geo = _Geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    sums = geo.window_sums(geo.pad(_float(x), 0.0))
    return sums / np.maximum(geo.counts(bool(exclude_padding_from_average)), 1.0)


@kernel("max_pool")
def max_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """``max_pool``: the maximum over each window, padding never wins."""
    geo = _Geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    windows = _windows(geo.pad(_float(x), -np.inf), geo.kernel, geo.strides, geo.out_sizes)
    return windows.max(axis=tuple(range(-len(geo.kernel), 0)))


@kernel("l2_pool")
def l2_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """``l2_pool``: ``sqrt(sum(x**2))`` over each window (no division by the window size)."""
    geo = _Geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    return np.sqrt(geo.window_sums(geo.pad(np.square(_float(x)), 0.0)))
