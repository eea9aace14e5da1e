"""Pooling MIL ops: ``avg_pool``, ``max_pool``, ``l2_pool`` (``mil/ops/defs/iOS15/pool.py``).

Output sizes follow the defs' ``spatial_dimensions_out_shape``, including ``ceil_mode``; windows
that ``ceil_mode`` lets run past the padded input see nothing there (they are neither summed nor
counted). Padding reads as ``0`` for average and L2 pooling and as ``-inf`` for max pooling. fp16
is computed in fp32.

How: the input is padded once (declared pads, then the ``ceil_mode`` extra) and the window
reduction is done one spatial dim at a time -- a max or a sum over a box is a max or a sum over
each of its sides in turn -- as ``k - 1`` elementwise ``maximum`` / ``add`` of strided views of
the input (torch, fp32), the outer dims first so that the large early passes run over contiguous
rows. Long strided windows (:data:`UNFOLD_MIN_KERNEL`) reduce an ``unfold`` view instead. This
computes exactly the generic definition (``_generic_pool``: numpy ``sliding_window_view`` over the
padded input, kept as the reference the tests compare with), sums only in another order; torch's
own pooling is not used: it limits padding to half the kernel, has its own ``ceil_mode`` and
``count_include_pad`` rules, and is slower here than the strided views.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

from ..registry import kernel
from ..values import torch_tensor
from .conv import conv_pads, memo

UNFOLD_MIN_KERNEL = 8
"""Strided windows (stride > 1) at least this long (along one dim) are reduced with ``unfold`` +
``amax``/``sum`` rather than one elementwise op per window element: measured faster for such
windows (2-6x at 12..32 long), slower for stride-1 and short ones."""


def _out_size(size: int, k: int, s: int, total_pad: int, ceil_mode: bool) -> int:
    """One spatial output size, as ``_utils.spatial_dimensions_out_shape`` computes it."""
    if not ceil_mode:
        return (size + total_pad - k) // s + 1
    out = (size + total_pad - k + s - 1) // s + 1
    if total_pad > 0 and (out - 1) * s >= size + total_pad / 2:
        out -= 1
    return out


def _int_list(values) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1).tolist()]


class _Geometry:
    """Padding, output sizes and the extra trailing padding ``ceil_mode`` windows need; and, worked
    out once per op (:func:`~.conv.memo`), how the fast path pads and reduces."""

    def __init__(self, x_shape, kernel_sizes, strides, pad_type, pad, ceil_mode):
        n = len(x_shape) - 2
        self.kernel = _int_list(kernel_sizes)
        self.strides = _int_list(strides) if strides is not None else [1] * n
        self.in_sizes = list(x_shape[2:])
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
        # F.pad's list (last dim first): declared pads, then the ceil_mode extra at the end
        flat = [p for (before, after), extra in zip(reversed(self.pads), reversed(self.extra))
                for p in (before, after + extra)]
        self.torch_pad = flat if any(flat) else None
        # per spatial dim that needs reducing: (axis, k, s, [index of the window elements' view])
        self.passes = []
        for axis, (k, s, o, size, (before, after), extra) in enumerate(
            zip(self.kernel, self.strides, self.out_sizes, self.in_sizes, self.pads, self.extra), start=2
        ):
            span = (o - 1) * s + 1  # the window starts, for window offset 0
            prefix = (slice(None),) * axis
            if k >= UNFOLD_MIN_KERNEL and s > 1:
                self.passes.append((axis, k, s, span + k - 1))
            elif k > 1 or s != 1 or o != size + before + after + extra:
                self.passes.append((axis, k, s, [prefix + (slice(i, i + span, s),) for i in range(k)]))
        self._divisors: dict[bool, object] = {}

    # --- the fast path: strided views, one spatial dim at a time (torch) ---------------------

    def padded(self, t: torch.Tensor, value: float) -> torch.Tensor:
        """``t`` padded on its trailing spatial dims: the declared pads then the ``ceil_mode`` extra."""
        return t if self.torch_pad is None else F.pad(t, self.torch_pad, value=value)

    def reduce(self, t: torch.Tensor, op: str) -> tuple[torch.Tensor, bool]:
        """The ``op`` (``"max"`` or ``"sum"``) of ``t`` (already padded) over every window, and
        whether that tensor is new (False: a view of ``t``, when every window is one element)."""
        fresh = False
        is_max = op == "max"
        for axis, k, s, views in self.passes:
            if not isinstance(views, list):  # a long window: unfold, [..., o, ..., k]
                windows = t.narrow(axis, 0, views).unfold(axis, k, s)
                t, fresh = (windows.amax(-1) if is_max else windows.sum(-1)), True
            elif k == 1:
                t = t[views[0]]
            else:
                acc = torch.maximum(t[views[0]], t[views[1]]) if is_max else torch.add(t[views[0]], t[views[1]])
                for index in views[2:]:
                    if is_max:
                        torch.maximum(acc, t[index], out=acc)
                    else:
                        acc.add_(t[index])
                t, fresh = acc, True
        return t, fresh

    def divisor(self, exclude_padding: bool):
        """Per output position, how many elements the average divides by (at least 1): a number
        when it is the same everywhere, else an fp32 tensor of the output's spatial shape."""
        d = self._divisors.get(exclude_padding)
        if d is None:
            d = self._divisors[exclude_padding] = _divisor(
                self.in_sizes, self.kernel, self.strides, self.pads, self.out_sizes, exclude_padding
            )
        return d

    # --- the generic definition (numpy sliding windows): the reference for the fast path -----

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


def _divisor(in_sizes, kernel, strides, pads, out_sizes, exclude_padding: bool):
    """See :meth:`_Geometry.divisor`. A window's element count is the product of its per-dim
    counts: the window and the region it counts (the input, or the input with its declared pads)
    are both boxes."""
    counts = []
    for size, k, s, (before, after), o in zip(in_sizes, kernel, strides, pads, out_sizes):
        lo, hi = (before, before + size) if exclude_padding else (0, before + size + after)
        starts = np.arange(o) * s
        counts.append(np.clip(np.minimum(starts + k, hi) - np.maximum(starts, lo), 0, None))
    if any(c.size == 0 for c in counts):
        return 1.0
    if all(c.min() == c.max() for c in counts):
        return float(max(1, int(np.prod([int(c[0]) for c in counts]))))
    total = np.ones((), dtype=np.float32)
    for c in counts:
        total = np.multiply.outer(total, c.astype(np.float32))
    return torch.from_numpy(np.maximum(total, 1.0).astype(np.float32))


def _windows(a: np.ndarray, kernel_sizes, strides, out_sizes) -> np.ndarray:
    """View of shape ``a.shape[:-n] + out_sizes + kernel_sizes`` over the trailing ``n`` dims."""
    n = len(kernel_sizes)
    axes = tuple(range(a.ndim - n, a.ndim))
    view = sliding_window_view(a, kernel_sizes, axis=axes)
    index = (Ellipsis,) + tuple(slice(0, o * s, s) for o, s in zip(out_sizes, strides)) + (slice(None),) * n
    return view[index]


def _generic_pool(kind: str, x, kernel_sizes, strides=None, pad_type="valid", pad=None,
                  exclude_padding_from_average=False, ceil_mode=False) -> np.ndarray:
    """The pooling ops computed straight from their definition with numpy sliding windows
    (``kind``: ``"avg"``, ``"max"`` or ``"l2"``); slow, the reference for the kernels."""
    geo = _Geometry(x.shape, kernel_sizes, strides, pad_type, pad, ceil_mode)
    a = np.asarray(x, dtype=np.float32)
    if kind == "max":
        windows = _windows(geo.pad(a, -np.inf), geo.kernel, geo.strides, geo.out_sizes)
        return windows.max(axis=tuple(range(-len(geo.kernel), 0)))
    if kind == "l2":
        return np.sqrt(geo.window_sums(geo.pad(np.square(a), 0.0)))
    sums = geo.window_sums(geo.pad(a, 0.0))
    return sums / np.maximum(geo.counts(bool(exclude_padding_from_average)), 1.0)


def _geometry(ctx, x, kernel_sizes, strides, pad_type, pad, ceil_mode) -> _Geometry:
    return memo(ctx, (kernel_sizes, strides, pad, ceil_mode), (x.shape, pad_type),
                lambda: _Geometry(x.shape, kernel_sizes, strides, pad_type, pad, ceil_mode))


def _own(t: torch.Tensor, fresh: bool) -> torch.Tensor:
    return t if fresh else t.clone()


@kernel("avg_pool")
def avg_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, exclude_padding_from_average=False,
             ceil_mode=False):
    """``avg_pool``: padded zeros count in the divisor unless ``exclude_padding_from_average``."""
    geo = _geometry(ctx, x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    sums, fresh = geo.reduce(geo.padded(torch_tensor(x), 0.0), "sum")
    divisor = geo.divisor(bool(exclude_padding_from_average))
    if fresh:
        return sums.div_(divisor).numpy()
    return (sums / divisor).numpy()


@kernel("max_pool")
def max_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """``max_pool``: the maximum over each window, padding never wins."""
    geo = _geometry(ctx, x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    result, fresh = geo.reduce(geo.padded(torch_tensor(x), float("-inf")), "max")
    return _own(result, fresh).numpy()


@kernel("l2_pool")
def l2_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """``l2_pool``: ``sqrt(sum(x**2))`` over each window (no division by the window size)."""
    geo = _geometry(ctx, x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    t = torch_tensor(x)
    sums, _ = geo.reduce(geo.padded(t * t, 0.0), "sum")  # ``t * t`` is new: a view of it is ours too
    return sums.sqrt_().numpy()
