"""Compressed variants (--compress): built with the libraries' own APIs, judged against PyTorch
fp32 by their gates, shipped only when they pass, re-checked by verify, timed by bench; the
reference runtime's decompression held to coremltools' own.

Fast tests share one build of the zoo CNN (int8, palettize8, fp16 on both targets); the zoo's
transformer encoder, LSTM and decoder LM are slow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from interop.errors import SpecError
from tests import zoo


def _rows(report: dict, target: str | None = None) -> dict:
    return {(r["target"], r["variant"]): r for r in report["variants"] if target in (None, r["target"])}


@pytest.fixture(scope="module")
def cnn_variants(tmp_path_factory):
    from interop import build

    out = tmp_path_factory.mktemp("variants")
    report = build(zoo.ZOO["cnn"].config(out=str(out), compress=["int8,palettize8", "fp16"]))
    return out, report.data


# --- gates and flags -----------------------------------------------------------------------


def test_gates_are_data_and_user_overrides_are_recorded():
    from interop.variants.gates import DEFAULT_GATE, gate_for, gate_overrides

    assert gate_for("int8").to_json() == {**DEFAULT_GATE, "source": "default"}
    over = gate_overrides(["int4:psnr=28", "*:cosine=0.95"])
    g = gate_for("int4", over).to_json()
    assert g["psnr"] == 28 and g["cosine"] == 0.95 and g["source"] == "user override"
    assert g["default"] == {"psnr": DEFAULT_GATE["psnr"], "cosine": DEFAULT_GATE["cosine"]}
    assert gate_for("int8", over).to_json()["psnr"] == DEFAULT_GATE["psnr"]  # only '*' applies to int8


@pytest.mark.parametrize("settings, message", [
    ({"compress": ["int3"]}, "unknown --compress"),
    ({"compress": ["int8-static"]}, "needs calibration samples"),
    ({"compress": ["int8"], "gate": ["int4:psnr=30"]}, "that --compress does not build"),
    ({"compress": ["int8"], "gate": ["int8:snr=30"]}, "unknown metric"),
    ({"compress": ["int8"], "gate": ["int8:psnr=high"]}, "is not a number"),
    ({"compress": ["int8-static"], "calibration": "/nonexistent.npz"}, "does not exist"),
])
def test_bad_compression_settings_are_exit_2_before_anything_is_built(tmp_path, settings, message):
    from interop import build

    with pytest.raises(SpecError, match=message):
        build(zoo.ZOO["cnn"].config(out=str(tmp_path), **settings))
    assert list(tmp_path.iterdir()) == []


def test_compress_is_refused_for_an_onnx_source_rather_than_ignored(tmp_path):
    from interop import BuildConfig, build

    with pytest.raises(SpecError, match="ONNX source"):
        build(BuildConfig(model=str(tmp_path / "model.onnx"), out=str(tmp_path), compress=["int8"]))


# --- the shared build ----------------------------------------------------------------------


def test_int8_passes_its_gate_on_both_targets_and_ships_beside_the_base(cnn_variants):
    out, report = cnn_variants
    rows = _rows(report)
    for target, suffix in (("onnx", ".onnx"), ("coreml", ".mlpackage")):
        row = rows[(target, "int8")]
        assert row["passed"] is True and row["status"] == "ok" and row["shipped"] is True, row
        assert row["psnr_db"] >= row["gate"]["psnr"] == 35 and row["cosine"] >= 0.99 and row["top1"] == 1.0
        assert Path(row["path"]) == out / f"cnn_model.int8{suffix}" and Path(row["path"]).exists()
        assert 0 < row["ratio"] < 1 and row["bytes"] > 0
        assert (out / f"cnn_model{suffix}").exists()  # the base ships too
        assert [r["runtime"] for r in row["runtimes"]][0] == ("onnxruntime" if target == "onnx" else "interop-mil")
    assert report["passed"] is True
    assert set(report["variants"][0]) >= {"target", "variant", "path", "bytes", "ratio", "psnr_db", "cosine", "top1",
                                          "gate", "passed", "where"}
    assert report["gates"]["int8"]["psnr"] == 35 and report["settings"]["compress"] == ["int8,palettize8", "fp16"]
    md = (out / "cnn_model.report.md").read_text()
    assert "## Compressed variants" in md and "psnr≥35" in md


def test_variants_a_target_has_no_form_for_are_skipped_with_a_note(cnn_variants):
    out, report = cnn_variants
    rows = _rows(report)
    assert rows[("onnx", "palettize8")]["status"] == "skipped" and "no ONNX form" in rows[("onnx", "palettize8")]["note"]
    assert rows[("coreml", "fp16")]["status"] == "skipped" and rows[("coreml", "fp16")]["passed"] is None
    assert rows[("onnx", "fp16")]["passed"] is True and (out / "cnn_model.fp16.onnx").exists()
    assert not list(out.glob("*.palettize8.onnx"))


def test_runtime_decompression_equals_coremltools_for_every_variant_written(cnn_variants):
    from interop.targets.coreml.decompression import check_package

    out, _ = cnn_variants
    for name in ("int8", "palettize8"):
        rows = check_package(out / f"cnn_model.{name}.mlpackage")
        assert rows and all(r["max_abs_diff"] == 0.0 for r in rows), rows
        assert {r["op"] for r in rows} == {"int8": {"constexpr_affine_dequantize"},
                                           "palettize8": {"constexpr_lut_to_dense"}}[name]


def test_runtime_decompression_equals_coremltools_for_ios18_forms_and_compositions(cnn_variants, tmp_path):
    """Grouped-channel lookup tables, a lookup table with per-channel scales (lut_to_dense ->
    blockwise_shift_scale), sparse + palettized (lut_to_sparse) and sparse + int8
    (sparse_blockwise_shift_scale): coremltools writes them with its public API; every op
    decompresses in the runtime exactly as coremltools' numpy does."""
    import coremltools.optimize.coreml as cto

    from interop.targets.coreml import variants as cv
    from interop.targets.coreml.decompression import check_package

    out, _ = cnn_variants
    base = cv._load(out / "cnn_model.mlpackage", cv.IOS18_SPEC)

    def every(cfg):
        return cto.OptimizationConfig(global_config=cfg)

    pruned = cto.prune_weights(base, every(cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=512)))
    forms = {
        "grouped": cto.palettize_weights(base, every(cto.OpPalettizerConfig(
            mode="kmeans", nbits=4, granularity="per_grouped_channel", group_size=4, weight_threshold=512))),
        "scaled": cto.palettize_weights(base, every(cto.OpPalettizerConfig(
            mode="kmeans", nbits=4, enable_per_channel_scale=True, weight_threshold=512))),
        "sparse_lut": cto.palettize_weights(pruned, every(cto.OpPalettizerConfig(mode="kmeans", nbits=4, weight_threshold=512)),
                                            joint_compression=True),
        "sparse_int8": cto.linear_quantize_weights(pruned, every(cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", weight_threshold=512)), joint_compression=True),
    }
    seen = set()
    for name, model in forms.items():
        cv._save(model, tmp_path / f"{name}.mlpackage")
        rows = check_package(tmp_path / f"{name}.mlpackage")
        assert rows and all(r["max_abs_diff"] == 0.0 for r in rows), (name, rows)
        seen |= {r["op"] for r in rows}
    assert seen >= {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale", "constexpr_lut_to_sparse",
                    "constexpr_sparse_blockwise_shift_scale", "constexpr_sparse_to_dense"}


def test_decompression_check_can_fail(cnn_variants, monkeypatch):
    from interop.runtimes.mil import registry
    from interop.targets.coreml.decompression import check_package

    out, _ = cnn_variants
    registry.get_kernel("constexpr_lut_to_dense")  # load the kernels first
    original = registry.KERNELS["constexpr_lut_to_dense"]
    monkeypatch.setitem(registry.KERNELS, "constexpr_lut_to_dense", lambda ctx, **kw: original(ctx, **kw)[::-1])
    rows = check_package(out / "cnn_model.palettize8.mlpackage")
    assert any(r["max_abs_diff"] > 0 for r in rows)


def _corrupt_lut(package: Path, op_name: str) -> None:
    """Overwrite the lookup table of ``op_name`` inside the package's weight blob (reversed)."""
    from interop.runtimes import mil

    loaded = mil.load_model(package)
    op = next(o for o in loaded.program.functions["main"].operations if o.name == op_name)
    lut = np.asarray(op.inputs["lut"].val)
    blob = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = blob.read_bytes()
    assert data.count(lut.tobytes()) == 1
    blob.write_bytes(data.replace(lut.tobytes(), (-lut[::-1]).tobytes()))


def test_corrupted_lookup_table_is_rejected_by_verify_naming_where(cnn_variants, tmp_path):
    from interop.commands.verify import verify_report

    src, report = cnn_variants
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    data = json.loads((out / "cnn_model.report.json").read_text())
    for entry in data["targets"].values():
        if entry.get("path"):
            entry["path"] = str(out / Path(entry["path"]).name)
    for row in data["variants"]:
        if row.get("path"):
            row["path"] = str(out / Path(row["path"]).name)
    (out / "cnn_model.report.json").write_text(json.dumps(data))
    weight = "inner_down_1_weight_to_fp16_palettized"
    _corrupt_lut(out / "cnn_model.palettize8.mlpackage", weight)
    checked = verify_report(str(out / "cnn_model.report.json"), trust=True).data
    row = _rows(checked)[("coreml", "palettize8")]
    assert row["passed"] is False and checked["passed"] is False
    assert "psnr" in row["error"]
    assert f"constexpr_lut_to_dense '{weight}'" in row["where"], row["where"]
    assert _rows(checked)[("coreml", "int8")]["passed"] is True


# --- a deliberately broken variant through the build ------------------------------------------


def test_two_bit_palettized_layer_is_rejected_not_written_and_named(tmp_path, monkeypatch):
    """2-bit palettization of one conv: the variant misses its gate, is not written (FAILED copy
    only with --keep-failed), the build exits 1, the base artifacts still ship."""
    import coremltools.optimize.coreml as cto

    from interop import build, variants
    from interop.targets.coreml import variants as cv

    weight = "inner_down_1_weight_to_fp16"

    def two_bits(base, out, vctx):
        model = cv._load(base)
        cfg = cto.OpPalettizerConfig(mode="kmeans", nbits=2, granularity="per_tensor", weight_threshold=0)
        cv._save(cv._compress(model, {weight: cfg}, "palettize"), out)
        return {}

    monkeypatch.setattr(variants.get("coreml", "palettize4"), "make", two_bits)
    report = build(zoo.ZOO["cnn"].config(out=str(tmp_path), compress=["palettize4"], targets=["coreml"],
                                         keep_failed=True)).data
    row = _rows(report)[("coreml", "palettize4")]
    assert row["passed"] is False and report["passed"] is False
    assert f"constexpr_lut_to_dense '{weight}_palettized'" in row["where"], row["where"]
    assert not (tmp_path / "cnn_model.palettize4.mlpackage").exists()
    assert (tmp_path / "cnn_model.palettize4.FAILED.mlpackage").exists() and row["shipped"] is False
    assert (tmp_path / "cnn_model.mlpackage").exists() and report["targets"]["coreml"]["status"] == "ok"


def test_a_rebuild_without_the_variants_removes_the_old_ones(cnn_variants, tmp_path):
    from interop import build

    src, _ = cnn_variants
    out = tmp_path / "again"
    shutil.copytree(src, out)
    data = json.loads((out / "cnn_model.report.json").read_text())
    for row in data["variants"]:
        if row.get("path"):
            row["path"] = str(out / Path(row["path"]).name)
    (out / "cnn_model.report.json").write_text(json.dumps(data))
    assert (out / "cnn_model.int8.onnx").exists() and (out / "cnn_model.int8.mlpackage").exists()
    build(zoo.ZOO["cnn"].config(out=str(out), targets=["onnx"]))
    assert not list(out.glob("cnn_model.*.onnx")) and not list(out.glob("cnn_model.*.mlpackage"))
    assert (out / "cnn_model.onnx").exists()


# --- the zoo (slow) --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "lstm", "gpt2"])
def test_int8_passes_on_the_zoo_and_the_rest_is_measured(name, tmp_path):
    from interop import build
    from scripts.compression_table import calibration_file

    entry = zoo.ZOO[name]
    report = build(entry.config(out=str(tmp_path), compress=["int8,int4,palettize6,fp16,int8-static"],
                                calibration=str(calibration_file(entry, tmp_path)), allow_trace_warnings=True)).data
    rows = _rows(report)
    assert rows[("onnx", "int8")]["passed"] is True and rows[("coreml", "int8")]["passed"] is True, rows
    for key, row in rows.items():
        if row["status"] != "skipped":
            assert row["psnr_db"] is not None and row["bytes"] > 0, (key, row)
            assert row["passed"] or row["where"], (key, row)


@pytest.mark.slow
def test_int4_falls_back_per_channel_where_blocks_do_not_fit(tmp_path):
    from interop import build
    from interop.targets.coreml.decompression import check_package

    report = build(zoo.ZOO["cnn"].config(out=str(tmp_path), compress=["int4"], targets=["coreml"],
                                         gate=["int4:psnr=20,cosine=0.9,top1=0,top5=0"])).data
    row = _rows(report)[("coreml", "int4")]
    assert row["per_channel_fallback"] and row["fraction_int4"] == 1.0 and row["deployment_target"] == "iOS18"
    rows = check_package(Path(row["path"]))
    assert rows and all(r["max_abs_diff"] == 0.0 for r in rows)


def test_bench_times_every_shipped_variant(cnn_variants):
    from interop.commands.bench import bench
    from scripts.bench_variants import render, rows

    out, _ = cnn_variants
    result = bench(str(out / "cnn_model.report.json"), warmup=0, runs=1, slow_runs=1, compare_unsimplified=False)
    assert set(result["variants"]) == {"onnx:int8", "onnx:fp16", "coreml:int8", "coreml:palettize8"}
    assert result["variants"]["onnx:int8"]["built"]["p50_ms"] > 0
    assert result["variants"]["coreml:palettize8"]["interop-mil"]["p50_ms"] > 0
    table = rows(result)
    by_name = {r["artifact"]: r for r in table}
    assert by_name["onnx:int8"]["ort_ratio"] > 0 and by_name["coreml:int8"]["mil_ms"] > 0
    assert by_name["onnx (base)"]["bytes"] > by_name["onnx:int8"]["bytes"]
    assert "| coreml:palettize8 |" in render(table)


@pytest.mark.slow
@pytest.mark.conformance
def test_coremltools_own_compression_op_tests_pass_on_the_reference_runtime(tmp_path):
    """iOS16 constexpr ops, iOS17 quantize/dequantize, iOS18 compression ops (block-wise
    shift-scale, grouped-channel and vector LUTs, sparse forms, their compositions) from
    coremltools' own test suite, every case run by the reference runtime."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    summary = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(root / "scripts" / "coreml_conformance.py"), "--quiet", "--json",
                           str(summary), "iOS16/test_constexpr_ops.py", "iOS17/test_quantization.py",
                           "iOS18/test_compression.py", "--subset", "fast", "--per-function", "6"],
                          cwd=root, capture_output=True, text=True, timeout=1800)
    assert summary.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(summary.read_text())
    assert data["runnable_mlprogram"] >= 60 and data["pass_rate"] == 1.0, data["failing_ops"]


def test_int8_static_calibrates_on_the_users_samples(tmp_path):
    """--calibration FILE.npz feeds quantize_static: the variant is built and measured, not failed
    on reading the samples."""
    from interop import build
    from scripts.compression_table import calibration_file

    entry = zoo.ZOO["cnn"]
    report = build(entry.config(out=str(tmp_path), targets=["onnx"], compress=["int8-static"],
                                calibration=str(calibration_file(entry, tmp_path)))).data
    row = next(r for r in report["variants"] if r["variant"] == "int8-static")
    assert row.get("status") != "failed" and row["psnr_db"] is not None and row["bytes"] > 0, row
