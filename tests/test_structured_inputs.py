"""Structured integer inputs (value kinds), the --sampler hook and --samples per shape case: valid
inputs at every shape case, in tracing and in export (issue 21).

The kinds' invariants are checked at several sizes; four real models whose inputs constrain each
other (an EmbeddingBag recommender, a message-passing graph network, an RNN masked by lengths, a
BERT with a padded attention mask) build and agree at every case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from interop.cli import app
from interop.errors import SpecError
from interop.stages.value_kinds import fill, parse_kind
from interop.stages.spec import Case, InputSpec, TensorSpec, apply_dynamic, case_shape, cases, make_sample, \
    parse_dynamic, parse_input, validate

runner = CliRunner()
HERE = "tests.test_structured_inputs"


def spec_of(inputs: list[str], dynamic: list[str] = ()) -> InputSpec:
    spec = InputSpec([parse_input(t) for t in inputs])
    for text in dynamic:
        apply_dynamic(spec, *parse_dynamic(text))
    validate(spec)
    return spec


# --- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, want", [
    ("offsets:4:int64:offsets=indices", ("int64", "offsets=indices:0")),
    ("offsets:4:offsets=indices", ("int64", "offsets=indices:0")),  # kinds default to int64
    ("edge_index:2x64:int64:index=x:0", ("int64", "index=x:0")),
    ("lengths:4:int32:lengths=audio:1", ("int32", "lengths=audio:1")),
    ("attention_mask:2x8:mask", ("int64", "mask")),
    ("attention_mask:2x8:bool:mask", ("bool", "mask")),
    ("position_ids:1x8:int64:arange", ("int64", "arange")),
])
def test_parse_input_kinds(text, want):
    t = parse_input(text)
    assert (t.dtype, t.kind) == want and t.low is None


def test_parse_input_without_a_kind_is_unchanged():
    t = parse_input("ids:2x16:int64:0..999")
    assert (t.shape, t.dtype, t.low, t.high, t.kind) == ((2, 16), "int64", 0, 999, None)
    assert parse_input("x:1x3").to_json()["kind"] is None


@pytest.mark.parametrize("text, fragment", [
    ("o:4:int64:0..9:offsets=i", "drop LOW..HIGH"),
    ("o:4:int64:offsets", "needs the input"),
    ("o:4:int64:offsets=3x", "needs the input"),
    ("o:4:int64:index=x:first", "bad axis"),
    ("m:2x8:int64:mask=x", "takes no reference"),
])
def test_parse_input_rejects_bad_kinds(text, fragment):
    with pytest.raises(SpecError, match=fragment):
        parse_input(text)


def test_kind_and_sampler_survive_to_json_and_back():
    spec = spec_of(["x:10x8", "edge_index:2x30:index=x:0"], ["x:0=nodes:2..64", "edge_index:1=edges:1..256"])
    spec.inputs[0].sampler = "mod:fn"
    data = spec.to_json()
    assert data["inputs"][1]["kind"] == "index=x:0" and data["inputs"][0]["sampler"] == "mod:fn"
    assert "sampler" not in data["inputs"][1]  # only where one drew the values
    again = InputSpec.from_json(data)
    assert again.to_json() == data
    assert again.inputs[1].kind == "index=x:0" and again.inputs[0].sampler == "mod:fn"


@pytest.mark.parametrize("inputs, fragment", [
    (["indices:24:int64", "offsets:4:offsets=indexes"], "no input named 'indexes'"),
    (["x:10x8", "edge_index:2x30:index=x:2"], "has rank 2, no axis 2"),
    (["a:4:offsets=b", "b:4:offsets=a"], "cycle: a -> b -> a"),
    (["a:4:lengths=a:0"], "cycle: a -> a"),
    (["indices:24:int64", "offsets:2x2:offsets=indices"], "offsets are 1-D"),
    (["x:4x4", "i:4:bool:index=x"], "cannot be bool"),
])
def test_bad_constraint_specs_are_spec_errors(inputs, fragment):
    with pytest.raises(SpecError, match=fragment):
        spec_of(inputs)


@pytest.mark.parametrize("inputs, fragment", [
    (["indices:24:int64:0..49", "offsets:4:int64:offsets=indexes"], "no input named 'indexes'"),
    (["x:10x8", "edge_index:2x30:int64:index=x:3"], "no axis 3"),
    (["a:4:offsets=b", "b:4:offsets=a"], "cycle"),
])
def test_bad_constraint_specs_exit_2_with_one_line(inputs, fragment):
    args = ["build", f"{HERE}:recommender", "--targets", "onnx"]
    for text in inputs:
        args += ["--input", text]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.output


# --- every kind's invariants at several sizes ------------------------------------------------------


def _fill(text: str, shape: tuple[int, ...], ref_shape: tuple[int, ...] = (1,), seed: int = 0) -> np.ndarray:
    t = parse_input(f"v:{'x'.join(map(str, shape))}:{text}")
    return fill(t, {"v": shape, "r": ref_shape}, np.random.default_rng(seed))


@pytest.mark.parametrize("bags, length", [(1, 1), (1, 7), (3, 24), (8, 8), (9, 24), (16, 5), (40, 1000)])
@pytest.mark.parametrize("seed", [0, 1])
def test_offsets_are_sorted_start_at_0_and_stay_below_the_length(bags, length, seed):
    got = _fill("int64:offsets=r", (bags,), (length,), seed)
    assert got.dtype == np.int64 and got.shape == (bags,)
    assert got[0] == 0 and got.max() < length and (np.diff(got) >= 0).all()
    if bags <= length:  # every bag holds at least one index
        assert (np.diff(got) > 0).all()


@pytest.mark.parametrize("shape, ref, axis", [((2, 64), (10, 8), 0), ((2, 5), (3, 8), 1), ((7,), (1, 1), 0),
                                              ((4, 3, 2), (2, 50, 2), -2)])
def test_index_stays_inside_the_referenced_axis(shape, ref, axis):
    got = _fill(f"int32:index=r:{axis}", shape, ref)
    assert got.shape == shape and got.dtype == np.int32
    assert got.min() >= 0 and got.max() < ref[axis]
    if np.prod(shape) >= 20 and ref[axis] > 1:
        assert len(np.unique(got)) > 1  # not a constant


@pytest.mark.parametrize("batch, time", [(1, 1), (1, 9), (4, 12), (9, 3), (16, 64)])
def test_lengths_are_bounded_by_the_axis_longest_first(batch, time):
    got = _fill("int64:lengths=r:1", (batch,), (batch, time, 6))
    assert got.shape == (batch,)
    assert got[0] == time and got.min() >= 1 and got.max() <= time
    assert (np.diff(got) <= 0).all()  # what pack_padded_sequence(enforce_sorted=True) requires


@pytest.mark.parametrize("shape", [(1, 1), (2, 8), (5, 17), (3, 2, 6), (7,)])
@pytest.mark.parametrize("dtype", ["int64", "float32", "bool"])
def test_mask_rows_are_ones_then_zeros_and_the_first_row_is_full(shape, dtype):
    got = _fill(f"{dtype}:mask", shape)
    assert got.shape == shape and str(got.dtype) == dtype
    rows = got.reshape(-1, shape[-1]).astype(np.int64)
    assert set(np.unique(rows)) <= {0, 1}
    assert (rows[:, 0] == 1).all() and (np.diff(rows, axis=1) <= 0).all()
    assert rows[0].all()


def test_mask_pads_some_rows():
    rows = _fill("int64:mask", (64, 16))
    assert (rows.sum(1) < 16).any()  # padding is exercised, not only full rows


@pytest.mark.parametrize("shape", [(1, 1), (2, 8), (3, 4, 5), (6,)])
def test_arange_counts_along_the_last_axis(shape):
    got = _fill("int64:arange", shape)
    assert got.shape == shape and (got.reshape(-1, shape[-1]) == np.arange(shape[-1])).all()


def test_kinds_follow_every_shape_case():
    """Mixed with --dynamic, each case's values fit that case's sizes (the referenced input's)."""
    spec = spec_of(["x:10x8", "edge_index:2x30:int64:index=x:0", "indices:24:int64:0..49",
                    "offsets:4:offsets=indices", "audio:4x12x6", "lengths:4:lengths=audio:1", "mask:4x12:mask"],
                   ["x:0=nodes:2..64", "edge_index:1=edges:1..256", "indices:0=nnz:2..128", "offsets:0=batch:1..16",
                    "audio:0=batch:1..16", "lengths:0=batch:1..16", "audio:1=time:2..64", "mask:0=batch:1..16",
                    "mask:1=time:2..64"])
    seen = set()
    for case in cases(spec) + [Case("small", (("nodes", 2), ("nnz", 2), ("batch", 16), ("time", 2)))]:
        for seed in range(3):
            s = make_sample(spec, case, seed)
            shapes = {t.name: case_shape(t, case) for t in spec.inputs}
            assert all(s[n].shape == shape for n, shape in shapes.items())
            assert s["edge_index"].max() < shapes["x"][0]
            assert s["offsets"][0] == 0 and s["offsets"].max() < shapes["indices"][0]
            assert s["lengths"][0] == shapes["audio"][1] and s["lengths"].max() <= shapes["audio"][1]
            assert (s["mask"].sum(1) <= shapes["audio"][1]).all()
            seen.add(case.name)
    assert {"nodes=21", "nnz=49", "batch=9", "time=25", "small"} <= seen


# --- the sampler hook ------------------------------------------------------------------------------

CALLS: list[dict[str, tuple]] = []


def graph_sampler(shapes: dict[str, tuple], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Edges that never loop (src != dst): a constraint no kind expresses."""
    CALLS.append(dict(shapes))
    nodes, (_, edges) = shapes["x"][0], shapes["edge_index"]
    src = rng.integers(0, nodes, size=edges)
    dst = (src + rng.integers(1, max(nodes, 2), size=edges)) % nodes
    return {"edge_index": np.stack([src, dst]).astype(np.int64)}


def bad_name_sampler(shapes, rng):
    return {"edges": np.zeros((2, 3), np.int64)}


def bad_shape_sampler(shapes, rng):
    return {"edge_index": np.zeros((2, 3), np.int64)}


def bad_dtype_sampler(shapes, rng):
    return {"edge_index": np.zeros(shapes["edge_index"], np.int32)}


GRAPH = ["x:10x8", "edge_index:2x30:int64:0..9"]
GRAPH_DYN = ["x:0=nodes:2..64", "edge_index:1=edges:1..256"]


def test_the_sampler_draws_tracing_export_and_every_case(tmp_path):
    from interop import BuildConfig
    from interop.sources.torch_files import load_source
    from interop.stages.prepare import prepare
    from interop.stages.resolve import resolve_spec

    CALLS.clear()
    config = BuildConfig(model=f"{HERE}:graph", inputs=GRAPH, dynamic=GRAPH_DYN, sampler=f"{HERE}:graph_sampler",
                         num_samples=2)
    source = load_source(config.model)
    spec = resolve_spec(config, source)
    prep = prepare(config, source, spec)
    for case in prep.cases:
        for s in prep.ref.samples[case.name]:
            nodes = s["x"].shape[0]
            assert s["edge_index"].max() < nodes and (s["edge_index"][0] != s["edge_index"][1]).all()
    exported = prep.export_args[1].numpy()
    assert (exported[0] != exported[1]).all() and exported.max() < prep.export_args[0].shape[0]
    assert {c["x"][0] for c in CALLS} >= {10, 21}  # the example and the nodes=21 case
    assert spec.by_name("edge_index").sampler == f"{HERE}:graph_sampler" and spec.by_name("x").sampler is None


@pytest.mark.parametrize("fn, fragment", [
    ("bad_name_sampler", "returned 'edges', which is not an input"),
    ("bad_shape_sampler", "of shape (2, 3), this case needs (2, 30)"),
    ("bad_dtype_sampler", "as int32, the spec says int64"),
    ("no_such_fn", "has no callable 'no_such_fn'"),
])
def test_bad_sampler_outputs_exit_2_with_one_line(fn, fragment):
    args = ["build", f"{HERE}:graph", "--targets", "onnx", "--sampler", f"{HERE}:{fn}"]
    for text in GRAPH:
        args += ["--input", text]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0], lines


# --- --samples per shape case ----------------------------------------------------------------------


def _graph_spec() -> InputSpec:
    return spec_of(["x:10x8", "edge_index:2x30:int64:index=x:0"], GRAPH_DYN)


def test_samples_file_holds_samples_per_case(tmp_path):
    from interop.stages.prepare import load_user_samples

    spec = _graph_spec()
    all_cases = cases(spec)
    path = tmp_path / "s.npz"
    edges = np.zeros((2, 61), np.int64)
    np.savez(path, x=np.ones((10, 8), np.float32), edge_index=np.ones((2, 30), np.int64),
             **{"x@nodes=21": np.full((3, 21, 8), 2, np.float32), "edge_index@nodes=21": np.full((3, 2, 30), 20),
                "x@edges=61": np.zeros((10, 8), np.float32), "edge_index@edges=61": edges})
    got = load_user_samples(str(path), spec, all_cases)
    assert sorted(got) == ["edges=61", "example", "nodes=21"]
    assert len(got["nodes=21"]) == 3 and got["nodes=21"][0]["edge_index"].max() == 20
    assert got["nodes=21"][0]["edge_index"].dtype == np.int64 and got["example"][0]["x"].shape == (10, 8)


@pytest.mark.parametrize("arrays, fragment", [
    ({"x@nodes=99": np.ones((99, 8)), "edge_index@nodes=99": np.ones((2, 30))}, "no case 'nodes=99'"),
    ({"x@nodes=21": np.ones((21, 8))}, "no array for input(s) edge_index at case nodes=21"),
    ({"x@nodes=21": np.ones((20, 8)), "edge_index@nodes=21": np.ones((2, 30))}, "its case needs (21, 8)"),
    ({"x": np.ones((10, 8)), "x@example": np.ones((10, 8)), "edge_index": np.ones((2, 30))}, "twice"),
])
def test_bad_samples_per_case_are_spec_errors(tmp_path, arrays, fragment):
    from interop.stages.prepare import load_user_samples

    spec = _graph_spec()
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_user_samples(str(path), spec, cases(spec))


def test_user_samples_cover_their_cases_and_export_kinds_the_rest(tmp_path):
    """Random offsets (no kind): the user's samples are the only valid ones; they are used at the
    cases they cover and for tracing/export; a case they do not cover uses the kind."""
    from interop import BuildConfig
    from interop.sources.torch_files import load_source
    from interop.stages.prepare import prepare
    from interop.stages.resolve import resolve_spec

    path = tmp_path / "bags.npz"
    offsets9 = np.array([0, 1, 2, 5, 6, 9, 11, 15, 20])
    np.savez(path, indices=np.arange(24) % 50, offsets=np.array([0, 3, 10, 11]),
             **{"indices@batch=9": np.arange(24) % 50, "offsets@batch=9": offsets9})
    config = BuildConfig(model=f"{HERE}:recommender", inputs=["indices:24:int64:0..49", "offsets:4:offsets=indices"],
                         dynamic=["offsets:0=batch:1..16", "indices:0=nnz:2..128"], samples=str(path))
    source = load_source(config.model)
    spec = resolve_spec(config, source)
    prep = prepare(config, source, spec)
    assert (prep.ref.samples["batch=9"][0]["offsets"] == offsets9).all()
    assert (prep.ref.samples["example"][0]["offsets"] == [0, 3, 10, 11]).all()
    assert (prep.export_args[1].numpy() == [0, 3, 10, 11]).all()
    other = prep.ref.samples["nnz=49"][0]["offsets"]
    assert other[0] == 0 and other.max() < 49  # not in the file: drawn by the kind


# --- real models: build both artifacts, agree at every case -----------------------------------------


class Recommender(nn.Module):
    """EmbeddingBag (sum of each bag's embeddings, bags given by offsets) -> MLP."""

    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(50, 16, mode="sum")
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.bag(indices, offsets))


class Graph(nn.Module):
    """One round of message passing: messages from src nodes summed into dst nodes (scatter)."""

    def __init__(self):
        super().__init__()
        self.msg = nn.Linear(8, 16)
        self.upd = nn.Linear(8 + 16, 4)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index[0], edge_index[1]
        messages = torch.relu(self.msg(x))[src]
        agg = torch.zeros(x.shape[0], 16, dtype=x.dtype).index_add(0, dst, messages)
        return self.upd(torch.cat([x, agg], dim=1))


class MaskedRNN(nn.Module):
    """GRU over padded sequences; the mean over each sequence's first ``lengths`` steps."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(6, 12, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(audio)
        keep = (torch.arange(audio.shape[1])[None, :] < lengths[:, None]).to(out.dtype)
        return self.head((out * keep[..., None]).sum(1) / lengths[:, None].to(out.dtype))


class Bert(nn.Module):
    """transformers' BertModel (tiny config, random weights): the last hidden state."""

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
        self.bert = BertModel(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _seeded(cls: type) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


def recommender() -> nn.Module:
    return _seeded(Recommender)


def graph() -> nn.Module:
    return _seeded(Graph)


def masked_rnn() -> nn.Module:
    return _seeded(MaskedRNN)


def bert() -> nn.Module:
    return _seeded(Bert)


MODELS = {
    "recommender": (["indices:24:int64:0..49", "offsets:4:int64:offsets=indices"],
                    ["offsets:0=batch:1..16", "indices:0=nnz:4..128"]),
    "graph": (["x:10x8", "edge_index:2x30:int64:index=x:0"], GRAPH_DYN),
    "masked_rnn": (["audio:4x12x6", "lengths:4:int64:lengths=audio:1"],
                   ["audio:0=batch:1..16", "lengths:0=batch:1..16", "audio:1=time:2..64"]),
    "bert": (["input_ids:2x8:int64:0..99", "attention_mask:2x8:mask"],
             ["input_ids:0=batch:1..8", "input_ids:1=seq:2..32", "attention_mask:0=batch:1..8",
              "attention_mask:1=seq:2..32"]),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from interop import BuildConfig, build

    done: dict[str, Any] = {}

    def run(name: str) -> Any:
        if name not in done:
            inputs, dynamic = MODELS[name]
            out = tmp_path_factory.mktemp(name)
            done[name] = build(BuildConfig(model=f"{HERE}:{name}", inputs=inputs, dynamic=dynamic, out=str(out),
                                           num_samples=1, allow_trace_warnings=True))
        return done[name]

    return run


@pytest.mark.parametrize("name", list(MODELS))
def test_structured_model_builds_both_artifacts_and_agrees_at_every_case(name, built):
    report = built(name).data
    cases_ = {c["name"] for c in report["cases"]}
    assert len(cases_) >= 3
    kinds = {i["name"]: i["kind"] for i in report["inputs"]}
    assert any(kinds.values()), kinds
    for target in ("onnx", "coreml"):
        entry = report["targets"][target]
        assert entry["status"] == "ok", entry.get("error")
        rows = [a for a in report["agreement"] if a["target"] == target]
        assert {a["case"] for a in rows} == cases_, target
        assert all(a["passed"] for a in rows) and not any(a["degenerate"] for a in rows)
        assert Path(entry["path"]).exists()
    assert report["passed"]


class MaxRecommender(Recommender):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(50, 16, mode="max")


def max_recommender() -> nn.Module:
    return _seeded(MaxRecommender)


def test_a_target_that_cannot_convert_an_op_says_why_and_the_other_ships(tmp_path):
    """embedding_bag mode 'max' has no Core ML translation: the ONNX artifact still ships."""
    from interop import BuildConfig, build

    inputs, dynamic = MODELS["recommender"]
    report = build(BuildConfig(model=f"{HERE}:max_recommender", inputs=inputs, dynamic=dynamic, out=str(tmp_path),
                               num_samples=1)).data
    onnx_t, coreml_t = report["targets"]["onnx"], report["targets"]["coreml"]
    assert coreml_t["status"] == "failed" and "mode 'max'" in coreml_t["error"]
    assert onnx_t["status"] == "ok" and Path(onnx_t["path"]).exists() and not report["passed"]
    assert {a["case"] for a in report["agreement"]} == {c["name"] for c in report["cases"]}


def test_bert_samples_are_padded_and_padding_matters(built):
    """The mask pads rows at every case; masking changes the output (the check is not vacuous)."""
    report = built("bert")
    ok = [t for t, e in report.data["targets"].items() if e["status"] == "ok"]
    assert set(ok) == {"onnx", "coreml"}
    from interop.stages.spec import InputSpec

    spec = InputSpec.from_json({"inputs": report.data["inputs"]})
    model = bert()
    for case in cases(spec)[1:]:
        s = make_sample(spec, case, 3)
        mask = s["attention_mask"]
        assert mask[0].all() and not mask.all()
        with torch.no_grad():
            padded = model(torch.from_numpy(s["input_ids"]), torch.from_numpy(mask))
            full = model(torch.from_numpy(s["input_ids"]), torch.ones_like(torch.from_numpy(mask)))
        assert not torch.allclose(padded, full, atol=1e-4)


def test_without_the_kind_the_recommender_cannot_be_checked():
    """What the issue reported: uniform offsets end in exit 2 ('offsets[0] has to be 0')."""
    inputs, dynamic = MODELS["recommender"]
    args = ["build", f"{HERE}:recommender", "--targets", "onnx", "--input", inputs[0],
            "--input", "offsets:4:int64:0..23"]
    for d in dynamic:
        args += ["--dynamic", d]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "offsets" in result.output, result.output


# --- the Core ML translations of embedding_bag and index_add (targets/coreml/structured_ops.py) ----


class Bag(nn.Module):
    def __init__(self, mode: str = "sum", include_last: bool = False, padding_idx: int | None = None,
                 weighted: bool = False):
        super().__init__()
        self.bag = nn.EmbeddingBag(30, 6, mode=mode, include_last_offset=include_last, padding_idx=padding_idx)
        self.weighted = weighted

    def forward(self, indices, offsets):
        weights = (indices % 3 + 1).to(torch.float32) if self.weighted else None
        return self.bag(indices, offsets, per_sample_weights=weights)


class Bag2d(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.bag = nn.EmbeddingBag(30, 6, mode=mode)

    def forward(self, indices, offsets):
        return self.bag(indices) + offsets.sum().to(torch.float32)


class IndexAdd(nn.Module):
    def __init__(self, dim: int, alpha: float):
        super().__init__()
        self.dim, self.alpha = dim, alpha

    def forward(self, indices, offsets):
        base = torch.ones(4, 7) * offsets.sum().to(torch.float32)
        source = torch.arange(indices.shape[0] * (7 if self.dim == 0 else 4), dtype=torch.float32)
        source = source.reshape((indices.shape[0], 7) if self.dim == 0 else (4, indices.shape[0]))
        return base.index_add(self.dim, indices % (4 if self.dim == 0 else 7), source, alpha=self.alpha)


OPS = [(Bag("sum"), 12, "offsets"), (Bag("mean"), 12, "offsets"), (Bag("sum", include_last=True), 12, "last"),
       (Bag("mean", padding_idx=0), 12, "offsets"), (Bag("sum", weighted=True), 12, "offsets"),
       (Bag2d("sum"), 0, "2d"), (Bag2d("mean"), 0, "2d"), (IndexAdd(0, 1.0), 12, "offsets"),
       (IndexAdd(1, 2.5), 12, "offsets")]


def _op_inputs(layout: str, count: int, bags: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if layout == "2d":
        return rng.integers(0, 30, size=(bags, 5)), np.arange(bags)
    indices = rng.integers(0, 30, size=count)
    indices[::4] = 0  # the padding index, where one is set
    offsets = _fill("int64:offsets=r", (bags,), (count,), seed)
    return indices, (np.append(offsets, count) if layout == "last" else offsets)


def _op_params() -> list[Any]:
    """Every variant through both capture paths; the fast run takes a sum bag, a mean bag with a
    padding index and index_add along dim 1 with alpha (trace), a sum bag and index_add (export);
    the rest run with `make test-all`."""
    fast = {(0, "trace"), (3, "trace"), (8, "trace"), (0, "export"), (7, "export")}
    out = []
    for i, (module, count, layout) in enumerate(OPS):
        for capture in ("trace", "export"):
            slow = (i, capture) not in fast
            out.append(pytest.param(module, count, layout, capture, id=f"{type(module).__name__}-{i}-{capture}",
                                    marks=[pytest.mark.slow] if slow else []))
    return out


@pytest.mark.parametrize("module, count, layout, capture", _op_params())
def test_structured_ops_translate_to_core_ml_and_agree_with_torch(module, count, layout, capture, tmp_path):
    import coremltools as ct
    from torch.export import Dim

    from interop.runtimes import mil
    from interop.targets.coreml import ops as coreml_ops

    coreml_ops.register()
    torch.manual_seed(0)
    module = module.eval()
    example = tuple(torch.from_numpy(a) for a in _op_inputs(layout, count, 4, 0))
    common = dict(convert_to="mlprogram", compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16)
    n, b = (ct.RangeDim(1, 64, default=4), ct.RangeDim(1, 64, default=4)) if layout == "2d" else \
        (ct.RangeDim(2, 64, default=count), ct.RangeDim(1, 32, default=len(example[1])))
    if capture == "trace":
        shapes = [(n, 5) if layout == "2d" else (n,), (b,)]
        types = [ct.TensorType(name=k, shape=ct.Shape(s), dtype=np.int32) for k, s in zip(("indices", "offsets"), shapes)]
        model = ct.convert(torch.jit.trace(module, example), inputs=types, **common)
    else:
        dims = {"indices": {0: Dim("n", min=2, max=64)}, "offsets": {0: Dim("b", min=3 if layout == "last" else 2, max=32)}}
        if layout == "2d":
            dims = {"indices": {0: Dim("n", min=2, max=64)}, "offsets": {0: Dim("n", min=2, max=64)}}
        program = torch.export.export(module, example, dynamic_shapes=dims).run_decompositions({})
        model = ct.convert(program, **common)
    model.save(str(tmp_path / "m.mlpackage"))
    loaded = mil.load_model(tmp_path / "m.mlpackage")
    for count_, bags, seed in [(count, 4, 1), (max(count, 2) + 9, 7, 2), (max(count, 2), 9, 3)]:
        indices, offsets = _op_inputs(layout, count_, bags, seed)
        with torch.no_grad():
            want = module(torch.from_numpy(indices), torch.from_numpy(offsets)).numpy()
        (got,) = loaded.predict({"indices": indices.astype(np.int32), "offsets": offsets.astype(np.int32)}).values()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --- check and verify take the kinds too ------------------------------------------------------------


def test_check_takes_kinds_and_lists_the_cases():
    import json

    inputs, dynamic = MODELS["recommender"]
    args = ["check", f"{HERE}:recommender", "--json"]
    for text in inputs:
        args += ["--input", text]
    for text in dynamic:
        args += ["--dynamic", text]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [i["kind"] for i in data["inputs"]] == [None, "offsets=indices:0"]
    assert {c["name"] for c in data["cases"]} == {"example", "batch=9", "nnz=49"}
    assert not data["would_fail"] and not data.get("blocked_targets")


def test_verify_draws_the_kinds_recorded_in_the_report(built):
    from interop.commands.verify import verify_report

    report = built("recommender")
    path = next(Path(report.data["targets"]["onnx"]["path"]).parent.glob("*.report.json"))
    again = verify_report(str(path), trust=True)  # a MODULE:FN source: verify needs --trust
    assert again.passed, again.data["targets"]
    assert [i["kind"] for i in again.data["inputs"]] == [None, "offsets=indices:0"]


def test_a_build_with_a_sampler_records_it_and_verify_runs_it_again(tmp_path):
    from interop import BuildConfig, build
    from interop.commands.verify import verify_report

    CALLS.clear()
    report = build(BuildConfig(model=f"{HERE}:graph", inputs=GRAPH, dynamic=GRAPH_DYN, out=str(tmp_path),
                               targets=["onnx"], num_samples=1, sampler=f"{HERE}:graph_sampler"))
    assert report.passed, report.data["targets"]
    assert report.data["settings"]["sampler"] == f"{HERE}:graph_sampler"
    assert [i.get("sampler") for i in report.data["inputs"]] == [None, f"{HERE}:graph_sampler"]
    calls = len(CALLS)
    again = verify_report(str(next(tmp_path.glob("*.report.json"))), trust=True)  # a MODULE:FN source
    assert again.passed and len(CALLS) > calls


def test_a_sampler_in_the_config_beside_the_model_is_refused(tmp_path):
    """A file on disk never turns on code execution: --sampler is given by the user."""
    from interop import BuildConfig, build

    model = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(graph(), (torch.randn(10, 8), torch.zeros(2, 30, dtype=torch.int64))), str(model))
    (tmp_path / "interop.toml").write_text(f'inputs = {GRAPH!r}\nsampler = "{HERE}:graph_sampler"\n'.replace("'", '"'))
    CALLS.clear()
    with pytest.raises(SpecError, match="run code"):
        build(BuildConfig(model=str(model), targets=["onnx"]))
    assert not CALLS


def test_flags_keep_the_kind_the_model_carries():
    """A spec embedded in the model (interop.json, a sidecar, INTEROP_SPEC) keeps its kinds when
    --input flags only change shapes; a flag's own kind or range wins."""
    from interop.stages.resolve import _inherit

    carried = spec_of(["indices:24:int64:0..49", "offsets:4:offsets=indices"])
    flags = InputSpec([parse_input("indices:32:int64:0..49"), parse_input("offsets:8:int64")])
    _inherit(flags, carried)
    assert flags.by_name("offsets").kind == "offsets=indices:0" and flags.by_name("offsets").low is None
    ranged = InputSpec([parse_input("indices:32:int64:0..49"), parse_input("offsets:8:int64:0..3")])
    _inherit(ranged, carried)
    assert ranged.by_name("offsets").kind is None and ranged.by_name("offsets").high == 3
