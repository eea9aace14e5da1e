"""ONNX Resize (opsets 10-19) -> PyTorch, in the modes and coordinate transformations foreign
exports use. onnx2torch's own converter maps every mode onto ``F.interpolate`` and only warns where
that computes something else (nearest with half_pixel, linear with asymmetric), and its opset
18/19 alias refused the attributes the dynamo exporter writes (``antialias=0``,
``keep_aspect_ratio_policy='stretch'``, ``axes``).

Where ``F.interpolate`` computes exactly what ONNX specifies, the module calls it (it converts to
Core ML's own upsample ops and keeps the batch axis flexible):

    linear  + half_pixel / pytorch_half_pixel   -> (bi|tri)linear, align_corners=False
    linear  + align_corners                     -> (bi|tri)linear, align_corners=True
    nearest + asymmetric + floor                -> nearest
    nearest + half_pixel + round_prefer_ceil    -> nearest-exact

Every other combination, cubic included (coremltools has no translation for
``upsample_bicubic2d``), is computed from the ONNX formula itself (source
coordinate per output index, rounding or two-tap interpolation, separably per axis, with index
gathers; cubic as four taps weighted by the Keys kernel with ``cubic_coeff_a``, edge indices
clamped). Refused (NotImplementedError, so the report names the node): tf_crop_and_resize,
antialias=1, keep_aspect_ratio_policy other than stretch, exclude_outside=1, and scaling the
batch or channel axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_TORCH_MODES = {("linear", 1): "linear", ("linear", 2): "bilinear", ("linear", 3): "trilinear", ("cubic", 2): "bicubic"}


def _text(value: Any, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _settings(node: Any) -> dict[str, Any]:
    a = node.attributes
    v10 = len(node.proto.input) == 2  # opset 10's Resize(X, scales): asymmetric coordinates, floor
    s = {"mode": _text(a.get("mode"), "nearest"),
         "ctm": _text(a.get("coordinate_transformation_mode"), "asymmetric" if v10 else "half_pixel"),
         "nearest_mode": _text(a.get("nearest_mode"), "floor" if v10 else "round_prefer_floor"),
         "cubic_a": float(a.get("cubic_coeff_a", -0.75)), "exclude_outside": int(a.get("exclude_outside", 0)),
         "antialias": int(a.get("antialias", 0)), "policy": _text(a.get("keep_aspect_ratio_policy"), "stretch"),
         "axes": list(a.get("axes", []) or [])}
    if s["ctm"] == "tf_crop_and_resize":
        raise NotImplementedError("Resize with coordinate_transformation_mode=tf_crop_and_resize")
    if s["antialias"]:
        raise NotImplementedError("Resize with antialias=1")
    if s["policy"] != "stretch":
        raise NotImplementedError(f"Resize with keep_aspect_ratio_policy={s['policy']}")
    if s["exclude_outside"]:
        raise NotImplementedError("Resize with exclude_outside=1")
    if s["ctm"] == "half_pixel_symmetric":
        raise NotImplementedError("Resize with coordinate_transformation_mode=half_pixel_symmetric")
    return s


def _constant(graph: Any, name: str | None) -> Any:
    from onnx2torch.utils.common import get_const_value

    if not name:
        return None
    try:
        value = get_const_value(name, graph)
    except KeyError:
        return "computed"
    return [float(v) for v in value.flatten().tolist()]


def exact_interpolate(s: dict[str, Any], spatial: int) -> dict[str, Any] | None:
    """``F.interpolate`` keyword arguments computing exactly this Resize, or None."""
    mode, ctm, nm = s["mode"], s["ctm"], s["nearest_mode"]
    if mode == "linear" and (mode, spatial) in _TORCH_MODES:
        if ctm in ("half_pixel", "pytorch_half_pixel"):
            return {"mode": _TORCH_MODES[(mode, spatial)], "align_corners": False}
        if ctm == "align_corners":
            return {"mode": _TORCH_MODES[(mode, spatial)], "align_corners": True}
    if mode == "nearest":
        if ctm == "asymmetric" and nm == "floor":
            return {"mode": "nearest"}
        if ctm in ("half_pixel", "pytorch_half_pixel") and nm == "round_prefer_ceil":
            return {"mode": "nearest-exact"}
    return None


def convert_resize(node: Any, graph: Any) -> Any:
    import torch
    from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult

    s = _settings(node)
    names = list(node.input_values) + [""] * 4
    x_name = names[0]
    if node.proto.op_type == "Resize" and len(node.proto.input) == 2:  # opset 10: (X, scales)
        scales, sizes, sizes_name = _constant(graph, names[1]), None, None
    else:
        scales, sizes, sizes_name = _constant(graph, names[2]), _constant(graph, names[3]), names[3] or None
    if scales == "computed":
        raise NotImplementedError("Resize with computed (non-constant) scales")
    if scales is not None and not scales:
        scales = None
    if sizes is not None and sizes != "computed" and not sizes:
        sizes = None
    fixed_sizes = sizes if isinstance(sizes, list) else None
    dynamic_sizes = sizes == "computed"

    class OnnxResizeExact(torch.nn.Module, OnnxToTorchModule):
        def forward(self, x: Any, *rest: Any) -> Any:
            rank = x.dim()
            axes = [a % rank for a in s["axes"]] if s["axes"] else list(range(rank))
            full_scales = _full(scales, axes, rank, 1.0) if scales is not None else None
            if dynamic_sizes:
                out_sizes = [int(v) for v in rest[0].tolist()]
                out_sizes = _full(out_sizes, axes, rank, None) if s["axes"] else out_sizes
                out_sizes = [x.shape[i] if v is None else v for i, v in enumerate(out_sizes)]
            elif fixed_sizes is not None:
                out_sizes = _full([int(v) for v in fixed_sizes], axes, rank, None) if s["axes"] else \
                    [int(v) for v in fixed_sizes]
                out_sizes = [x.shape[i] if v is None else v for i, v in enumerate(out_sizes)]
            else:
                out_sizes = None
            return resize(x, s, full_scales, out_sizes)

    inputs = (x_name,) + ((sizes_name,) if dynamic_sizes else ())
    return OperationConverterResult(torch_module=OnnxResizeExact(),
                                    onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values))


def _full(values: list[Any], axes: list[int], rank: int, fill: Any) -> list[Any]:
    if len(values) == rank and len(axes) == rank:
        return list(values)
    out = [fill] * rank
    for a, v in zip(axes, values):
        out[a] = v
    return out


def resize(x: Any, s: dict[str, Any], scales: list[float] | None, sizes: list[int] | None) -> Any:
    """ONNX Resize on a torch tensor: F.interpolate where exact, else the ONNX formula."""
    import torch

    rank = x.dim()
    if scales is not None and any(abs(v - 1.0) > 0 for v in scales[:2]):
        raise NotImplementedError("Resize scaling the batch or channel axis")
    if sizes is not None and (sizes[0] != x.shape[0] or sizes[1] != x.shape[1]):
        raise NotImplementedError("Resize to another batch or channel size")
    kwargs = exact_interpolate(s, rank - 2)
    if kwargs is not None:
        if sizes is not None:
            return torch.nn.functional.interpolate(x, size=list(sizes[2:]), **kwargs)
        return torch.nn.functional.interpolate(x, scale_factor=list(scales[2:]), **kwargs)
    out = x
    for axis in range(2, rank):
        in_size = x.shape[axis]
        if sizes is not None:
            out_size, scale = int(sizes[axis]), float(sizes[axis]) / float(in_size)
        else:
            scale = float(scales[axis])
            out_size = int(in_size * scale)
        if out_size == in_size and scale == 1.0:
            continue
        out = _resize_axis(out, axis, in_size, out_size, scale, s)
    return out


def _source_coords(in_size: int, out_size: int, scale: float, ctm: str) -> Any:
    import numpy as np

    d = np.arange(out_size, dtype=np.float64)
    if ctm == "half_pixel":
        return (d + 0.5) / scale - 0.5
    if ctm == "pytorch_half_pixel":
        return (d + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(d)
    if ctm == "align_corners":
        return d * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(d)
    if ctm == "asymmetric":
        return d / scale
    raise NotImplementedError(f"Resize with coordinate_transformation_mode={ctm}")


_ROUND = {"floor": lambda c: np.floor(c), "ceil": lambda c: np.ceil(c),
          "round_prefer_floor": lambda c: np.ceil(c - 0.5), "round_prefer_ceil": lambda c: np.floor(c + 0.5)}


def _resize_axis(x: Any, axis: int, in_size: int, out_size: int, scale: float, s: dict[str, Any]) -> Any:
    """One axis by the ONNX formula: the source indices (and weights) are computed here, from the
    sizes, as constants (a trace keeps them: this path is for sizes fixed at conversion)."""
    import torch

    in_size = int(in_size)
    coords = _source_coords(in_size, out_size, scale, s["ctm"])
    if s["mode"] == "nearest":
        if s["nearest_mode"] not in _ROUND:
            raise NotImplementedError(f"Resize with nearest_mode={s['nearest_mode']}")
        idx = np.clip(_ROUND[s["nearest_mode"]](coords), 0, in_size - 1).astype(np.int64)
        return torch.index_select(x, axis, _ints(idx))
    if s["mode"] == "linear":
        c = np.clip(coords, 0, in_size - 1)
        lo = np.floor(c)
        hi = np.minimum(lo + 1, in_size - 1).astype(np.int64)
        shape = [1] * x.dim()
        shape[axis] = out_size
        w = _floats(c - lo).to(x.dtype).reshape(shape)
        lo_t, hi_t = _ints(lo), _ints(hi)
        return torch.index_select(x, axis, lo_t) * (1 - w) + torch.index_select(x, axis, hi_t) * w
    if s["mode"] == "cubic":
        return _cubic_axis(x, axis, in_size, out_size, coords, s["cubic_a"])
    raise NotImplementedError(f"Resize mode {s['mode']} with coordinate_transformation_mode={s['ctm']}")


def _ints(values: Any) -> Any:
    """Index constants as torch.tensor of a list (torch.export takes those; torch.from_numpy it stops at)."""
    import torch

    return torch.tensor([int(v) for v in np.asarray(values).ravel()], dtype=torch.int64)


def _floats(values: Any) -> Any:
    import torch

    return torch.tensor([float(v) for v in np.asarray(values).ravel()], dtype=torch.float32)


def _keys(t: Any, a: float) -> Any:
    """The cubic convolution kernel ONNX Resize uses (Keys, coefficient ``a``) at distances ``t``."""
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def _cubic_axis(x: Any, axis: int, in_size: int, out_size: int, coords: Any, a: float) -> Any:
    """Four taps per output index at floor(c)-1 .. floor(c)+2 (indices clamped to the edge, as
    ONNX Runtime does with exclude_outside=0), weighted by the Keys kernel."""
    import torch

    base = np.floor(coords)
    frac = coords - base
    shape = [1] * x.dim()
    shape[axis] = out_size
    out = None
    for k in (-1, 0, 1, 2):
        idx = np.clip(base + k, 0, in_size - 1).astype(np.int64)
        w = _floats(_keys(frac - k, a)).to(x.dtype).reshape(shape)
        term = torch.index_select(x, axis, _ints(idx)) * w
        out = term if out is None else out + term
    return out


def register(add: Any) -> None:
    """Register the converter for every Resize version (replacing onnx2torch's)."""
    for version in (10, 11, 13, 18, 19):
        add("Resize", version, convert_resize, replace=True)
