"""Elementwise binary/unary kernels of the Core ML reference runtime, run from saved packages
and checked against torch (or numpy where torch has no counterpart)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from tests.mil.harness import run_ios17 as _run  # noqa: E402

IOS17 = ct.target.iOS17


def _spec(shape, dtype=types.fp32):
    return mb.TensorSpec(shape=shape, dtype=dtype)


def _t(a):
    return torch.from_numpy(np.asarray(a))


# --- binary ----------------------------------------------------------------------------------

BINARY_FLOAT = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "real_div": torch.div,
    "floor_div": torch.floor_divide,
    "mod": torch.remainder,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
}
COMPARE = {
    "equal": torch.eq,
    "not_equal": torch.ne,
    "less": torch.lt,
    "less_equal": torch.le,
    "greater": torch.gt,
    "greater_equal": torch.ge,
}


def _binary_inputs():
    rng = np.random.default_rng(0)
    x = rng.uniform(-5, 5, size=(3, 4)).astype(np.float32)
    y = rng.choice([-2.5, -1.0, 1.5, 3.0], size=(1, 4)).astype(np.float32)  # broadcast, no zeros
    x[0, :2] = y[0, :2]  # some equal pairs for the comparisons
    return x, y


def test_binary_float_ops_match_torch_with_broadcasting():
    x, y = _binary_inputs()

    def build(x, y):
        outs = [getattr(mb, name)(x=x, y=y, name=name) for name in BINARY_FLOAT]
        outs.append(mb.pow(x=mb.abs(x=x), y=y, name="pow"))
        outs += [mb.cast(x=getattr(mb, n)(x=x, y=y), dtype="int32", name=n) for n in COMPARE]
        return tuple(outs)

    out = _run(build, [_spec(x.shape), _spec(y.shape)], {"x": x, "y": y})
    for name, fn in BINARY_FLOAT.items():
        np.testing.assert_allclose(out[name], fn(_t(x), _t(y)).numpy(), rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(out["pow"], np.abs(x) ** y, rtol=1e-6)
    for name, fn in COMPARE.items():
        np.testing.assert_array_equal(out[name], fn(_t(x), _t(y)).numpy().astype(np.int32), err_msg=name)


def test_binary_int32_semantics():
    """int32 real_div truncates toward zero; floor_div and mod round toward -inf (Python)."""
    x = np.array([7, -7, 7, -7, 2, 3], dtype=np.int32)
    y = np.array([2, 2, -2, -2, 3, -1], dtype=np.int32)

    def build(x, y):
        return (
            mb.real_div(x=x, y=y, name="real_div"),
            mb.floor_div(x=x, y=y, name="floor_div"),
            mb.mod(x=x, y=y, name="mod"),
            mb.pow(x=x, y=mb.abs(x=y), name="pow"),
            mb.mul(x=x, y=y, name="mul"),
        )

    out = _run(build, [_spec(x.shape, types.int32), _spec(y.shape, types.int32)], {"x": x, "y": y})
    np.testing.assert_array_equal(out["real_div"], [3, -3, -3, 3, 0, -3])
    np.testing.assert_array_equal(out["floor_div"], torch.floor_divide(_t(x), _t(y)).numpy())
    np.testing.assert_array_equal(out["mod"], torch.remainder(_t(x), _t(y)).numpy())
    np.testing.assert_array_equal(out["pow"], x ** np.abs(y))
    np.testing.assert_array_equal(out["mul"], x * y)
    assert out["real_div"].dtype == np.int32


def test_logical_ops():
    x, y = _binary_inputs()

    def build(x, y):
        a, b = mb.greater(x=x, y=0.0), mb.less(x=y, y=0.0)
        outs = [mb.logical_and(x=a, y=b), mb.logical_or(x=a, y=b), mb.logical_xor(x=a, y=b), mb.logical_not(x=a)]
        return tuple(mb.cast(x=o, dtype="int32", name=n) for o, n in zip(outs, ["and", "or", "xor", "not"]))

    out = _run(build, [_spec(x.shape), _spec(y.shape)], {"x": x, "y": y})
    a, b = x > 0, y < 0
    np.testing.assert_array_equal(out["and"], a & b)
    np.testing.assert_array_equal(out["or"], a | b)
    np.testing.assert_array_equal(out["xor"], a ^ b)
    np.testing.assert_array_equal(out["not"], ~a)


# --- unary -----------------------------------------------------------------------------------

UNARY_ANY = {  # defined on all reals (input `x`)
    "abs": torch.abs, "atan": torch.atan, "ceil": torch.ceil, "cos": torch.cos, "cosh": torch.cosh,
    "erf": torch.erf, "exp": torch.exp, "exp2": torch.exp2, "floor": torch.floor, "round": torch.round,
    "sign": torch.sign, "sin": torch.sin, "sinh": torch.sinh, "square": torch.square, "tan": torch.tan,
    "tanh": torch.tanh,
}
UNARY_UNIT = {"acos": torch.acos, "asin": torch.asin, "atanh": torch.atanh}  # on (-1, 1) (input `u`)
UNARY_POS = {"sqrt": torch.sqrt}  # on (0, inf) (input `p`)


def _unary_inputs():
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, size=(2, 8)).astype(np.float32)
    x[0, :6] = [0.5, 1.5, 2.5, -0.5, -2.5, 0.0]  # round: halves go to even
    u = rng.uniform(-0.95, 0.95, size=(2, 8)).astype(np.float32)
    p = rng.uniform(0.1, 10, size=(2, 8)).astype(np.float32)
    return {"x": x, "u": u, "p": p}


def _unary_program(x, u, p):
    outs = [getattr(mb, n)(x=x, name=n) for n in UNARY_ANY]
    outs += [getattr(mb, n)(x=u, name=n) for n in UNARY_UNIT]
    outs += [getattr(mb, n)(x=p, name=n) for n in UNARY_POS]
    outs += [
        mb.inverse(x=p, name="inverse"),
        mb.log(x=p, name="log"),
        mb.rsqrt(x=p, name="rsqrt"),
        mb.clip(x=x, alpha=-1.0, beta=2.0, name="clip"),
        mb.threshold(x=x, alpha=0.5, name="threshold"),
    ]
    return tuple(outs)


def _unary_expected(inputs):
    x, u, p = (_t(inputs[k]).double() for k in "xup")
    expected = {n: f(x) for n, f in UNARY_ANY.items()}
    expected.update({n: f(u) for n, f in UNARY_UNIT.items()})
    expected.update({n: f(p) for n, f in UNARY_POS.items()})
    expected.update(
        inverse=1 / (p + 1e-4), log=torch.log(p + 1e-45), rsqrt=torch.rsqrt(p + 1e-12),
        clip=torch.clamp(x, -1, 2), threshold=torch.clamp(x, min=0.5),
    )
    return {k: v.numpy() for k, v in expected.items()}


def test_unary_ops_match_torch():
    inputs = _unary_inputs()
    out = _run(_unary_program, [_spec((2, 8)) for _ in range(3)], inputs)
    for name, want in _unary_expected(inputs).items():
        np.testing.assert_allclose(out[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(out["round"][0, :6], [0, 2, 2, -0, -2, 0])


def test_unary_ops_fp16_are_rounded_to_half_precision():
    inputs = _unary_inputs()
    specs = [_spec((2, 8)) for _ in range(3)]
    out, trace = _run(_unary_program, specs, inputs, precision="fp16", intermediate=True)
    assert trace["exp_cast_fp16"].dtype == np.float16
    halved = {k: v.astype(np.float16).astype(np.float32) for k, v in inputs.items()}  # inputs are cast to fp16
    for name, want in _unary_expected(halved).items():
        np.testing.assert_allclose(out[name], want, rtol=2e-3, atol=2e-3, err_msg=name)


@pytest.mark.parametrize("x_dtype, eps_dtype", [(np.float32, np.float16), (np.float16, np.float32)])
def test_epsilon_inputs(x_dtype, eps_dtype):
    """iOS17 lets ``epsilon`` of inverse/log/rsqrt have another dtype than ``x``."""
    x = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], dtype=x_dtype)
    eps = eps_dtype(0.1)

    def build(x):
        return (
            mb.inverse(x=x, epsilon=eps, name="inverse"),
            mb.log(x=x, epsilon=eps, name="log"),
            mb.rsqrt(x=x, epsilon=eps, name="rsqrt"),
        )

    out = _run(build, [_spec(x.shape, types.numpy_type_to_builtin_type(x_dtype))], {"x": x})
    xe = x.astype(np.float64) + float(np.float16(0.1))  # the half-precision operand rounds epsilon
    tol = dict(rtol=2e-3, atol=2e-3) if x_dtype == np.float16 else dict(rtol=1e-6)
    np.testing.assert_allclose(out["inverse"], 1 / xe, **tol)
    np.testing.assert_allclose(out["log"], np.log(xe), **tol)
    np.testing.assert_allclose(out["rsqrt"], 1 / np.sqrt(xe), **tol)


# --- cast ------------------------------------------------------------------------------------


def test_cast_float_to_int_truncates_and_saturates():
    x = np.array([-1.7, -0.5, 0.0, 0.6, 2.5, 300.0, -300.0, 70000.0], dtype=np.float32)

    def build(x):
        ints = ("int32", "int8", "uint8", "int16", "uint16")
        as_int = tuple(mb.cast(x=mb.cast(x=x, dtype=d), dtype="int32", name="to_" + d) for d in ints)
        return as_int + (mb.cast(x=mb.cast(x=x, dtype="bool"), dtype="fp32", name="to_bool"),)

    out = _run(build, [_spec(x.shape)], {"x": x})
    np.testing.assert_array_equal(out["to_int32"], [-1, 0, 0, 0, 2, 300, -300, 70000])
    np.testing.assert_array_equal(out["to_int8"], [-1, 0, 0, 0, 2, 127, -128, 127])
    np.testing.assert_array_equal(out["to_uint8"], [0, 0, 0, 0, 2, 255, 0, 255])
    np.testing.assert_array_equal(out["to_int16"], [-1, 0, 0, 0, 2, 300, -300, 32767])
    np.testing.assert_array_equal(out["to_uint16"], [0, 0, 0, 0, 2, 300, 0, 65535])
    np.testing.assert_array_equal(out["to_bool"], x != 0)


def test_cast_between_float_precisions_and_from_int():
    x = np.array([[1, 2, 3], [4, 5, 2049]], dtype=np.int32)

    def build(x):
        return (
            mb.cast(x=x, dtype="fp16", name="to_fp16"),
            mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32", name="roundtrip"),
            mb.cast(x=x, dtype="fp32", name="to_fp32"),
        )

    out = _run(build, [_spec(x.shape, types.int32)], {"x": x})
    assert out["to_fp16"].dtype == np.float16
    np.testing.assert_array_equal(out["roundtrip"], x.astype(np.float16).astype(np.float32))  # 2049 -> 2048
    np.testing.assert_array_equal(out["to_fp32"], x.astype(np.float32))
