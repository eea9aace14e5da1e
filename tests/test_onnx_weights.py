"""The ONNX target holds models without their weights (interop/targets/onnx/weights.py): every
rule pinned against what the tools do with the weights in memory -- the same exported model as
torch's own export, the same file as onnx.save, the same dim names from shape inference, the
same onnxsim result, the same numerics in ONNX Runtime."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from interop import BuildConfig
from interop.support.quiet import Noise
from interop.targets.onnx import weights as onnx_weights
from interop.targets.onnx.target import export_once, name_dims, simplify_stored
from tests import zoo

# --- helpers -------------------------------------------------------------------------------------


def canonical(model: Any) -> dict[str, Any]:
    """Everything of a model that means something, with each initializer's values (however it is
    stored) and with initializers keyed by name (their order means nothing)."""
    model = _with_data(model)
    inits = {}
    for t in model.graph.initializer:
        value = numpy_helper.to_array(t)
        inits[t.name] = (t.data_type, tuple(t.dims), value.tobytes())
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    del rest.graph.initializer[:]
    return {"model": rest.SerializeToString(deterministic=True), "initializers": inits}


def _with_data(model: Any, base: Path | None = None) -> Any:
    if base is None or not onnx_weights.externals(model):
        return model
    full = onnx.ModelProto()
    full.CopyFrom(model)
    onnx.external_data_helper.load_external_data_for_model(full, str(base))
    return full


def prepared(name: str) -> Any:
    """(spec, Prepared) of a zoo model, with a fresh trace (torch names nodes by module scope only
    on the first export of a trace)."""
    from interop.sources.torch_files import load_source
    from interop.stages.prepare import prepare
    from interop.stages.resolve import resolve_spec

    if name == "tied":
        config = BuildConfig(model=f"{__name__}:tied_model", inputs=["ids:2x5:int64:0..299"],
                             dynamic=["ids:0=batch:1..4", "ids:1=seq:2..8"], allow_trace_warnings=True, num_samples=1)
    elif name == "upsample":
        config = BuildConfig(model=f"{__name__}:upsample_model", inputs=["x:2x3x4x4"], dynamic=["x:0=batch:1..4"],
                             allow_trace_warnings=True, num_samples=1)
    else:
        config = zoo.ZOO[name].config(allow_trace_warnings=True, num_samples=1)
    source = load_source(config.model)
    spec = resolve_spec(config, source)
    return spec, prepare(config, source, spec)


def export(name: str, path: Path, exporter: str = "torchscript", apart: bool = True) -> tuple[Any, Any]:
    """Export zoo model ``name`` to ``path`` the way the pipeline does; with ``apart=False`` the
    TorchScript exporter keeps the weights (torch's own behaviour). Returns (spec, prepared)."""
    spec, prep = prepared(name)
    hook = onnx_weights.weights_apart if apart else _unchanged
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_weights, "weights_apart", hook)
        export_once(exporter, prep.module, prep.export_args, spec, prep.names, path, 20, Noise(), prep.trace)
    return spec, prep


@contextlib.contextmanager
def _unchanged(threshold: int = 0):
    yield onnx_weights.Held()


class TiedBuffersAndViews(nn.Module):
    """What attaching initializers by name must get right: an embedding tied to the output
    projection (one tensor, two uses), a buffer, a non-contiguous parameter, an fp16 parameter,
    a bool buffer, weights the exporter folds (transposed for MatMul) and a duplicate pair."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(300, 16)
        self.proj = nn.Linear(16, 300, bias=False)
        self.proj.weight = self.embed.weight  # tied
        self.register_buffer("offset", torch.arange(300 * 16, dtype=torch.int64).reshape(300, 16) % 7)
        self.register_buffer("keep", torch.rand(300) > 0.3)
        self.scale = nn.Parameter(torch.randn(16, 300).t())  # non-contiguous (300, 16)
        self.low = nn.Parameter(torch.randn(300, 16).half())
        self.mix = nn.Linear(16, 16)
        self.twin_a = nn.Parameter(torch.ones(40, 40))
        self.twin_b = nn.Parameter(torch.ones(40, 40))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.offset[ids].float() * self.scale[ids] + self.low[ids].float()
        x = self.mix(x) @ (self.twin_a + self.twin_b)[:16, :16]
        return self.proj(x) * self.keep.float()


class ConvUpsample(nn.Module):
    """A convolution (weights over 4 KB: stored) then a resize to sizes computed from the input's
    static height and width: naming the output's dims needs data propagation through small
    folded constants (which the weightless view keeps)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        return nn.functional.interpolate(self.conv(x), size=(h * 2, w * 2))


def upsample_model() -> nn.Module:
    torch.manual_seed(0)
    return ConvUpsample().eval()


def tied_model() -> nn.Module:
    torch.manual_seed(0)
    return TiedBuffersAndViews().eval()


EXPORTED = ["tied", "lstm", "gru", "cnn", "bert"]


# --- export: the weights go to a data file, and the model is torch's own ---------------------------


@pytest.mark.parametrize("name", EXPORTED)
def test_torchscript_export_keeps_weights_apart_yet_equals_torchs_own(name, tmp_path):
    export(name, tmp_path / "warm.onnx")  # torch names scopes differently in a process's first export
    export(name, tmp_path / "apart.onnx")
    export(name, tmp_path / "whole.onnx", apart=False)
    light = onnx.load(str(tmp_path / "apart.onnx"), load_external_data=False)
    stored = onnx_weights.externals(light)
    assert stored and all(onnx_weights.reference(t)[0] == "apart.onnx.data" for t in stored)
    assert all(onnx_weights.tensor_bytes(t) > onnx_weights.THRESHOLD for t in stored)
    assert not onnx_weights.externals(onnx.load(str(tmp_path / "whole.onnx")))
    apart = onnx.load(str(tmp_path / "apart.onnx"))  # reads the data file
    whole = onnx.load(str(tmp_path / "whole.onnx"))
    assert [t.name for t in apart.graph.initializer] == [t.name for t in whole.graph.initializer]
    assert canonical(apart) == canonical(whole)


def test_tied_and_folded_weights_map_to_the_right_initializers(tmp_path):
    """The tied embedding is one initializer used by Gather and (folded, transposed) by MatMul."""
    export("tied", tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    module = tied_model()
    weight = module.embed.weight.detach().numpy()
    assert any(np.array_equal(v, weight) for v in values.values())
    assert any(np.array_equal(v, weight.T) for v in values.values())  # the exporter's folded transpose
    assert any(v.dtype == np.float16 for v in values.values())


def test_the_exported_model_runs_like_the_module(tmp_path):
    from interop.runtimes.onnxruntime import run_onnx, session

    spec, prep = export("tied", tmp_path / "m.onnx")
    sample = prep.ref.samples["example"][0]
    got = run_onnx(session(str(tmp_path / "m.onnx")), sample)
    np.testing.assert_allclose(got[0], prep.ref.outputs["example"][0][0], rtol=1e-5, atol=1e-5)


def test_dynamo_export_is_read_back_weightless_with_small_tensors_inline(tmp_path):
    export("diff", tmp_path / "d.onnx", exporter="dynamo")
    light = onnx_weights.load(tmp_path / "d.onnx")
    assert all(onnx_weights.tensor_bytes(t) > onnx_weights.THRESHOLD for t in onnx_weights.externals(light))
    assert canonical(_with_data(light, tmp_path)) == canonical(onnx.load(str(tmp_path / "d.onnx")))


# --- writing: streamed, the same file -----------------------------------------------------------


@pytest.fixture
def stored_tied(tmp_path):
    export("tied", tmp_path / "m.onnx")
    return onnx_weights.load(tmp_path / "m.onnx"), tmp_path


def test_streamed_file_is_the_model_onnx_would_save(stored_tied):
    light, base = stored_tied
    external = onnx_weights.write(light, base / "out.onnx", base, "out.onnx.data", limit=2 * 1024**3)
    assert not external and not (base / "out.onnx.data").exists()
    written = onnx.load(str(base / "out.onnx"))
    assert not onnx_weights.externals(written)
    assert canonical(written) == canonical(_with_data(light, base))
    onnx.checker.check_model(written, full_check=True)


def test_over_the_limit_the_artifact_gets_its_own_data_file(stored_tied):
    from interop.runtimes.onnxruntime import run_onnx, session

    light, base = stored_tied
    assert onnx_weights.write(light, base / "big.onnx", base, "big.onnx.data", limit=0)
    refs = {onnx_weights.reference(t)[0] for t in onnx_weights.externals(onnx.load(str(base / "big.onnx"),
                                                                                   load_external_data=False))}
    assert refs == {"big.onnx.data"}
    ids = {"ids": np.array([[1, 5, 299, 0, 7]], dtype=np.int64)}
    assert np.array_equal(run_onnx(session(str(base / "big.onnx")), ids)[0],
                          run_onnx(session(str(base / "m.onnx")), ids)[0])


def test_a_file_holding_its_weights_is_read_back_weightless(stored_tied):
    light, base = stored_tied
    onnx.save_model(_with_data(light, base), str(base / "inline.onnx"))  # every tensor in the file
    again = onnx_weights.load(base / "inline.onnx")
    assert {onnx_weights.reference(t)[0] for t in onnx_weights.externals(again)} == {"inline.onnx.weights"}
    assert [t.name for t in again.graph.initializer] == [t.name for t in light.graph.initializer]
    assert canonical(_with_data(again, base)) == canonical(_with_data(light, base))


def test_store_weights_round_trips_a_model_held_in_memory(stored_tied, tmp_path):
    light, base = stored_tied
    full = _with_data(light, base)
    again = onnx_weights.store_weights(full, onnx_weights.DataFile(base / "again.weights"))
    assert onnx_weights.externals(again) and not any(t.HasField("raw_data") for t in onnx_weights.externals(again))
    assert canonical(_with_data(again, base)) == canonical(full)


# --- shape inference on the weightless view ------------------------------------------------------


@pytest.mark.parametrize("name", ["upsample", "tied", "lstm", "cnn", "bert", "gpt2"])
def test_weightless_inference_names_dims_as_the_weighted_model(name, tmp_path):
    exporter = "dynamo" if name == "gpt2" else "torchscript"
    spec, prep = export(name, tmp_path / "m.onnx", exporter=exporter)
    from interop.stages.prepare import output_dims

    dims = output_dims(spec, prep.ref, prep.cases)
    light = onnx_weights.load(tmp_path / "m.onnx")
    full = onnx.load(str(tmp_path / "m.onnx"))
    assert onnx_weights.externals(light)
    assert name_dims(light, spec, dims) == name_dims(full, spec, dims)
    assert [o.SerializeToString() for o in light.graph.output] == [o.SerializeToString() for o in full.graph.output]
    if name == "upsample":  # proved constant by data propagation, not left symbolic
        assert [d.dim_value or d.dim_param for d in light.graph.output[0].type.tensor_type.shape.dim] == \
            ["batch", 16, 8, 8]
    inferred_full = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "m.onnx")), data_prop=True)
    inferred_view = onnx.shape_inference.infer_shapes(onnx_weights.lifted(onnx_weights.load(tmp_path / "m.onnx")),
                                                      data_prop=True)
    assert [o.SerializeToString() for o in inferred_view.graph.output] == \
        [o.SerializeToString() for o in inferred_full.graph.output]


def test_small_constants_stay_in_the_view_for_data_propagation(tmp_path):
    """y = Reshape(x, Concat(Shape(x)[:1], [6])) declared (batch, y_dim1): only data propagation
    through the small initializer [6] proves axis 1 constant; the big weight is stored apart."""
    from interop.stages.spec import InputSpec, apply_dynamic, parse_dynamic, parse_input

    inits = [numpy_helper.from_array(np.array([6], np.int64), "six"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.ones((6, 200), np.float32), "w")]
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
             helper.make_node("Concat", ["n", "six"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"]),
             helper.make_node("MatMul", ["y", "w"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "y_dim1"]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 200])], inits)
    light = _stored(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path)
    assert [t.name for t in onnx_weights.externals(light)] == ["w"]
    spec = InputSpec([parse_input("x:2x2x3")])
    apply_dynamic(spec, *parse_dynamic("x:0=batch:1..8"))
    name_dims(light, spec, [{0: "batch"}, {0: "batch"}])
    assert [d.dim_value or d.dim_param for d in light.graph.output[0].type.tensor_type.shape.dim] == ["batch", 6]


def test_lifted_view_copies_no_weights():
    big = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    small = numpy_helper.from_array(np.arange(4, dtype=np.int64), "s")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [big, small])
    view = onnx_weights.lifted(helper.make_model(graph))
    assert [t.name for t in view.graph.initializer] == ["s"]
    assert [i.name for i in view.graph.input] == ["x", "w"]
    assert view.ByteSize() < 1000


# --- onnxsim: passive tensors shown as inputs, the same result -----------------------------------


def _gather_model(indices_from: str, table_uses: tuple[str, ...] = ("Gather",), twin: bool = False) -> Any:
    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((50, 32)).astype(np.float32), "table")
    inits = [table, numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "const_ids")]
    if twin:
        inits.append(numpy_helper.from_array(numpy_helper.to_array(table).copy(), "twin"))
    nodes = []
    if indices_from == "input":
        ids = "ids"
    elif indices_from == "shape":
        nodes.append(helper.make_node("Shape", ["ids"], ["ids_shape"]))
        ids = "ids_shape"
    else:
        ids = "const_ids"
    nodes.append(helper.make_node("Gather", ["table", ids], ["emb"]))
    out = "emb"
    if "MatMul" in table_uses:
        nodes.append(helper.make_node("Transpose", ["table"], ["table_t"]))
        nodes.append(helper.make_node("MatMul", ["emb", "table_t"], ["logits"]))
        out = "logits"
    if twin:
        nodes.append(helper.make_node("Gather", ["twin", "ids"], ["emb2"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _stored(model: Any, base: Path) -> Any:
    return onnx_weights.store_weights(model, onnx_weights.DataFile(base / "w.weights"))


@pytest.mark.parametrize("case, expected", [
    (dict(indices_from="input"), {"table"}),
    (dict(indices_from="shape"), set()),  # static shapes: onnxsim may fold it
    (dict(indices_from="const"), set()),
    (dict(indices_from="input", table_uses=("Gather", "MatMul")), set()),
    (dict(indices_from="input", twin=True), set()),  # onnxsim would merge the twins
])
def test_passive_tensors_are_embedding_tables_indexed_by_input_values(case, expected, tmp_path):
    assert onnx_weights.passive(_stored(_gather_model(**case), tmp_path), tmp_path) == expected


def test_no_passive_tensors_in_a_graph_with_subgraphs(tmp_path):
    model = _gather_model("input")
    then = helper.make_graph([helper.make_node("Identity", ["emb"], ["a"])], "then", [],
                             [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)])
    model.graph.node.append(helper.make_node("If", ["cond"], ["picked"], then_branch=then, else_branch=then))
    assert onnx_weights.passive(_stored(model, tmp_path), tmp_path) == set()


@pytest.mark.parametrize("name", ["tied", "lstm", "cnn", "multi_io", "bert", "gpt2"])
def test_simplifying_the_weightless_model_gives_onnxsims_own_result(name, tmp_path):
    import onnxsim

    exporter = "dynamo" if name == "gpt2" else "torchscript"
    export(name, tmp_path / "m.onnx", exporter=exporter)
    light = onnx_weights.load(tmp_path / "m.onnx")
    passive = onnx_weights.passive(light, tmp_path)
    # embedding tables (gpt2's too: the dynamo exporter gives its tied head a transposed copy)
    assert bool(passive) == (name in ("tied", "lstm", "bert", "gpt2"))
    ours, why = simplify_stored(light, tmp_path, "m", Noise())
    assert ours is not None, why
    assert all(onnx_weights.reference(t) for t in ours.graph.initializer if onnx_weights.tensor_bytes(t) > 4096)
    theirs, ok = onnxsim.simplify(onnx.load(str(tmp_path / "m.onnx")))
    assert ok
    assert canonical(_with_data(ours, tmp_path)) == canonical(theirs)
    assert [t.name for t in ours.graph.initializer] == [t.name for t in theirs.graph.initializer]
    assert not list(tmp_path.glob("m.onnxsim-*"))  # onnxsim's files are removed


# --- Core ML: the fp16 pass's range check ---------------------------------------------------------


@pytest.mark.parametrize("values", [
    [0.0, 1.0, -65504.0], [65504.5], [-70000.0], [1e38], [-3e38, 5.0], [np.inf, -np.inf, 1.0],
    [np.nan], [np.nan, 1e5], [], [3e4, -2e38, 7e4], [65505.0],
])
def test_fp16_range_check_is_coremltools_own(values):
    from interop.targets.coreml.target import beyond_fp16

    for shape in ((len(values),), (1, len(values), 1)):
        value = np.array(values, dtype=np.float32).reshape(shape)
        abs_value = np.abs(np.expand_dims(value, 0))
        theirs = np.max(abs_value[np.where(abs_value < 1e38)], initial=0.0) > 65504  # coremltools 9
        assert beyond_fp16(value) == theirs
    if values:
        scalar = np.float32(values[0])
        assert beyond_fp16(scalar) == bool(65504 < abs(scalar) < 1e38)


def test_fp16_range_check_is_installed_in_coremltools_while_converting():
    from coremltools.converters.mil.mil.passes.defs.quantization import FP16ComputePrecision

    from interop import patches
    from interop.targets.coreml.target import _FP16_OVERFLOW

    theirs = FP16ComputePrecision.__dict__["fp16_overflow"]
    with patches.applied(*patches.COREML_CONVERSION):
        assert FP16ComputePrecision.__dict__["fp16_overflow"] is _FP16_OVERFLOW
    assert FP16ComputePrecision.__dict__["fp16_overflow"] is theirs
