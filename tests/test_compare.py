"""Every metric against hand-computed values, and every tolerance rule."""

import math

import numpy as np
import pytest

from interop.compare import compare_output, metrics, parse_tolerance, tolerance_for, topk_agreement
from interop.errors import SpecError

IDENT = dict(target="onnx", runtime="onnxruntime", case="example", output="y")


def test_metrics_hand_computed():
    ref = np.array([3.0, 4.0])
    got = np.array([3.0, 5.0])
    m = metrics(ref, got)
    assert m["max_abs"] == 1.0
    assert m["rel_l2"] == pytest.approx(1 / 5)  # ||(0,1)|| / ||(3,4)||
    assert m["cosine"] == pytest.approx((9 + 20) / (5 * math.sqrt(34)))
    assert m["psnr_db"] == pytest.approx(20 * math.log10(4) - 10 * math.log10(0.5))  # mse = 1/2, peak 4
    assert m["max_rel"] == pytest.approx(1 / 4)


def test_identical_outputs():
    m = metrics(np.ones(3), np.ones(3))
    assert m["max_abs"] == 0 and m["rel_l2"] == 0 and m["cosine"] == pytest.approx(1) and m["psnr_db"] == math.inf


def test_topk_hand_computed():
    ref = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    got = np.array([[0.1, 0.9, 0.0], [0.1, 0.8, 0.1]])
    assert topk_agreement(ref, got, 1) == 0.5
    assert topk_agreement(ref, got, 2) == 1.0
    assert topk_agreement(np.zeros(3), np.zeros(3), 1) is None  # not classifier-like


def test_fp32_tolerance_passes_and_fails():
    ref = np.linspace(-1, 1, 100).astype(np.float32)
    tol = tolerance_for("fp32", "y")
    assert compare_output(ref, ref + 1e-7, tol, **IDENT).passed
    bad = compare_output(ref, ref + 1e-3, tol, **IDENT)
    assert not bad.passed and "rel_l2" in bad.note


def test_single_outlier_fails_max_rel_even_if_rel_l2_small():
    ref = np.ones(100_000, np.float32)
    got = ref.copy()
    got[0] += 0.01  # rel_l2 ~ 3e-5 (fine) but one element is 1% off
    d = compare_output(ref, got, tolerance_for("fp32", "y"), **IDENT)
    assert d.rel_l2 < 1e-4 and not d.passed


def test_fp16_tolerance_is_wider_but_bounded():
    ref = np.linspace(-1, 1, 100)
    assert compare_output(ref, ref * (1 + 1e-3), tolerance_for("fp16", "y"), **IDENT).passed
    assert not compare_output(ref, ref * 1.1, tolerance_for("fp16", "y"), **IDENT).passed


def test_nan_and_inf_fail():
    ref = np.ones(4)
    got = np.array([1, 1, np.nan, 1.0])
    d = compare_output(ref, got, tolerance_for("fp16", "y"), **IDENT)
    assert not d.passed and "NaN" in d.note
    assert not compare_output(ref, np.array([1, 1, np.inf, 1.0]), tolerance_for("fp16", "y"), **IDENT).passed


def test_shape_mismatch_fails():
    d = compare_output(np.ones((2, 3)), np.ones((1, 3)), tolerance_for("fp32", "y"), **IDENT)
    assert not d.passed and "shape" in d.note


def test_degenerate_reference_is_flagged():
    ref = np.full(10, 1e-28)
    d = compare_output(ref, ref, tolerance_for("fp32", "y"), **IDENT)
    assert d.degenerate and "not evidence" in d.note
    assert not compare_output(np.linspace(0, 1, 10), np.linspace(0, 1, 10), tolerance_for("fp32", "y"), **IDENT).degenerate


def test_tolerance_override_is_recorded():
    name, values = parse_tolerance("logits:rel_l2=1e-3")
    tol = tolerance_for("fp32", "logits", {name: values})
    assert tol.rel_l2 == 1e-3 and tol.source == "user override"
    assert tolerance_for("fp32", "other", {name: values}).source == "default"


@pytest.mark.parametrize("text", ["logits", "logits:atol=1", "logits:rel_l2=abc", ":rel_l2=1"])
def test_bad_tolerance_rejected(text):
    with pytest.raises(SpecError):
        parse_tolerance(text)
