"""The reference runtime's speed machinery computes what the slow, obvious code computes.

* Kernels switch to torch for large float arrays (activations, softmax, gelu, layer_norm, linear,
  matmul): checked here against float64 numpy formulas on arrays large enough to take that path,
  including fp16, non-contiguous, negatively strided and read-only inputs.
* ``values.widen`` caches the fp32 copy of registered fp16 constants (in ``values.CONSTANT_CACHE``,
  within its byte budget) and forgets it when the constant goes.
* The interpreter compiles each block once per loaded model and reuses the plan.
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.special import erf

from interop.runtimes.mil import values
from interop.runtimes.mil.kernels import activation, linalg, normalization

CTX = SimpleNamespace(op=SimpleNamespace(op_type="test"), opset="iOS17")
RNG = np.random.default_rng(0)
BIG = (2, 64, 96)  # 12288 elements: above every torch threshold


def _x(shape=BIG, dtype=np.float32, scale=3.0):
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def _variants(x):
    """The same values as fp32 contiguous, fp16 (exact copy), a transposed view, a reversed
    (negative stride) view and a read-only array; each with the fp64 data it holds."""
    half = x.astype(np.float16)
    readonly = x.copy()
    readonly.flags.writeable = False
    t = np.ascontiguousarray(x.swapaxes(-1, -2)).swapaxes(-1, -2)  # same values, non-contiguous
    rev = np.ascontiguousarray(x[..., ::-1])[..., ::-1]  # same values, negative stride
    return [("fp32", x, x.astype(np.float64)), ("fp16", half, half.astype(np.float64)),
            ("strided", t, x.astype(np.float64)), ("reversed", rev, x.astype(np.float64)),
            ("readonly", readonly, x.astype(np.float64))]


def _close(got, want, rtol=2e-6, atol=2e-6):
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["relu", "relu6", "sigmoid", "silu"])
def test_unary_activations_match_formulas(name):
    formulas = {
        "relu": lambda v: np.maximum(v, 0),
        "relu6": lambda v: np.clip(v, 0, 6),
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "silu": lambda v: v / (1 + np.exp(-v)),
    }
    for label, x, ref in _variants(_x()):
        got = getattr(activation, name)(CTX, x)
        _close(got, formulas[name](ref))


@pytest.mark.parametrize("mode", ["EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"])
def test_gelu_modes_match_formulas(mode):
    formulas = {
        "EXACT": lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))),
        "TANH_APPROXIMATION": lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3))),
        "SIGMOID_APPROXIMATION": lambda v: v / (1 + np.exp(-1.702 * v)),
    }
    for _, x, ref in _variants(_x()):
        _close(activation.gelu(CTX, x, mode), formulas[mode](ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_matches_formula(axis):
    for _, x, ref in _variants(_x()):
        e = np.exp(ref - ref.max(axis=axis, keepdims=True))
        _close(activation.softmax(CTX, x, np.int32(axis)), e / e.sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("axes", [[-1], [1, 2], [0, 1, 2], [1]])
def test_layer_norm_matches_formula(axes):
    x = _x()
    shape = tuple(x.shape[a] for a in sorted(a % 3 for a in axes))
    gamma, beta = _x(shape, scale=1.0), _x(shape, scale=1.0)
    eps = np.float32(1e-3)
    for _, xv, ref in _variants(x):
        red = tuple(sorted(a % 3 for a in axes))
        mean = ref.mean(axis=red, keepdims=True)
        var = ((ref - mean) ** 2).mean(axis=red, keepdims=True)
        bshape = [x.shape[i] if i in red else 1 for i in range(3)]
        want = (ref - mean) / np.sqrt(var + 1e-3) * gamma.reshape(bshape) + beta.reshape(bshape)
        got = normalization.layer_norm(CTX, xv, np.array(axes, np.int32), gamma, beta, eps)
        _close(got, want, rtol=1e-4, atol=1e-4)


def test_linear_and_matmul_match_float64():
    x = _x((3, 40, 128), scale=1.0)
    w, b = _x((96, 128), scale=1.0), _x((96,), scale=1.0)
    for _, xv, ref in _variants(x):
        _close(linalg.linear(CTX, xv, w, b), ref @ w.astype(np.float64).T + b, rtol=1e-4, atol=1e-4)
        _close(linalg.linear(CTX, xv, w.astype(np.float16)), ref @ w.astype(np.float16).astype(np.float64).T,
               rtol=1e-4, atol=1e-4)
    y = _x((3, 96, 128), scale=1.0)
    for _, xv, ref in _variants(x):
        got = linalg.matmul(CTX, xv, y, transpose_x=False, transpose_y=True)
        _close(got, ref @ y.astype(np.float64).swapaxes(-1, -2), rtol=1e-4, atol=1e-4)
    # integers stay exact (and on numpy)
    xi, yi = RNG.integers(-5, 5, (4, 64, 64)).astype(np.int32), RNG.integers(-5, 5, (64, 64)).astype(np.int32)
    assert np.array_equal(linalg.matmul(CTX, xi, yi), xi.astype(np.int64) @ yi)


def test_widen_caches_registered_constants_only(monkeypatch):
    const = _x((64, 64)).astype(np.float16)
    other = const.copy()
    values.register_constant(const)
    first = values.widen(const)
    assert first.dtype == np.float32 and np.array_equal(first, const.astype(np.float32))
    assert values.widen(const) is first  # widened once
    assert values.widen(other) is not values.widen(other)  # not registered: a fresh copy each time
    key = id(const)
    used = values.CONSTANT_CACHE.nbytes
    del const, first
    gc.collect()
    assert key not in values._REGISTERED  # forgotten with the constant
    assert values.CONSTANT_CACHE.nbytes == used - 64 * 64 * 4


def test_widen_cache_respects_its_budget(monkeypatch):
    monkeypatch.setattr(values.CONSTANT_CACHE, "max_bytes", 100)
    const = _x((64, 64)).astype(np.float16)
    values.register_constant(const)
    assert values.widen(const) is not values.widen(const)  # over budget: widened per call
    assert np.array_equal(values.widen(const), const.astype(np.float32))


def test_plans_are_compiled_once_per_loaded_model():
    pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb

    from interop.runtimes import mil
    from tests.mil.harness import save_program

    w = _x((32, 16), scale=0.3)

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 16))])
    def prog(x):
        return mb.relu(x=mb.linear(x=x, weight=w), name="y")

    with tempfile.TemporaryDirectory() as tmp:
        loaded = mil.load_model(save_program(prog, Path(tmp), precision="fp16"))
    x = _x((2, 16), scale=1.0)
    first = loaded.predict({"x": x})["y"]
    plans = dict(loaded._plans["main"])
    assert len(plans) == 1
    again, trace = loaded.predict({"x": x}, intermediate=True)
    assert loaded._plans["main"] == plans  # the same compiled plan object, reused
    np.testing.assert_array_equal(first, again["y"])
    want = np.maximum(x.astype(np.float16).astype(np.float32) @ w.astype(np.float16).astype(np.float32).T, 0)
    np.testing.assert_allclose(first.astype(np.float32), want, rtol=2e-3, atol=2e-3)
    ops = [op for op in loaded.program.functions["main"].operations if op.op_type != "const"]
    assert sorted(trace) == sorted(op.outputs[0].name for op in ops)  # every op's output, no consts
    assert {"linear", "relu"} <= {op.op_type for op in ops}


def _fusion_program(alpha: float):
    from coremltools.converters.mil import Builder as mb

    w = _x((64, 64), scale=0.2)

    @mb.program(input_specs=[mb.TensorSpec(shape=(4, 64))])
    def prog(x):
        a = mb.linear(x=x, weight=w, name="a")
        clipped = mb.clip(x=a, alpha=alpha, beta=0.75, name="clipped")  # fused when alpha is representable
        b = mb.linear(x=clipped, weight=w, name="b")
        r = mb.relu(x=b, name="r")  # b is used twice: not fused
        return mb.add(x=r, y=b, name="y")

    return prog


@pytest.mark.parametrize("alpha", [0.125, 0.1])
def test_clamp_fusion_is_exact_and_only_where_allowed(alpha):
    """A clamp merged into the op before it gives bit-for-bit the outputs of the unmerged run
    (``intermediate=True`` runs every op separately); a producer with another consumer is not
    merged, nor a clamp whose bound the producer's dtype cannot hold."""
    pytest.importorskip("coremltools")
    from interop.runtimes import mil
    from tests.mil.harness import save_program

    with tempfile.TemporaryDirectory() as tmp:
        loaded = mil.load_model(save_program(_fusion_program(alpha), Path(tmp), precision="fp16"))
    # inputs crowd the clip's lower bound, where rounding before or after the clamp could differ
    x = (alpha + RNG.standard_normal((4, 64)) * 0.05).astype(np.float32)
    fused = loaded.predict({"x": x})
    unfused, _ = loaded.predict({"x": x}, intermediate=True)
    (plan,) = loaded._plans["main"].values()
    kinds = [step.op_type for step in plan.fused_steps]
    assert "linear+clip" in kinds  # the fp16 program holds alpha as fp16: representable
    assert "linear+relu" not in kinds
    for name in fused:
        np.testing.assert_array_equal(fused[name], unfused[name])
    # an fp32 bound (iOS17 allows it) that fp16 cannot hold must keep the clamp separate
    from interop.runtimes.mil.fusion import fusable as _fusable

    producer, clamp = next((a, b) for a, b in zip(plan.steps, plan.steps[1:]) if b.op_type == "clip")
    assert _fusable(producer, clamp, plan.outputs)
    saved = clamp.const_args["alpha"]
    try:
        clamp.const_args["alpha"] = np.float32(0.1)
        assert not _fusable(producer, clamp, plan.outputs)
    finally:
        clamp.const_args["alpha"] = saved


def test_outputs_do_not_alias_program_constants():
    """An output computed from constants alone (here the widened fp16 weight, reshaped) is the
    caller's to modify: the next prediction is unchanged."""
    pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    from interop.runtimes import mil
    from tests.mil.harness import save_program

    w = _x((64, 64), scale=1.0).astype(np.float16)

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 64), dtype=types.fp32)])
    def prog(x):
        return mb.relu(x=x, name="r"), mb.reshape(x=mb.cast(x=w, dtype="fp32"), shape=[4096], name="flat")

    with tempfile.TemporaryDirectory() as tmp:
        loaded = mil.load_model(save_program(prog, Path(tmp), precision="fp32"))
    x = _x((2, 64), scale=1.0)
    first = loaded.predict({"x": x})
    first["flat"][:] = 0
    second = loaded.predict({"x": x})
    np.testing.assert_array_equal(second["flat"], w.astype(np.float32).reshape(-1))
