"""Input spec parsing, validation, shape cases and seeded samples."""

import numpy as np
import pytest

from interop.errors import SpecError
from interop.stages.spec import (Case, DynamicAxis, InputSpec, TensorSpec, apply_dynamic, case_shape, cases, make_sample,
                          other_size, parse_dynamic, parse_input, validate)


def test_parse_input_full_form():
    t = parse_input("ids:2x16:int64:0..999")
    assert (t.name, t.shape, t.dtype, t.low, t.high) == ("ids", (2, 16), "int64", 0, 999)


def test_parse_input_defaults_to_float32():
    t = parse_input("x:1x3x224x224")
    assert t.dtype == "float32" and t.shape == (1, 3, 224, 224) and t.low is None


@pytest.mark.parametrize("text, fragment", [
    ("x", "cannot parse"),
    ("x:", "has no shape"),
    ("x:1xAx3", "bad shape"),
    ("x:1x0x3", "dim <= 0"),
    ("x:1x-2", "dim <= 0"),
    ("x:1x3:complex7", "unknown dtype"),
    ("x:1x3:float32:5..1", "reversed range"),
    ("x:1x3:float32:a..b", "bad range"),
    ("1x:1x3", "bad input name"),
])
def test_parse_input_rejects(text, fragment):
    with pytest.raises(SpecError, match=fragment):
        parse_input(text)


def test_parse_dynamic():
    name, d = parse_dynamic("x:0=batch:1..64")
    assert name == "x" and d == DynamicAxis(0, "batch", 1, 64)


@pytest.mark.parametrize("text, fragment", [("x:batch", "cannot parse"), ("x:0=batch:64..1", "reversed"),
                                            ("x:0=batch:0..4", "minimum size")])
def test_parse_dynamic_rejects(text, fragment):
    with pytest.raises(SpecError, match=fragment):
        parse_dynamic(text)


def test_apply_dynamic_checks_axis_range_and_input():
    spec = InputSpec([TensorSpec("x", (2, 3))])
    with pytest.raises(SpecError, match="rank 2"):
        apply_dynamic(spec, "x", DynamicAxis(5, "batch", 1, 4))
    with pytest.raises(SpecError, match="outside the range"):
        apply_dynamic(spec, "x", DynamicAxis(0, "batch", 3, 8))
    with pytest.raises(SpecError, match="no input named"):
        apply_dynamic(spec, "y", DynamicAxis(0, "batch", 1, 8))
    apply_dynamic(spec, "x", DynamicAxis(-2, "batch", 1, 8))
    assert spec.inputs[0].dynamic[0].name == "batch"


def test_shared_dim_must_agree():
    a = TensorSpec("a", (2, 3), dynamic={0: DynamicAxis(0, "batch", 1, 8)})
    b = TensorSpec("b", (4, 3), dynamic={0: DynamicAxis(0, "batch", 1, 8)})
    with pytest.raises(SpecError, match="different sizes"):
        validate(InputSpec([a, b]))


def test_other_size_avoids_example_and_one():
    assert other_size(1, 1, 64) == 3
    assert other_size(4, 1, 64) == 9
    assert other_size(4, 1, 5) == 5
    assert other_size(2, 1, 2) == 1  # only 1 is left
    assert other_size(3, 3, 3) is None


def test_cases_cover_every_named_dim_once():
    spec = InputSpec([TensorSpec("a", (1, 5), dynamic={0: DynamicAxis(0, "batch", 1, 8), 1: DynamicAxis(1, "seq", 1, 32)}),
                      TensorSpec("b", (1, 5), dynamic={0: DynamicAxis(0, "batch", 1, 8)})])
    cs = cases(spec)
    assert [c.name for c in cs] == ["example", "batch=3", "seq=11"]
    assert case_shape(spec.inputs[1], cs[1]) == (3, 5)
    assert case_shape(spec.inputs[0], cs[2]) == (1, 11)


def test_samples_are_seeded_and_respect_ranges():
    spec = InputSpec([TensorSpec("ids", (4, 50), "int64", 0, 9), TensorSpec("x", (3, 7), "float32", 0.0, 10.0),
                      TensorSpec("m", (2,), "bool")])
    a = make_sample(spec, Case("example"), seed=1)
    b = make_sample(spec, Case("example"), seed=1)
    c = make_sample(spec, Case("example"), seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["x"], c["x"])
    assert a["ids"].dtype == np.int64 and a["ids"].min() >= 0 and a["ids"].max() <= 9
    assert a["ids"].max() == 9  # inclusive upper bound is actually drawn
    assert a["x"].min() >= 0 and a["x"].max() < 10 and a["m"].dtype == bool


def test_spec_json_roundtrip():
    spec = InputSpec([TensorSpec("x", (1, 6, 1), "float32", 0.0, 10.0, {0: DynamicAxis(0, "batch", 1, 64)})], ["y"])
    again = InputSpec.from_json(spec.to_json())
    assert again.to_json() == spec.to_json()


def test_malformed_embedded_spec_is_a_spec_error():
    with pytest.raises(SpecError):
        InputSpec.from_json({"inputs": [{"shape": [1]}]})
    with pytest.raises(SpecError):
        InputSpec.from_json([1, 2])
