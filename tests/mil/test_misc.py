"""classify, random_*, scaled_dot_product_attention and state kernels, through saved .mlpackages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coremltools as ct
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from .harness import run_builder as _run_builder

RNG = np.random.default_rng(0)


def run_builder(build, specs, inputs, target=ct.target.iOS18, **kw):
    return list(_run_builder(build, specs, inputs, opset_version=target, **kw).values())


@pytest.mark.parametrize("labels", [["cat", "dog", "fish"], [10, 20, 30]])
def test_torch_classifier_outputs_label_and_probabilities(tmp_path, labels):
    from interop.runtimes import mil

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=-1)).eval()
    x = torch.randn(1, 4)
    mlmodel = ct.convert(torch.jit.trace(model, x), inputs=[ct.TensorType(name="x", shape=x.shape)],
                         convert_to="mlprogram", classifier_config=ct.ClassifierConfig(labels),
                         compute_precision=ct.precision.FLOAT32)
    mlmodel.save(str(tmp_path / "c.mlpackage"))
    out = mil.predict(tmp_path / "c.mlpackage", {"x": x.numpy()})
    probs = model(x).detach().numpy().ravel()
    assert out["classLabel"] == labels[int(np.argmax(probs))]
    assert list(out["classLabel_probs"]) == labels
    np.testing.assert_allclose(list(out["classLabel_probs"].values()), probs, rtol=1e-6)


def test_a_classifier_with_a_dynamic_batch_classifies_every_row(tmp_path):
    from interop.runtimes import mil
    from interop.stages.preprocess import probs_from_dict

    torch.manual_seed(0)
    labels = ["neg", "neu", "pos"]
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=-1)).eval()
    x = torch.randn(5, 4)
    batch = ct.TensorType(name="x", shape=(ct.RangeDim(1, 8, default=1), 4))
    mlmodel = ct.convert(torch.jit.trace(model, x[:1]), inputs=[batch], convert_to="mlprogram",
                         classifier_config=ct.ClassifierConfig(labels), compute_precision=ct.precision.FLOAT32)
    mlmodel.save(str(tmp_path / "c.mlpackage"))
    probs = model(x).detach().numpy()
    out = mil.predict(tmp_path / "c.mlpackage", {"x": x.numpy()})
    assert out["classLabel"] == [labels[i] for i in probs.argmax(-1)]
    np.testing.assert_allclose(probs_from_dict(out["classLabel_probs"], labels), probs, rtol=1e-6)
    one = mil.predict(tmp_path / "c.mlpackage", {"x": x[:1].numpy()})  # one row: a label and floats
    assert one["classLabel"] == labels[int(probs[0].argmax())] and isinstance(one["classLabel_probs"]["pos"], float)


def test_random_ops_have_the_declared_shapes_and_distributions():
    def build(x):
        return (mb.random_uniform(shape=np.array([200, 50], np.int32), low=np.float32(-2), high=np.float32(3)),
                mb.random_normal(shape=np.array([200, 50], np.int32), mean=np.float32(1), stddev=np.float32(2),
                                 seed=7),
                mb.random_bernoulli(shape=np.array([4, 5], np.int32), prob=np.float32(1.0)),
                mb.random_bernoulli(shape=np.array([10000], np.int32), prob=np.float32(0.3)),
                mb.random_categorical(x=x, size=5000, seed=1))

    logits = np.log(np.array([[0.2, 0.8, 0.0001], [0.5, 0.25, 0.25]], np.float32))
    uniform, normal, ones, coin, cat = run_builder(build, [mb.TensorSpec(shape=(2, 3))], {"x": logits})
    assert uniform.shape == normal.shape == (200, 50)
    assert uniform.min() >= -2 and uniform.max() < 3 and abs(uniform.mean() - 0.5) < 0.05
    assert abs(normal.mean() - 1) < 0.1 and abs(normal.std() - 2) < 0.1
    np.testing.assert_array_equal(ones, np.ones((4, 5)))
    assert abs(coin.mean() - 0.3) < 0.02
    assert cat.shape == (2, 5000)
    np.testing.assert_allclose([np.mean(cat[0] == 1), np.mean(cat[1] == 0)], [0.8, 0.5], atol=0.03)


def test_random_ops_are_repeatable():
    def build(x):
        return mb.add(x=x, y=mb.random_normal(shape=np.array([3], np.int32)))

    feeds = {"x": np.zeros(3, np.float32)}
    first = run_builder(build, [mb.TensorSpec(shape=(3,))], feeds)[0]
    np.testing.assert_array_equal(first, run_builder(build, [mb.TensorSpec(shape=(3,))], feeds)[0])


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_scaled_dot_product_attention_matches_torch(mask_kind):
    q, k, v = (RNG.standard_normal((2, 3, L, 8), dtype=np.float32) for L in (4, 5, 5))
    mask = {"none": None, "bool": RNG.random((4, 5)) > 0.3,
            "float": RNG.standard_normal((4, 5), dtype=np.float32)}[mask_kind]
    if mask_kind == "bool":
        mask[:, 0] = True

    def build(q, k, v):
        return mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=mask)

    got = run_builder(build, [mb.TensorSpec(shape=t.shape) for t in (q, k, v)], {"q": q, "k": k, "v": v})[0]
    t_mask = None if mask is None else torch.from_numpy(mask)
    expected = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), attn_mask=t_mask)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_scaled_dot_product_attention_fp16():
    q, k, v = (RNG.standard_normal((1, 4, 8), dtype=np.float32) for _ in range(3))

    def build(q, k, v):
        return mb.scaled_dot_product_attention(query=q, key=k, value=v)

    got = run_builder(build, [mb.TensorSpec(shape=t.shape) for t in (q, k, v)], {"q": q, "k": k, "v": v},
                      precision="fp16")[0]
    expected = torch.nn.functional.scaled_dot_product_attention(*(torch.from_numpy(t) for t in (q, k, v)))
    np.testing.assert_allclose(got, expected.numpy(), atol=3e-3)


def test_state_starts_at_zero_and_is_updated_in_place():
    def build(state, value):
        first = mb.read_state(input=state)
        updated = mb.coreml_update_state(state=state, value=mb.add(x=first, y=value))
        return first, mb.coreml_update_state(state=state, value=mb.add(x=updated, y=value))

    value = np.array([1.5, -2.0], np.float16)
    specs = [mb.StateTensorSpec(shape=(2,), dtype=types.fp16), mb.TensorSpec(shape=(2,), dtype=types.fp16)]
    first, last = run_builder(build, specs, {"value": value}, precision="fp16")
    np.testing.assert_array_equal(first, [0, 0])
    np.testing.assert_array_equal(last, 2 * value)


def _accumulator(tmp_path):
    """A saved iOS18 program: ``acc += value``; returns the new content."""
    from interop.runtimes import mil

    from .harness import save_program

    @mb.program(input_specs=[mb.StateTensorSpec(shape=(2,), dtype=types.fp16),
                             mb.TensorSpec(shape=(2,), dtype=types.fp16)], opset_version=ct.target.iOS18)
    def prog(acc, value):
        return mb.coreml_update_state(state=acc, value=mb.add(x=mb.read_state(input=acc), y=value))

    return mil.load_model(save_program(prog, tmp_path, precision="fp16", target=ct.target.iOS18))


def test_state_persists_across_predictions_and_is_readable(tmp_path):
    model = _accumulator(tmp_path)
    state = model.make_state()
    assert state.names() == ["acc"] and model.is_stateful()
    value = np.array([1.5, -2.0], np.float16)
    for step in range(1, 4):
        (out,) = model.predict({"value": value}, state=state).values()
        np.testing.assert_array_equal(out, step * value)
        np.testing.assert_array_equal(state.read_state("acc"), step * value)
    state.write_state("acc", np.zeros(2))
    (out,) = model.predict({"value": value}, state=state).values()
    np.testing.assert_array_equal(out, value)
    (fresh,) = model.predict({"value": value}).values()  # no state: starts at zero, updates dropped
    np.testing.assert_array_equal(fresh, value)
    np.testing.assert_array_equal(state.read_state("acc"), value)
    other = model.make_state()  # states are independent
    np.testing.assert_array_equal(other.read_state("acc"), [0, 0])
    with pytest.raises(ValueError):
        state.write_state("acc", np.zeros(3))
