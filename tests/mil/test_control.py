"""Control-flow kernels (cond, while_loop, select, tensor lists) through saved .mlpackages."""

from __future__ import annotations

import numpy as np
import pytest

import coremltools as ct
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from .harness import run_builder as _run_builder


def run_builder(build, specs, inputs, target=ct.target.iOS17, **kw):
    return list(_run_builder(build, specs, inputs, opset_version=target, **kw).values())


def _spec(shape, dtype=types.fp32):
    return mb.TensorSpec(shape=shape, dtype=dtype)


@pytest.mark.parametrize("flag", [True, False])
def test_cond_runs_the_branch_the_predicate_picks(flag):
    def build(a, b):
        def true_fn():
            return mb.add(x=b, y=np.float32(1)), mb.mul(x=b, y=np.float32(2))

        def false_fn():
            return mb.add(x=b, y=np.float32(-1)), mb.mul(x=b, y=np.float32(-2))

        return mb.cond(pred=mb.squeeze(x=a), _true_fn=true_fn, _false_fn=false_fn)

    b = np.array([3.0], np.float32)
    got = run_builder(build, [_spec((1,), types.bool), _spec((1,))], {"a": np.array([flag]), "b": b})
    sign = 1 if flag else -1
    np.testing.assert_array_equal(got[0], b + sign)
    np.testing.assert_array_equal(got[1], b * 2 * sign)


def test_while_loop_computes_a_power():
    def build(a, b):
        def body(res, bx):
            return mb.mul(x=res, y=a), mb.add(x=bx, y=np.float32(1))

        def cond(res, bx):
            return mb.squeeze(x=mb.less(x=bx, y=b))

        res, _ = mb.while_loop(_cond=cond, _body=body, loop_vars=([1.0], [0.0]))
        return res

    got = run_builder(build, [_spec((1,)), _spec((1,))], {"a": np.array([2.0], np.float32),
                                                         "b": np.array([5.0], np.float32)})
    np.testing.assert_array_equal(got[0], [32.0])


def test_nested_while_loops_see_outer_scope():
    def build(x, y):
        two = mb.const(val=[2.0], name="const_two")
        one = mb.const(val=[1.0], name="const_one")

        def cond2(i):
            return mb.squeeze(x=mb.less(x=mb.mul(x=two, y=i), y=mb.add(x=i, y=two)))

        def body2(i):
            return mb.add(x=i, y=one)

        def cond1(i, j):
            return mb.squeeze(x=mb.less(x=i, y=j))

        def body1(i, j):
            new_i = mb.while_loop(_cond=cond2, _body=body2, loop_vars=(i,))
            return mb.add(x=new_i, y=two), j

        return mb.while_loop(_cond=cond1, _body=body1, loop_vars=(x, y))

    got = run_builder(build, [_spec((1,)), _spec((1,))], {"x": np.array([-5.0], np.float32),
                                                         "y": np.array([10.0], np.float32)})
    # i: -5 -> inner loop counts to 2 -> +2 -> 4 -> (inner: no-op) ... -> 10 (coremltools' expectation)
    np.testing.assert_array_equal(got[0], [10.0])
    np.testing.assert_array_equal(got[1], [10.0])


def test_select_broadcasts_in_fp16():
    cond = np.array([[True], [False]])
    a = np.arange(6, dtype=np.float32).reshape(2, 3)

    def build(c, a):
        return mb.select(cond=c, a=a, b=np.float32(-1.5))

    got = run_builder(build, [_spec((2, 1), types.bool), _spec((2, 3))], {"c": cond, "a": a}, precision="fp16")
    np.testing.assert_array_equal(got[0], np.where(cond, a, -1.5))


def test_tensor_list_ops_follow_coremltools():
    def build(a, b):
        ls = mb.make_list(init_length=2, elem_shape=(2,))
        init_t = mb.list_read(ls=ls, index=0)
        ls = mb.list_write(ls=ls, index=0, value=a)
        ls = mb.list_write(ls=ls, index=4, value=b)  # past the end: the list grows
        ls = mb.list_scatter(ls=ls, indices=[2, 1], value=np.array([[-1, -2], [-4, -5]], np.float32))
        return init_t, mb.list_read(ls=ls, index=0), mb.list_gather(ls=ls, indices=[4, 2, 3]), \
            mb.list_length(ls=ls)

    got = run_builder(build, [_spec((2,)), _spec((2,))], {"a": np.array([1, 3], np.float32),
                                                         "b": np.array([2, 4], np.float32)})
    np.testing.assert_array_equal(got[0], [0, 0])
    np.testing.assert_array_equal(got[1], [1, 3])
    np.testing.assert_array_equal(got[2], [[2, 4], [-1, -2], [0, 0]])
    assert int(got[3]) == 5


def test_tensor_list_filled_in_a_loop():
    def build(num_iters, update):
        def body(i, num_iters, ls, update):
            new_elem = mb.mul(x=update, y=mb.cast(x=i, dtype="fp32"))
            return mb.add(x=i, y=1), num_iters, mb.list_write(ls=ls, index=i, value=new_elem), update

        def cond(i, num_iters, ls, update):
            return mb.less(x=mb.cast(x=i, dtype="fp32"), y=mb.squeeze(x=num_iters))

        ls = mb.make_list(init_length=1, elem_shape=(2,))
        _, _, final, _ = mb.while_loop(_cond=cond, _body=body, loop_vars=(0, num_iters, ls, update))
        return mb.list_gather(ls=final, indices=mb.range_1d(start=0, end=mb.list_length(ls=final), step=1))

    update = np.array([1.0, 2.0], np.float32)
    got = run_builder(build, [_spec((1,)), _spec((2,))], {"num_iters": np.array([3], np.float32), "update": update})
    np.testing.assert_array_equal(got[0], np.stack([update * i for i in range(3)]))
