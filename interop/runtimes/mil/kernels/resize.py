"""Image resizing MIL ops (``mil/ops/defs/iOS15|16|17/image_resizing.py``):
``upsample_nearest_neighbor``, ``upsample_bilinear``, ``resize_nearest_neighbor``,
``resize_bilinear``, ``resize`` (iOS17), ``crop``, ``crop_resize``, ``resample``, ``affine``.

Sampling grids follow the ``sampling_mode`` formulas of ``resize_bilinear``'s docstring (the
SamplingMode of Core ML's NeuralNetwork.proto); interpolation is separable along each resized
axis. ``resample``/``affine`` gather 2-D bilinear / nearest samples with the documented padding
modes. Everything is computed in float32/float64; the interpreter rounds to the declared dtype.
"""

from __future__ import annotations

import numpy as np

from ..registry import kernel

_SAMPLING_MODES = ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS")


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


# --- 1-D sampling ------------------------------------------------------------------------------


def sampling_grid(start: float, end: float, n_out: int, mode: str) -> np.ndarray:
    """Positions of ``n_out`` samples on the interval ``[start, end]`` (``X = end - start + 1``
    input pixels), per ``resize_bilinear``'s ``sampling_mode``; not clamped."""
    mode = str(mode).upper()
    i = np.arange(n_out, dtype=np.float64)
    length = end - start
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            return np.array([start if mode == "STRICT_ALIGN_CORNERS" else start + length / 2])
        return start + i * length / (n_out - 1)
    if mode == "DEFAULT":
        return start + i * (length + 1) / n_out
    if mode == "OFFSET_CORNERS":
        spacing = max(1.0, length) / n_out
        return start + (i + 0.5) * spacing
    if mode == "UNALIGN_CORNERS":
        return start + (i + 0.5) * (length + 1) / n_out - 0.5
    raise ValueError(f"unknown sampling_mode {mode!r}; expected one of {_SAMPLING_MODES}")


def _resize_grid(size: int, n_out: int, mode: str) -> np.ndarray:
    """``sampling_grid`` over a whole axis of ``size`` pixels, clamped to ``[0, size - 1]``."""
    return np.clip(sampling_grid(0.0, size - 1.0, n_out, mode), 0.0, size - 1.0)


def _linear_along(a: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``a`` along ``axis`` at in-range ``positions``."""
    size = a.shape[axis]
    lower = np.clip(np.floor(positions).astype(np.int64), 0, size - 1)
    upper = np.minimum(lower + 1, size - 1)
    shape = [1] * a.ndim
    shape[axis] = len(positions)
    weight = (positions - lower).astype(np.float32).reshape(shape)
    return np.take(a, lower, axis=axis) * (1 - weight) + np.take(a, upper, axis=axis) * weight


def _nearest_along(a: np.ndarray, axis: int, indices: np.ndarray) -> np.ndarray:
    """``a`` at integer ``indices`` (clamped to the axis) along ``axis``."""
    return np.take(a, np.clip(indices.astype(np.int64), 0, a.shape[axis] - 1), axis=axis)


def _bilinear_hw(x: np.ndarray, out_h: int, out_w: int, mode: str) -> np.ndarray:
    """Resize the last two dims of ``x`` with bilinear interpolation on ``mode``'s grid."""
    y = _linear_along(_f32(x), -2, _resize_grid(x.shape[-2], out_h, mode))
    return _linear_along(y, -1, _resize_grid(x.shape[-1], out_w, mode))


# --- upsample / resize -------------------------------------------------------------------------


def _nearest_hw(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Nearest resize of the last two dims: output pixel ``i`` copies input ``floor(i * in / out)``."""
    y = x
    for axis, n_out in ((-2, out_h), (-1, out_w)):
        y = _nearest_along(y, axis, np.floor(np.arange(n_out) * x.shape[axis] / n_out))
    return y


@kernel("upsample_nearest_neighbor")
def upsample_nearest_neighbor(ctx, x, scale_factor_height=1, scale_factor_width=1):
    """Output ``floor(H * scale)``; the source pixel is picked from the recomputed ratio
    ``H_in / H_out`` (for fractional scales this is not ``1 / scale``)."""
    out_h = int(np.floor(x.shape[-2] * float(scale_factor_height)))
    out_w = int(np.floor(x.shape[-1] * float(scale_factor_width)))
    return _nearest_hw(x, out_h, out_w)


@kernel("resize_nearest_neighbor")
def resize_nearest_neighbor(ctx, x, target_size_height, target_size_width):
    """Nearest resize to the target size (see ``_nearest_hw``)."""
    return _nearest_hw(x, int(target_size_height), int(target_size_width))


@kernel("upsample_bilinear")
def upsample_bilinear(ctx, x, scale_factor_height=1, scale_factor_width=1, align_corners=True,
                      half_pixel_centers=None):
    """Output ``floor(H * scale)``. ``align_corners`` samples the STRICT_ALIGN_CORNERS grid;
    otherwise UNALIGN_CORNERS (half-pixel centers, the default) or, with iOS16's
    ``half_pixel_centers=False``, the DEFAULT grid."""
    align_corners = bool(align_corners)
    half_pixel = (not align_corners) if half_pixel_centers is None else bool(half_pixel_centers)
    mode = "STRICT_ALIGN_CORNERS" if align_corners else ("UNALIGN_CORNERS" if half_pixel else "DEFAULT")
    out_h = int(np.floor(x.shape[-2] * float(scale_factor_height)))
    out_w = int(np.floor(x.shape[-1] * float(scale_factor_width)))
    return _bilinear_hw(x, out_h, out_w, mode)


@kernel("resize_bilinear")
def resize_bilinear(ctx, x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    """Bilinear resize of the last two dims to the target size on ``sampling_mode``'s grid."""
    return _bilinear_hw(x, int(target_size_height), int(target_size_width), sampling_mode)


@kernel("resize")
def resize(ctx, x, shape, resized_dims, interpolation_mode="LINEAR", sampling_mode="DEFAULT"):
    """iOS17 ``resize``: the last ``resized_dims`` dims of ``x`` take their sizes from the last
    ``resized_dims`` entries of ``shape`` (``0`` keeps the input size). LINEAR interpolates on
    ``sampling_mode``'s grid; NEAREST_NEIGHBOR takes the input pixel nearest to each grid point."""
    shape = [int(s) for s in np.asarray(shape).reshape(-1)]
    count = int(resized_dims)
    nearest = str(interpolation_mode).upper() == "NEAREST_NEIGHBOR"
    y = x if nearest else _f32(x)
    for i in range(count):
        axis = x.ndim - count + i
        n_out = shape[len(shape) - count + i] or x.shape[axis]
        grid = _resize_grid(x.shape[axis], n_out, sampling_mode)
        y = _nearest_along(y, axis, np.floor(grid + 0.5)) if nearest else _linear_along(y, axis, grid)
    return y


@kernel("crop")
def crop(ctx, x, crop_height, crop_width):
    """Drop ``crop_height = [top, bottom]`` rows and ``crop_width = [left, right]`` columns."""
    top, bottom = (int(v) for v in np.asarray(crop_height).reshape(-1))
    left, right = (int(v) for v in np.asarray(crop_width).reshape(-1))
    return x[..., top: x.shape[-2] - bottom, left: x.shape[-1] - right]


# --- crop_resize -------------------------------------------------------------------------------


def _box_corners(box: np.ndarray, mode: str) -> tuple[float, float, float, float]:
    """``(h_start, w_start, h_end, w_end)`` of a 4-number box in ``box_coordinate_mode``."""
    a, b, c, d = (float(v) for v in box)
    mode = str(mode).upper()
    if mode == "CORNERS_HEIGHT_FIRST":
        return a, b, c, d
    if mode == "CORNERS_WIDTH_FIRST":
        return b, a, d, c
    if mode == "CENTER_SIZE_HEIGHT_FIRST":
        return a - c / 2, b - d / 2, a + c / 2, b + d / 2
    if mode == "CENTER_SIZE_WIDTH_FIRST":
        return b - d / 2, a - c / 2, b + d / 2, a + c / 2
    raise ValueError(f"unknown box_coordinate_mode {mode!r}")


def _crop_one(image: np.ndarray, box, params: dict) -> np.ndarray:
    """Bilinear crop-and-resize of ``image [C, H, W]`` to ``[C, target_height, target_width]``;
    samples outside ``[0, H-1] x [0, W-1]`` take ``pad_value``."""
    height, width = image.shape[-2:]
    h0, w0, h1, w1 = _box_corners(box, params["box_coordinate_mode"])
    h_scale = (height - 1 if params["normalized"] else 1) * params["spatial_scale"]
    w_scale = (width - 1 if params["normalized"] else 1) * params["spatial_scale"]
    grid_h = sampling_grid(h0 * h_scale, h1 * h_scale, params["target_height"], params["sampling_mode"])
    grid_w = sampling_grid(w0 * w_scale, w1 * w_scale, params["target_width"], params["sampling_mode"])
    inside_h = (grid_h >= 0) & (grid_h <= height - 1)
    inside_w = (grid_w >= 0) & (grid_w <= width - 1)
    out = _linear_along(image, -2, np.clip(grid_h, 0, height - 1))
    out = _linear_along(out, -1, np.clip(grid_w, 0, width - 1))
    return np.where(inside_h[:, None] & inside_w[None, :], out, np.float32(params["pad_value"]))


@kernel("crop_resize")
def crop_resize(ctx, x, roi=None, boxes=None, box_indices=None, target_height=1, target_width=1,
                normalized_coordinates=False, spatial_scale=1.0, box_coordinate_mode="CORNERS_HEIGHT_FIRST",
                sampling_mode="DEFAULT", pad_value=0.0):
    """``crop_resize``. iOS15/16: ``roi [N,1,4|5,1,1]`` -> ``[N, B, C, h, w]`` (4 numbers: every box
    on every image) or ``[N, 1, C, h, w]`` (5 numbers: a batch index, then the box).
    iOS17: ``boxes [N, 4]`` on images ``box_indices [N]`` -> ``[N, C, h, w]``.
    Box coordinates scale by ``(H-1, W-1)`` when normalized, then by ``spatial_scale``."""
    params = {
        "target_height": int(target_height), "target_width": int(target_width),
        "normalized": bool(normalized_coordinates), "spatial_scale": float(spatial_scale),
        "box_coordinate_mode": box_coordinate_mode, "sampling_mode": sampling_mode,
        "pad_value": float(pad_value),
    }
    x = _f32(x)
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        indices = np.arange(len(boxes)) if box_indices is None else np.asarray(box_indices).reshape(-1)
        return np.stack([_crop_one(x[int(i)], box, params) for box, i in zip(boxes, indices)])
    roi = np.asarray(roi, dtype=np.float64).reshape(roi.shape[0], -1)
    if roi.shape[1] == 5:
        return np.stack([_crop_one(x[int(r[0])], r[1:], params)[None] for r in roi])
    return np.stack([np.stack([_crop_one(image, r, params) for image in x]) for r in roi])


# --- resample / affine -------------------------------------------------------------------------


def _to_pixels(coords: np.ndarray, size: int, coordinates_mode: str, align_corners: bool) -> np.ndarray:
    """Sampling positions in pixel units (``0 .. size-1`` is the image) from ``coordinates_mode``."""
    mode = str(coordinates_mode).lower()
    if mode == "unnormalized":
        return coords
    if mode == "normalized_minus_one_to_one":
        return (coords + 1) / 2 * (size - 1) if align_corners else ((coords + 1) * size - 1) / 2
    if mode == "normalized_zero_to_one":
        return coords * (size - 1) if align_corners else coords * size - 0.5
    raise ValueError(f"unknown coordinates_mode {coordinates_mode!r}")


def _reflect(p: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold ``p`` into ``[low, high]`` by mirroring at both ends."""
    span = high - low
    if span <= 0:
        return np.zeros_like(p)
    distance = np.abs(p - low)
    flips = np.floor(distance / span)
    extra = distance - flips * span
    return np.where(flips % 2 == 0, low + extra, high - extra)


def _fold(p: np.ndarray, size: int, padding_mode: str) -> np.ndarray:
    """Positions after ``padding_mode``: ``border`` clamps, ``reflection`` mirrors about the edge
    pixels, ``symmetric`` about the image edges (repeating the edge pixel); ``constant`` keeps
    them (out-of-image samples read ``padding_value``)."""
    mode = str(padding_mode).lower()
    if mode == "constant":
        return p
    if mode == "reflection":
        p = _reflect(p, 0.0, size - 1.0)
    elif mode == "symmetric":
        p = _reflect(p, -0.5, size - 0.5)
    elif mode != "border":
        raise ValueError(f"unknown padding_mode {padding_mode!r}")
    return np.clip(p, 0.0, size - 1.0)


def _gather(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, fill: float) -> np.ndarray:
    """``image[:, rows, cols]`` (``[C, H, W]`` -> ``[C, *rows.shape]``), ``fill`` off the image."""
    height, width = image.shape[-2:]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    values = image[:, np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)]
    return np.where(inside, values, np.float32(fill))


def _sample(image: np.ndarray, px: np.ndarray, py: np.ndarray, bilinear: bool, fill: float) -> np.ndarray:
    """Bilinear or nearest (round half to even) samples of ``image [C, H, W]`` at ``(px, py)``."""
    if not bilinear:
        return _gather(image, np.rint(py).astype(np.int64), np.rint(px).astype(np.int64), fill)
    x0, y0 = np.floor(px), np.floor(py)
    wx, wy = (px - x0).astype(np.float32), (py - y0).astype(np.float32)
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    top = _gather(image, y0, x0, fill) * (1 - wx) + _gather(image, y0, x0 + 1, fill) * wx
    bottom = _gather(image, y0 + 1, x0, fill) * (1 - wx) + _gather(image, y0 + 1, x0 + 1, fill) * wx
    return top * (1 - wy) + bottom * wy


def _resample(x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners):
    """Shared body of ``resample`` and ``affine``: ``coordinates [B, H_out, W_out, (x, y)]``."""
    x = _f32(x)
    coords = np.asarray(coordinates, dtype=np.float64)
    height, width = x.shape[-2:]
    px = _fold(_to_pixels(coords[..., 0], width, coordinates_mode, bool(align_corners)), width, padding_mode)
    py = _fold(_to_pixels(coords[..., 1], height, coordinates_mode, bool(align_corners)), height, padding_mode)
    bilinear = str(sampling_mode).lower() == "bilinear"
    return np.stack([_sample(x[b], px[b], py[b], bilinear, float(padding_value)) for b in range(x.shape[0])])


@kernel("resample")
def resample(ctx, x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners):
    """``resample`` (iOS15+): sample ``x [B, C, H, W]`` at ``coordinates [B, H_out, W_out, 2]``
    given as ``(w, h)`` pairs."""
    return _resample(x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners)


def _affine_base(n: int, align_corners: bool) -> np.ndarray:
    """Normalized ``[-1, 1]`` output positions along one axis (as torch's ``affine_grid``)."""
    if n <= 1:
        return np.zeros(max(n, 0))
    base = np.linspace(-1.0, 1.0, n)
    return base if align_corners else base * (n - 1) / n


@kernel("affine")
def affine(ctx, x, transform_matrix, output_height, output_width, sampling_mode, padding_mode, padding_value,
           coordinates_mode, align_corners):
    """``affine`` (iOS15+): output ``(w, h)`` in normalized coordinates maps to
    ``(a0*w + a1*h + a2, b0*w + b1*h + b2)`` in the input, then is resampled."""
    matrix = np.asarray(transform_matrix, dtype=np.float64).reshape(-1, 2, 3)
    matrix = np.broadcast_to(matrix, (x.shape[0], 2, 3))
    ws = _affine_base(int(output_width), bool(align_corners))
    hs = _affine_base(int(output_height), bool(align_corners))
    grid_h, grid_w = np.meshgrid(hs, ws, indexing="ij")
    points = np.stack([grid_w, grid_h, np.ones_like(grid_w)], axis=-1)  # [H_out, W_out, 3]
    coordinates = np.einsum("hwk,bjk->bhwj", points, matrix)
    return _resample(x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners)
