"""Image resizing kernels of the Core ML reference runtime, run from saved packages and checked
against torch or the documented sampling grids / coremltools' own op-test values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402

from tests.mil.harness import run_builder  # noqa: E402

IOS16, IOS17 = ct.target.iOS16, ct.target.iOS17
RNG = np.random.default_rng(0)
IMAGE = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)


def _run(build, arrays: dict, opset=IOS17, **kw):
    specs = [mb.TensorSpec(shape=a.shape) for a in arrays.values()]
    return run_builder(build, specs, arrays, opset_version=opset, **kw)


def test_upsample_and_resize_bilinear_match_torch_and_documented_grids():
    x = RNG.standard_normal((1, 2, 5, 7)).astype(np.float32)
    ramp = np.array([0, 1], dtype=np.float32).reshape(1, 1, 1, 2)

    def build(x, ramp):
        outs = [
            mb.upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=3, align_corners=True, name="ac"),
            mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=0.5, align_corners=False,
                                 name="half_pixel"),
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=3, name="nearest"),
        ]
        modes = ["STRICT_ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS"]
        outs += [mb.resize_bilinear(x=ramp, target_size_height=1, target_size_width=5, sampling_mode=m, name=m)
                 for m in modes]
        return tuple(outs)

    out = _run(build, {"x": x, "ramp": ramp})
    t = torch.from_numpy(x)
    ac = F.interpolate(t, size=(10, 21), mode="bilinear", align_corners=True).numpy()
    np.testing.assert_allclose(out["ac"], ac, rtol=1e-5, atol=1e-5)
    half = F.interpolate(t, size=(10, 3), mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(out["half_pixel"], half, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["nearest"], F.interpolate(t, scale_factor=(2, 3), mode="nearest").numpy())
    grids = {  # resize_bilinear's docstring, Xin = 2, Xout = 5
        "STRICT_ALIGN_CORNERS": [0, 0.25, 0.5, 0.75, 1],
        "DEFAULT": [0, 0.4, 0.8, 1, 1],
        "OFFSET_CORNERS": [0.1, 0.3, 0.5, 0.7, 0.9],
        "UNALIGN_CORNERS": [0, 0.1, 0.5, 0.9, 1],
    }
    for mode, grid in grids.items():
        np.testing.assert_allclose(out[mode].ravel(), grid, atol=1e-6, err_msg=mode)


def test_upsample_bilinear_ios16_half_pixel_centers_false():
    x = np.array([1, 2], dtype=np.float32).reshape(1, 1, 1, 2)
    out = _run(lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=3,
                                              align_corners=False, half_pixel_centers=False, name="y"),
               {"x": x}, opset=IOS16)
    np.testing.assert_allclose(out["y"][0, 0, 0], [1, 4 / 3, 5 / 3, 2, 2, 2], rtol=1e-6)


def test_nearest_resizes_crop_and_ios17_resize():
    x = np.array([1.5, -2.5, 3.5], dtype=np.float32).reshape(1, 1, 1, 3)
    col = np.array([-6.0, 9.0], dtype=np.float32).reshape(1, 1, 2, 1)

    def build(x, col, image):
        return (
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=2.0, scale_factor_width=1.12, name="frac"),
            mb.resize_nearest_neighbor(x=col, target_size_height=5, target_size_width=2, name="rnn"),
            mb.resize(x=col, shape=[3, 2], resized_dims=np.uint32(2), interpolation_mode="NEAREST_NEIGHBOR",
                      name="resize_nn"),
            mb.resize(x=col, shape=[1, 4, 0], resized_dims=np.uint32(2), interpolation_mode="LINEAR",
                      sampling_mode="ALIGN_CORNERS", name="resize_lin"),
            mb.crop(x=image, crop_height=[0, 1], crop_width=[1, 1], name="crop"),
        )

    out = _run(build, {"x": x, "col": col, "image": IMAGE})
    np.testing.assert_array_equal(out["frac"], np.repeat(x, 2, axis=2))  # in/out ratio, not 1/scale
    np.testing.assert_array_equal(out["rnn"][0, 0, :, 0], [-6, -6, -6, 9, 9])
    np.testing.assert_array_equal(out["resize_nn"][0, 0], [[-6, -6], [9, 9], [9, 9]])
    np.testing.assert_allclose(out["resize_lin"][0, 0, :, 0], [-6, -1, 4, 9], rtol=1e-6)
    np.testing.assert_array_equal(out["crop"], IMAGE[:, :, 0:3, 1:3])


def test_crop_resize_ios17_boxes_and_ios16_roi():
    """Expected values from coremltools' iOS16/iOS17 test_image_resizing.py."""
    boxes = np.array([[0.1, 0.3, 1.3, 1.0], [0.5, 1.8, 1.0, 0.3], [0.0, 0.4, 0.6, 0.7]], dtype=np.float32)
    expected = np.array([3.1, 5.2, 10, 10, 10, 7.9, 10, 13.9, 2.2, 3.1, 9.4, 10.3], dtype=np.float32)

    def build17(image):
        return mb.crop_resize(x=image, boxes=boxes, box_indices=np.zeros(3, dtype=np.int32), target_height=2,
                              target_width=2, normalized_coordinates=True, sampling_mode="ALIGN_CORNERS",
                              pad_value=10.0, name="y")

    out = _run(build17, {"image": IMAGE})
    np.testing.assert_allclose(out["y"], expected.reshape(3, 1, 2, 2), rtol=1e-5)

    roi = np.array([[1, 1, 2, 2]], dtype=np.float32).reshape(1, 1, 4, 1, 1)

    def build16(image):
        return (
            mb.crop_resize(x=image, roi=roi, target_height=4, target_width=4, sampling_mode="ALIGN_CORNERS",
                           name="grid"),
            mb.crop_resize(x=image, roi=roi, target_height=1, target_width=1, sampling_mode="ALIGN_CORNERS",
                           name="center"),
        )

    out = _run(build16, {"image": IMAGE}, opset=IOS16)
    grid = 6 + np.arange(4)[:, None] * 4 / 3 + np.arange(4)[None, :] / 3
    np.testing.assert_allclose(out["grid"].reshape(4, 4), grid, rtol=1e-5)
    np.testing.assert_allclose(out["center"].ravel(), [8.5], rtol=1e-6)


def test_resample_and_affine_match_torch_grid_sample():
    x = RNG.standard_normal((2, 3, 5, 6)).astype(np.float32)
    coords = RNG.uniform(-1.6, 1.6, size=(2, 4, 7, 2)).astype(np.float32)
    theta = RNG.uniform(-1.0, 1.0, size=(2, 6)).astype(np.float32)
    cases = {  # name: (sampling, padding, align_corners, torch mode, torch padding)
        "bilinear_zeros": ("bilinear", "constant", False, "bilinear", "zeros"),
        "bilinear_border": ("bilinear", "border", True, "bilinear", "border"),
        "bilinear_reflection": ("bilinear", "reflection", True, "bilinear", "reflection"),
        "nearest_symmetric": ("nearest", "symmetric", False, "nearest", "reflection"),
    }

    def build(x, coords, theta):
        outs = [mb.resample(x=x, coordinates=coords, sampling_mode=s, padding_mode=p, padding_value=0.0,
                            coordinates_mode="normalized_minus_one_to_one", align_corners=a, name=name)
                for name, (s, p, a, _, _) in cases.items()]
        outs.append(mb.affine(x=x, transform_matrix=theta, output_height=4, output_width=5, sampling_mode="bilinear",
                              padding_mode="constant", padding_value=0.0,
                              coordinates_mode="normalized_minus_one_to_one", align_corners=True, name="affine"))
        return tuple(outs)

    out = _run(build, {"x": x, "coords": coords, "theta": theta})
    tx, tc = torch.from_numpy(x), torch.from_numpy(coords)
    for name, (_, _, align, mode, padding) in cases.items():
        ref = F.grid_sample(tx, tc, mode=mode, padding_mode=padding, align_corners=align).numpy()
        np.testing.assert_allclose(out[name], ref, rtol=1e-5, atol=1e-5, err_msg=name)
    grid = F.affine_grid(torch.from_numpy(theta).reshape(2, 2, 3), [2, 3, 4, 5], align_corners=True)
    ref = F.grid_sample(tx, grid, mode="bilinear", padding_mode="zeros", align_corners=True).numpy()
    np.testing.assert_allclose(out["affine"], ref, rtol=1e-5, atol=1e-5)


def test_resize_bilinear_fp16():
    x = RNG.uniform(0, 10, size=(1, 2, 6, 6)).astype(np.float32)
    out = _run(lambda x: mb.resize_bilinear(x=x, target_size_height=9, target_size_width=4,
                                            sampling_mode="UNALIGN_CORNERS", name="y"), {"x": x}, precision="fp16")
    x16 = torch.from_numpy(x.astype(np.float16).astype(np.float32))
    ref = F.interpolate(x16, size=(9, 4), mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(out["y"], ref, rtol=5e-3, atol=1e-2)
