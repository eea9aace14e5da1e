"""build-many: each model in its own process (a hang, a memory hog and a crash are each that
model's result, the others finish), Ctrl-C then --resume rebuilds only what had not passed,
shards merged equal one run, the baseline diff, the manifest's rules, and summary.html in a real
headless browser. Tiny MODULE:FN models (tests/fleet_models.py), ONNX only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interop.cli import app
from interop.fleet import build_many
from interop.fleet import manifest as fleet_manifest
from interop.fleet import files as fleet_files
from interop.fleet import summary as fleet_summary
from interop.fleet.merge import merge
from tests import fleet_models
from tests.conftest import ROOT

PY = sys.executable


def write_manifest(path: Path, models: list[tuple[str, str]], **extra: dict) -> Path:
    lines = ['[defaults]', 'targets = ["onnx"]', 'num_samples = 1']
    for model, inputs in models:
        name = model.rpartition(":")[2]
        lines += ["[[model]]", f'model = "{model}"', f'inputs = ["{inputs}"]']
        lines += [f"{k} = {json.dumps(v)}" for k, v in extra.get(name, {}).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    """Four tiny models built in one run with --jobs 2."""
    folder = tmp_path_factory.mktemp("fleet-one")
    manifest = write_manifest(folder / "models.toml", fleet_models.zoo(4))
    result = build_many(manifest, folder / "out", jobs=2)
    return manifest, folder / "out", result


def test_one_run_builds_every_model_in_its_folder(one_run):
    manifest, out, result = one_run
    assert result["passed"] and result["counts"]["passed"] == 4
    for m in result["models"]:
        assert (out / m["name"] / f"{m['name']}.onnx").is_file()
        assert m["targets"]["onnx"]["status"] == "ok" and m["targets"]["onnx"]["bytes"] > 0
        assert 0 <= m["targets"]["onnx"]["rel_l2"] < 1e-4
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("model,status,target") and len(rows) == 5
    assert "| mlp_0 | passed |" in (out / "summary.md").read_text()
    assert json.loads((out / "summary.json").read_text())["counts"] == result["counts"]


def test_shards_merged_give_the_same_matrix_as_one_run(one_run, tmp_path):
    manifest, out, result = one_run
    parts = []
    for index in range(3):
        part = build_many(manifest, tmp_path / f"shard{index}", jobs=2, shard=f"{index}/3")
        assert part["shard"] == {"index": index, "count": 3}
        parts.append(tmp_path / f"shard{index}")
    assert sorted(n for p in parts for n in (m["name"] for m in fleet_summary.load(p / "summary.json")["models"])) \
        == sorted(m["name"] for m in result["models"])  # disjoint, complete
    merged = merge(parts, tmp_path / "merged")
    assert merged["missing_shards"] == [] and merged["passed"]
    assert fleet_summary.matrix(merged) == fleet_summary.matrix(result)
    assert fleet_summary.matrix(fleet_summary.load(tmp_path / "merged" / "summary.json")) == fleet_summary.matrix(result)


def test_baseline_reports_newly_failing_fidelity_and_fixed(one_run, tmp_path):
    manifest, out, result = one_run
    baseline = json.loads((out / "summary.json").read_text())
    by = {m["name"]: m for m in baseline["models"]}
    by["gru_2"]["targets"]["onnx"]["rel_l2"] /= 1000  # it used to agree 1000x better (a GRU: never exact)
    by["conv_1"]["status"] = "failed"  # it used to fail
    (tmp_path / "base.json").write_text(json.dumps(baseline))
    regressed = write_manifest(tmp_path / "m.toml", fleet_models.zoo(3),
                               mlp_0={"tolerance": ["*:rel_l2=1e-30"], "exporter": "torchscript"})  # regressed
    shutil.copytree(out, tmp_path / "out")  # --resume: only the model whose settings changed is rebuilt
    result = build_many(regressed, tmp_path / "out", jobs=2, resume=True, baseline=tmp_path / "base.json")
    assert {m["name"]: m["status"] for m in result["models"]} == {"mlp_0": "failed", "conv_1": "resumed",
                                                                   "gru_2": "resumed"}
    diff = result["baseline"]
    assert [(d["model"], d["after"]) for d in diff["newly_failing"]] == [("mlp_0", "failed")]
    assert diff["fidelity_regressions"] == []  # 1000x of ~1e-8 is below the 1e-6 floor: fp32 noise
    fidelity = fleet_summary.compare(result, baseline, floor=0)["fidelity_regressions"]
    assert [(d["model"], d["target"]) for d in fidelity] == [("gru_2", "onnx")]
    assert [d["model"] for d in diff["fixed"]] == ["conv_1"]
    assert diff["removed"] == ["mlp_3"]
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "Newly failing: mlp_0" in text and "Fixed: conv_1" in text
    assert "Newly failing: mlp_0" in (tmp_path / "out" / "summary.html").read_text()


@pytest.mark.slow
def test_zoo_of_twenty_models_with_jobs_2(tmp_path):
    """The zoo: 20 models, every fifth one to Core ML too (a models x targets matrix), --jobs 2."""
    models = fleet_models.zoo(20)
    both = {name.rpartition(":")[2]: {"targets": ["onnx", "coreml"]} for name, _ in models[::5]}
    manifest = write_manifest(tmp_path / "zoo.toml", models, **both)
    result = build_many(manifest, tmp_path / "out", jobs=2)
    assert result["passed"] and result["counts"]["passed"] == 20, result["failures"]
    assert result["targets"] == ["onnx", "coreml"] or result["targets"] == ["coreml", "onnx"]
    with_coreml = [m["name"] for m in result["models"] if "coreml" in m["targets"]]
    assert sorted(with_coreml) == sorted(both)
    assert all(m["targets"]["coreml"]["status"] == "ok" and m["targets"]["coreml"]["bytes"] > 0
               for m in result["models"] if m["name"] in both)
    assert len((tmp_path / "out" / "summary.csv").read_text().splitlines()) == 1 + 20 + len(both)


def _children_of(out: Path) -> list[int]:
    """Processes still running a build of this fleet (their job file is under ``out``)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"interop.fleet.child" in cmd and any(str(out).encode() in c for c in cmd):
            found.append(int(proc.name))
    return found


def test_isolation_interrupt_and_resume(tmp_path, monkeypatch):
    """A hang, a memory hog and a crash are reported as such while the others pass; Ctrl-C after
    the first result keeps it and kills every child; --resume rebuilds only what had not passed."""
    models = [("tests.fleet_models:gated", "x:2x4")] + fleet_models.zoo(3) + \
        [(f"tests.fleet_models:{n}", "x:2x4") for n in ("hang", "hog", "crash")]
    manifest = write_manifest(tmp_path / "m.toml", models, hang={"timeout": 5}, hog={"memory_limit": "1GiB"})
    out, gate = tmp_path / "out", tmp_path / "gate"
    env = {**os.environ, "FLEET_TEST_GATE": str(gate)}
    cmd = [PY, "-m", "interop.cli", "build-many", str(manifest), "--out", str(out), "--jobs", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        first = _wait_for_record(out, proc)
        proc.send_signal(signal.SIGINT)  # Ctrl-C of the parent only: its children are its job
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert _children_of(out) == []
    stopped = json.loads((out / "summary.json").read_text())
    assert stopped["interrupted"] and "gated" in stopped["not_run"]
    done = {m["name"]: m["status"] for m in stopped["models"]}
    assert first == "mlp_0" and done[first] == "passed" and "gated" not in done  # gated holds one slot
    passed_before = {n for n, s in done.items() if s == "passed"}

    gate.write_text("open")
    monkeypatch.setenv("FLEET_TEST_GATE", str(gate))
    result = build_many(manifest, out, jobs=2, resume=True)
    status = {m["name"]: m["status"] for m in result["models"]}
    assert {n for n, s in status.items() if s == "resumed"} == passed_before
    assert {n: status[n] for n in ("hang", "hog", "crash")} == {"hang": "timeout", "hog": "out-of-memory",
                                                                "crash": "crashed"}
    assert all(status[n] == "passed" for n in status if n not in passed_before | {"hang", "hog", "crash"})
    assert len(status) == len(models) and not result["interrupted"] and not result["passed"]
    groups = {g["signature"]: g["models"] for g in result["failures"]}
    assert groups == {"timeout": ["hang"], "out-of-memory": ["hog"], "crashed [SIGABRT]": ["crash"]}
    hog = next(m for m in result["models"] if m["name"] == "hog")
    assert hog["peak_rss_bytes"] > 2 ** 30
    assert _children_of(out) == []


def _wait_for_record(out: Path, proc: subprocess.Popen) -> str:
    """The name of the first model whose fleet.json appears (a wait on the file, bounded only so
    that a broken run fails the test instead of hanging it)."""
    import time

    for _ in range(6000):
        found = sorted(p.parent.name for p in out.glob("*/fleet.json"))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    raise AssertionError("no model finished")


def test_resume_hash_follows_source_bytes_settings_and_artifacts(tmp_path):
    """What --resume reuses: the same bytes, settings and versions, a passing record, its artifacts."""
    from interop.fleet import resume

    (tmp_path / "a.pt").write_bytes(b"weights-1")
    manifest = tmp_path / "m.toml"
    manifest.write_text('[[model]]\nmodel = "a.pt"\ninputs = ["x:2x4"]\n')
    [entry] = fleet_manifest.load(manifest)
    first = resume.content_hash(entry)
    assert resume.content_hash(fleet_manifest.load(manifest)[0]) == first
    (tmp_path / "interop.toml").write_text('precision = "fp32"\n')  # a settings file beside the model
    assert resume.content_hash(entry) != first
    (tmp_path / "interop.toml").unlink()
    (tmp_path / "a.pt").write_bytes(b"weights-2")
    assert resume.content_hash(entry) != first
    entry.settings["inputs"] = ["x:3x4"]
    changed = resume.content_hash(entry)
    assert changed != first
    factory = fleet_manifest.entry({"model": "tests.fleet_models:mlp_1"}, ROOT, "test")
    assert resume.input_files(factory) == [ROOT / "tests" / "fleet_models.py"]  # found without importing

    folder = tmp_path / "out" / "a"
    folder.mkdir(parents=True)
    (folder / "a.onnx").write_bytes(b"x")
    (folder / "a.report.json").write_text(json.dumps({"model": {"source": entry.settings["model"]}, "settings": {}}))
    record = {"name": "a", "status": "passed", "hash": changed, "artifacts": ["a.onnx"], "report": "a.report.json",
              "artifact_sha256": {"a.onnx": resume.artifact_sha256(folder / "a.onnx")}}
    (folder / "fleet.json").write_text(json.dumps(record))
    assert resume.previous(folder, changed, entry) == record
    (folder / "a.onnx").write_bytes(b"y")  # an artifact swapped since the record: rebuilt
    assert resume.previous(folder, changed, entry) is None
    (folder / "a.onnx").write_bytes(b"x")
    assert resume.previous(folder, first) is None
    (folder / "fleet.json").write_text(json.dumps({**record, "status": "failed"}))
    assert resume.previous(folder, changed) is None
    (folder / "fleet.json").write_text(json.dumps(record))
    (folder / "a.onnx").unlink()
    assert resume.previous(folder, changed) is None


# --- the manifest's rules -------------------------------------------------------------------------
@pytest.mark.parametrize("body, words", [
    ('[[model]]\nmodel = "a.pt"\ntrust = true\n', "trust"),
    ('[defaults]\ntrust = true\n[[model]]\nmodel = "a.pt"\n', "trust"),
    ('[[model]]\nmodel = "a.pt"\nout = "/tmp"\n', "out"),
    ('[[model]]\nmodel = "a.pt"\nfrobnicate = 1\n', "frobnicate"),
    ('[[model]]\nmodel = "../../etc/passwd"\n', "outside"),
    ('[[model]]\nmodel = "a.pt"\nname = "../up"\n', "bad name"),
    ('[[model]]\nmodel = "a.pt"\n[[model]]\nmodel = "sub/a.pt"\n', "more than once"),
    ('[[model]]\nmodel = "a.pt"\nmemory_limit = "lots"\n', "memory size"),
    ('[[model]]\nmodel = "a.pt"\ntimeout = -1\n', "timeout"),
    ('[[model]\n', "not valid TOML"),
])
def test_bad_manifest_is_exit_2_one_line(tmp_path, body, words):
    (tmp_path / "m.toml").write_text(body)
    result = CliRunner().invoke(app, ["build-many", str(tmp_path / "m.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_manifest_keys_follow_build_config_and_paths_resolve(tmp_path):
    (tmp_path / "m.toml").write_text('[defaults]\ntargets = "onnx"\n[[model]]\nmodel = "sub/a.pt"\n'
                                     'precision = "fp32"\nmemory_limit = "512MiB"\ntimeout = 30\n')
    [entry] = fleet_manifest.load(tmp_path / "m.toml")
    assert entry.name == "a" and entry.settings["model"] == str((tmp_path / "sub" / "a.pt").resolve())
    assert entry.settings["targets"] == ["onnx"] and entry.memory_limit == 512 * 2 ** 20 and entry.timeout == 30


def test_folder_of_models_each_with_its_interop_toml(tmp_path):
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "net.pt").write_bytes(b"x")
        (tmp_path / name / "interop.toml").write_text('inputs = ["x:1x4"]\n')
    entries = fleet_manifest.load(tmp_path)
    assert [e.name for e in entries] == ["a", "b"]
    assert entries[0].settings["model"] == str((tmp_path / "a" / "net.pt").resolve())


@pytest.mark.parametrize("text, env, expected", [
    ("1/3", {}, (1, 3)),
    ("auto/4", {"JOB_COMPLETION_INDEX": "2"}, (2, 4)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "3"}, (1, 3)),
])
def test_shard_from_flag_kubernetes_and_slurm(text, env, expected):
    assert fleet_manifest.parse_shard(text, env) == expected


@pytest.mark.parametrize("text", ["3/3", "-1/3", "x/3", "1/0", "auto"])
def test_bad_shard_is_exit_2(text, tmp_path):
    (tmp_path / "m.toml").write_text('[[model]]\nmodel = "a.pt"\n')
    result = CliRunner().invoke(app, ["build-many", str(tmp_path / "m.toml"), "--shard", text, "--out",
                                      str(tmp_path / "o")], env={"JOB_COMPLETION_INDEX": "", "SLURM_ARRAY_TASK_ID": ""})
    assert result.exit_code == 2 and "--shard" in result.output


def test_shards_are_stable_and_cover_every_model():
    names = [f"model{i}" for i in range(50)]
    entries = [fleet_manifest.ModelEntry(n, {}) for n in names]
    shards = [[e.name for e in fleet_manifest.select_shard(entries, i, 3)] for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(names)
    fewer = [[e.name for e in fleet_manifest.select_shard(entries[:25], i, 3)] for i in range(3)]
    assert all(set(f) <= set(s) for f, s in zip(fewer, shards))  # a model keeps its shard


def test_failures_group_by_type_and_op():
    sig = fleet_summary.signature
    a = sig("onnx: UnsupportedOpError", "the runtime has no kernel for MIL op 'foo' (opset 7, op 'x_12')")
    b = sig("onnx: UnsupportedOpError", "the runtime has no kernel for MIL op 'foo' (opset 7, op 'y_3')")
    c = sig("onnx: UnsupportedOpError", "the runtime has no kernel for MIL op 'bar' (opset 7, op 'x_12')")
    assert a == b != c
    assert sig("LoadError", "model file /a/b/c.pt does not exist") == sig("LoadError", "model file /d/e.pt does not exist")


# --- summary.html in a real browser -----------------------------------------------------------------
def _record(name: str, status: str, seconds: float, rel_l2: float | None) -> dict:
    targets = {} if rel_l2 is None else {"onnx": {"status": "ok", "rel_l2": rel_l2, "bytes": 1000}}
    error = None if status == "passed" else {"type": "x", "message": "m", "signature": status}
    return {"name": name, "status": status, "seconds": seconds, "targets": targets, "variants": [], "error": error,
            "peak_rss_bytes": 2 ** 28}


def test_summary_html_sorts_and_filters_in_headless_chromium(tmp_path):
    from tests import browser

    if browser.chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): summary.html is not browser-tested")
    records = [_record("bravo", "passed", 3.0, 2e-7), _record("alpha", "passed", 12.5, 5e-8),
               _record("charlie", "out-of-memory", 0.5, None), _record("delta<&>", "timeout", 7.0, None)]
    fleet_files.write(fleet_summary.summarise(records), tmp_path)
    html = (tmp_path / "summary.html").read_text()
    assert "http://" not in html and "https://" not in html and "src=" not in html  # self-contained
    page = browser.Page(tmp_path / "summary.html")
    try:
        order = ("Array.prototype.map.call(document.querySelectorAll('#matrix tbody tr'),"
                 "function(r){return r.getAttribute('data-model')})")
        shown = ("Array.prototype.filter.call(document.querySelectorAll('#matrix tbody tr'),"
                 "function(r){return r.offsetParent !== null}).map(function(r){return r.getAttribute('data-model')})")
        assert page.eval(order) == ["alpha", "bravo", "charlie", "delta<&>"]
        page.click("#matrix thead th:nth-child(3)")  # seconds
        assert page.eval(order) == ["charlie", "bravo", "delta<&>", "alpha"]
        page.click("#matrix thead th:nth-child(3)")  # again: descending
        assert page.eval(order) == ["alpha", "delta<&>", "bravo", "charlie"]
        page.click("#matrix thead th:nth-child(5)")  # onnx: by worst rel_l2, models without one last
        assert page.eval(order)[:2] == ["alpha", "bravo"]
        page.type("#filter", "out-of")
        assert page.eval(shown) == ["charlie"]
        assert page.eval("document.getElementById('shown').textContent") == "1 of 4 models"
    finally:
        page.close()


def test_merge_cli_refuses_a_model_in_two_summaries(tmp_path):
    for part in ("a", "b"):
        fleet_files.write(fleet_summary.summarise([_record("same", "passed", 1.0, 1e-7)], shard=(0, 2)),
                            tmp_path / part)
    result = CliRunner().invoke(app, ["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "more than one summary" in result.output
    missing = CliRunner().invoke(app, ["merge", str(tmp_path / "a"), "--out", str(tmp_path / "m"), "--json"])
    merged = json.loads(missing.stdout)
    assert missing.exit_code == 1 and merged["missing_shards"] == [1] and not merged["passed"]
    nothing = CliRunner().invoke(app, ["merge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")])
    assert nothing.exit_code == 2 and "summary" in nothing.output and "does not exist" in nothing.output
