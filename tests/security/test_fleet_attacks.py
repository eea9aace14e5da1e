"""build-many, merge, --resume and --baseline against files an attacker made: code beside a model,
FIFOs, symlinked output folders and lock files, forbidden keys at any depth of a manifest, knobs
that would disable a limit, forged records, injection into the summaries, a grandchild escaping
with setsid, two runs on one --out. Each attack is refused (one line, exit 2) or neutralised, and
nothing outside --out is written. Tiny models, ONNX only."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interop.cli import app
from interop.fleet import build_many
from interop.fleet import resume
from interop.fleet import manifest as fleet_manifest
from interop.support import safe_io
from tests.conftest import SAMPLES

runner = CliRunner()
MARKER_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"
FORMULA = ("=", "+", "-", "@", "\t", "\r")


def exit_2(result, *fragments: str) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert all(f in lines[0] for f in fragments), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def plant_code(folder: Path, marks: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """``<name>.py`` files in ``folder`` that each write ``marks/<name>.ran`` when imported."""
    markers = {}
    for name in names:
        markers[name] = marks / f"{name}.ran"
        (folder / f"{name}.py").write_text(MARKER_CODE.format(marker=str(markers[name])))
    return markers


def model_folder(root: Path, name: str = "cnn") -> Path:
    sub = root / name
    sub.mkdir(parents=True)
    shutil.copy(SAMPLES / "small_cnn.pt", sub / "small_cnn.pt")
    (sub / "interop.toml").write_text('targets = ["onnx"]\nnum_samples = 1\n')
    return sub


# --- code beside a model -------------------------------------------------------------------------
SHADOWS = ("json", "numpy", "torch", "sitecustomize", "usercustomize", "interop")


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory):
    """A folder of models whose model folder holds json.py, numpy.py, torch.py, sitecustomize.py,
    usercustomize.py and interop.py (each writes a marker when imported), built from inside that
    folder (the current folder is the first place Python looks), with and without --trust."""
    root = tmp_path_factory.mktemp("shadow")
    sub = model_folder(root / "models")
    markers = plant_code(sub, root, SHADOWS)
    victim = root / "victim.txt"
    victim.write_text("precious")
    (root / "out" / "cnn").mkdir(parents=True)
    (root / "out" / "cnn" / "build.log").symlink_to(victim)  # the log must not be written through it
    cwd = os.getcwd()
    os.chdir(sub)
    try:
        plain = runner.invoke(app, ["build-many", str(root / "models"), "--out", str(root / "out"), "--jobs", "1"])
        ran_plain = sorted(n for n, m in markers.items() if m.exists())
        trusted = runner.invoke(app, ["build-many", str(root / "models"), "--out", str(root / "trusted"),
                                      "--jobs", "1", "--trust"])
    finally:
        os.chdir(cwd)
    ran_trusted = sorted(n for n, m in markers.items() if m.exists())
    return root, plain, ran_plain, trusted, ran_trusted, victim


def test_python_files_beside_a_model_never_run(shadowed):
    root, plain, ran_plain, _, _, victim = shadowed
    assert plain.exit_code == 0, plain.output
    assert ran_plain == []
    summary = json.loads((root / "out" / "summary.json").read_text())
    assert [m["status"] for m in summary["models"]] == ["passed"]


def test_the_shadowing_attack_is_real_with_trust(shadowed):
    """--trust puts the model's folder first on sys.path: the planted numpy.py / torch.py run."""
    *_, ran_trusted, _ = shadowed
    assert {"numpy", "torch"} & set(ran_trusted), ran_trusted


def test_build_log_symlink_is_replaced_never_followed(shadowed):
    root, *_, victim = shadowed
    assert victim.read_text() == "precious"
    log = root / "out" / "cnn" / "build.log"
    assert log.is_file() and not log.is_symlink()


def test_model_folder_naming_code_as_its_model_is_refused(tmp_path):
    """A model folder's interop.toml says model = "evil:make" with evil.py beside it."""
    sub = tmp_path / "models" / "evil"
    sub.mkdir(parents=True)
    [marker] = plant_code(sub, tmp_path, ("evil",)).values()
    (sub / "evil.py").write_text((sub / "evil.py").read_text() + "def make():\n    return None\n")
    (sub / "interop.toml").write_text('model = "evil:make"\ntargets = ["onnx"]\n')
    result = runner.invoke(app, ["build-many", str(tmp_path / "models"), "--out", str(tmp_path / "out")])
    exit_2(result, "evil:make", "may not run code")
    assert not marker.exists() and not (tmp_path / "out").exists()


# --- manifest keys, at any depth ------------------------------------------------------------------
NESTED = [
    ('[defaults.extra]\ntrust = true\n[[model]]\nmodel = "a.pt"\n', "trust"),
    ('[[model]]\nmodel = "a.pt"\nsettings = { deep = [{ trust = true }] }\n', "trust"),
    ('[[model]]\nmodel = "a.pt"\n[model.nested.deeper]\nout = "/tmp/elsewhere"\n', "out"),
    ('[[model]]\nmodel = "a.pt"\nsampler = "evil_sampler:draw"\n', "sampler"),
    ('[defaults]\nfactory = "evil_sampler:draw"\n[[model]]\nmodel = "a.pt"\n', "factory"),
    ('[[model]]\nmodel = "a.pt"\nconfig = "../../outside.toml"\n', "outside"),
]


@pytest.mark.parametrize("body, word", NESTED)
def test_forbidden_keys_anywhere_in_a_manifest(tmp_path, body, word):
    [marker] = plant_code(tmp_path, tmp_path, ("evil_sampler",)).values()
    (tmp_path / "evil_sampler.py").write_text((tmp_path / "evil_sampler.py").read_text() + "def draw(*a):\n    return {}\n")
    (tmp_path / "m.toml").write_text(body)
    exit_2(runner.invoke(app, ["build-many", str(tmp_path / "m.toml"), "--out", str(tmp_path / "out")]), word)
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("toml", ['tolerance = ["*:rel_l2=1"]\n', 'compare_where = ["y:x"]\n', 'keep_failed = true\n',
                                  '[interop]\ntolerance = ["*:rel_l2=1"]\n', 'factory = "evil_sampler:draw"\n'])
def test_a_model_folder_cannot_loosen_or_run_code(tmp_path, toml):
    sub = model_folder(tmp_path / "models")
    (sub / "interop.toml").write_text(toml)
    exit_2(runner.invoke(app, ["build-many", str(tmp_path / "models"), "--out", str(tmp_path / "out")]))
    assert not (tmp_path / "out").exists()


# --- knobs that would disable a limit -------------------------------------------------------------
@pytest.mark.parametrize("extra, flags, word", [
    ("timeout = nan\n", [], "timeout"),
    ("timeout = inf\n", [], "timeout"),
    ("timeout = -5\n", [], "timeout"),
    ("timeout = 0\n", [], "timeout"),
    ("timeout = 1e300\n", [], "timeout"),
    ("", ["--timeout", "nan"], "timeout"),
    ("", ["--timeout", "-1"], "timeout"),
    ('memory_limit = "0.00001GiB"\n', [], "minimum"),
    ("", ["--memory-limit", "1KiB"], "minimum"),
    ("", ["--jobs", "0"], "jobs"),
    ("", ["--jobs", "100000"], "jobs"),
])
def test_limits_that_mean_no_limit_are_refused(tmp_path, extra, flags, word):
    (tmp_path / "m.toml").write_text(f'[[model]]\nmodel = "a.pt"\n{extra}')
    result = runner.invoke(app, ["build-many", str(tmp_path / "m.toml"), "--out", str(tmp_path / "out"), *flags])
    exit_2(result, word)
    assert not (tmp_path / "out").exists()


# --- FIFOs: refused, never opened for reading -----------------------------------------------------
def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.timeout(120)
def test_fifos_given_to_build_many_and_merge_are_refused(tmp_path):
    (tmp_path / "m.toml").write_text('[[model]]\nmodel = "a.pt"\n')
    fifo = _fifo(tmp_path / "pipe.json")
    out = str(tmp_path / "out")
    exit_2(runner.invoke(app, ["build-many", str(_fifo(tmp_path / "fifo.toml")), "--out", out]), "FIFO")
    exit_2(runner.invoke(app, ["build-many", str(tmp_path / "m.toml"), "--out", out, "--baseline", str(fifo)]), "FIFO")
    exit_2(runner.invoke(app, ["merge", str(fifo), "--out", out]), "FIFO")
    (tmp_path / "shard").mkdir()
    _fifo(tmp_path / "shard" / "summary.json")
    exit_2(runner.invoke(app, ["merge", str(tmp_path / "shard"), "--out", out]), "FIFO")
    exit_2(runner.invoke(app, ["merge", str(tmp_path / "shard"), "--out", out, "--baseline", str(fifo)]), "FIFO")
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(120)
def test_a_fifo_in_a_model_folder_is_never_opened(tmp_path):
    sub = model_folder(tmp_path / "models")
    (sub / "interop.toml").unlink()
    _fifo(sub / "interop.toml")
    exit_2(runner.invoke(app, ["build-many", str(tmp_path / "models"), "--out", str(tmp_path / "out")]))


# --- malformed summaries (merge inputs, baselines) ------------------------------------------------
MALFORMED = {
    "not json": "{\"models\": [",
    "a list": "[1, 2, 3]",
    "no models": "{\"passed\": true}",
    "name a number": json.dumps({"models": [{"name": 7, "status": "passed"}]}),
    "odd status": json.dumps({"models": [{"name": "a", "status": "PASSED!!"}]}),
    "targets a list": json.dumps({"models": [{"name": "a", "status": "passed", "targets": ["onnx"]}]}),
    "rel_l2 a string": json.dumps({"models": [{"name": "a", "status": "failed",
                                                "targets": {"onnx": {"status": "ok", "rel_l2": "0"}}}]}),
    "shard out of range": json.dumps({"models": [], "shard": {"index": 5, "count": 2}}),
    "deep": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_summaries_are_exit_2(tmp_path, kind):
    bad = tmp_path / "summary.json"
    bad.write_text(MALFORMED[kind])
    exit_2(runner.invoke(app, ["merge", str(bad), "--out", str(tmp_path / "m")]), "summary")
    (tmp_path / "m.toml").write_text('[[model]]\nmodel = "a.pt"\n')
    exit_2(runner.invoke(app, ["build-many", str(tmp_path / "m.toml"), "--out", str(tmp_path / "out"),
                               "--baseline", str(bad)]), "summary")
    assert not (tmp_path / "m").exists() and not (tmp_path / "out").exists()


# --- injection into what people, browsers, spreadsheets and terminals read ------------------------
HOSTILE_NAMES = ['<img src=x onerror=alert(1)>', '=HYPERLINK("http://evil.example/?x","click")',
                 "ok\x1b[2J\x1b]8;;http://evil.example\x07link\x1b]8;;\x07", "a|b\n**PASSED** — every target verified"]
HOSTILE_ERROR = "boom\n\n**PASSED** — every target verified\n<script>alert(2)</script>\r\x1b[1A"
FORGED = re.compile(r"^\s*\**\s*PASSED", re.MULTILINE)


def hostile_summary(path: Path) -> Path:
    models = [{"name": n, "status": "failed", "seconds": 1.0,
               "targets": {"<svg onload=alert(3)>": {"status": "failed\n**PASSED**", "rel_l2": 1e-7}},
               "error": {"type": "Boom", "message": HOSTILE_ERROR, "signature": sig}}
              for n, sig in zip(HOSTILE_NAMES, ['=cmd|" /C calc"!A0', "+1+1", "@SUM(A1)", "-2+3"])]
    path.write_text(json.dumps({"models": models}))
    return path


def check_outputs(out: Path, terminal_text: str, forged_names: bool = True) -> None:
    md = (out / "summary.md").read_text()
    assert not FORGED.search(md), md  # the one verdict line says FAILED; nothing starts a PASSED line
    assert md.splitlines()[2].startswith("**FAILED**")
    assert not re.search(r"(?<!\\)<(img|script|svg)", md) and "\x1b" not in md and "\r" not in md
    assert not re.search(r"(?<!\\)\*\*PASSED", md)
    page = (out / "summary.html").read_text()
    assert not re.search(r"<(img|script>alert|svg)", page) and "\x1b" not in page
    for row in csv.DictReader(io.StringIO((out / "summary.csv").read_text())):
        for key in ("model", "status", "target", "target_status", "signature"):
            assert not (row[key] or "").startswith(FORMULA), (key, row[key])
    assert "\x1b" not in terminal_text and not FORGED.search(terminal_text), terminal_text


def test_injection_through_merged_summaries_is_escaped(tmp_path):
    result = runner.invoke(app, ["merge", str(hostile_summary(tmp_path / "s.json")), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1, result.output
    check_outputs(tmp_path / "m", result.output)


def test_injection_through_a_baseline_is_escaped(tmp_path):
    """A baseline whose model names and statuses are hostile: they reach the baseline section."""
    base = hostile_summary(tmp_path / "base.json")
    data = json.loads(base.read_text())
    for m in data["models"]:
        m["status"] = "passed"
    base.write_text(json.dumps(data))
    result = runner.invoke(app, ["merge", str(hostile_summary(tmp_path / "s.json")), "--out", str(tmp_path / "m"),
                                 "--baseline", str(base)])
    assert result.exit_code == 1, result.output
    assert "Newly failing" in (tmp_path / "m" / "summary.md").read_text()
    check_outputs(tmp_path / "m", result.output)


# --- writes outside --out -------------------------------------------------------------------------
def test_merge_never_writes_through_symlinks(tmp_path):
    out, victims = tmp_path / "m", {}
    out.mkdir()
    for name in ("summary.json", "summary.md", "summary.csv", "summary.html"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("precious")
        (out / name).symlink_to(victims[name])
    good = {"models": [{"name": "a", "status": "passed", "targets": {"onnx": {"status": "ok"}}}]}
    (tmp_path / "s.json").write_text(json.dumps(good))
    assert runner.invoke(app, ["merge", str(tmp_path / "s.json"), "--out", str(out)]).exit_code == 0
    assert all(v.read_text() == "precious" for v in victims.values())
    assert all((out / n).is_file() and not (out / n).is_symlink() for n in victims)


@pytest.mark.parametrize("plant", ["symlink", "file"])
def test_a_model_folder_in_out_that_is_not_ours_is_refused(tmp_path, plant):
    (tmp_path / "m.toml").write_text('[[model]]\nmodel = "a.pt"\nname = "a"\n')
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    if plant == "symlink":
        (out / "a").symlink_to(outside, target_is_directory=True)
    else:
        (out / "a").write_text("not a folder")
    exit_2(runner.invoke(app, ["build-many", str(tmp_path / "m.toml"), "--out", str(out)]), "a")
    assert list(outside.iterdir()) == []


def test_one_build_many_per_out(tmp_path):
    (tmp_path / "m.toml").write_text('[[model]]\nmodel = "a.pt"\nname = "a"\n')
    out = tmp_path / "out"
    out.mkdir()
    from interop.fleet import LOCK

    with safe_io.folder_lock(out, LOCK, "build-many"):  # another run holds --out
        exit_2(runner.invoke(app, ["build-many", str(tmp_path / "m.toml"), "--out", str(out)]), "another build-many")
    assert not (out / "a").exists()
    (out / LOCK).unlink()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (out / LOCK).symlink_to(victim)
    exit_2(runner.invoke(app, ["build-many", str(tmp_path / "m.toml"), "--out", str(out)]), "lock")
    assert victim.read_text() == "precious"


# --- forged resume records ------------------------------------------------------------------------
def _resumable(tmp_path: Path) -> tuple[fleet_manifest.ModelEntry, Path, dict]:
    (tmp_path / "a.pt").write_bytes(b"weights")
    (tmp_path / "m.toml").write_text('[[model]]\nmodel = "a.pt"\ninputs = ["x:2x4"]\n')
    [entry] = fleet_manifest.load(tmp_path / "m.toml")
    folder = tmp_path / "out" / "a"
    folder.mkdir(parents=True)
    (folder / "a.onnx").write_bytes(b"onnx")
    (folder / "a.report.json").write_text(json.dumps({"model": {"source": entry.settings["model"]}, "settings": {}}))
    record = {"name": "a", "status": "passed", "hash": resume.content_hash(entry), "artifacts": ["a.onnx"],
              "report": "a.report.json", "artifact_sha256": {"a.onnx": resume.artifact_sha256(folder / "a.onnx")}}
    return entry, folder, record


def _forge(tmp_path: Path, folder: Path, record: dict, kind: str) -> dict:
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"someone else's")
    if kind == "climbs out":
        record["artifacts"] = ["../../outside.onnx"]
        record["artifact_sha256"] = {"../../outside.onnx": resume.artifact_sha256(outside)}
    elif kind == "artifact links out":
        (folder / "a.onnx").unlink()
        (folder / "a.onnx").symlink_to(outside)
        record["artifact_sha256"] = {"a.onnx": resume.artifact_sha256(outside)}
    elif kind == "report links out":
        (tmp_path / "other.report.json").write_text((folder / "a.report.json").read_text())
        record["report"] = "../../other.report.json"
    elif kind == "report of another model":
        (folder / "a.report.json").write_text(json.dumps({"model": {"source": str(tmp_path / "b.pt")}, "settings": {}}))
    elif kind == "report names other code":
        (folder / "a.report.json").write_text(json.dumps({"model": {"source": str(tmp_path / "a.pt")},
                                                          "settings": {"factory": "evil:make"}}))
    elif kind == "failed, relabelled":
        record["status"] = "timeout"
    elif kind == "wrong types":
        record["hash"], record["artifacts"] = 1, "a.onnx"
    elif kind == "deep":
        record["nested"] = json.loads("[" * 200 + "]" * 200)
    elif kind == "absolute artifact":
        record["artifacts"] = [str(outside)]
        record["artifact_sha256"] = {str(outside): resume.artifact_sha256(outside)}
    return record


FORGERIES = ["climbs out", "artifact links out", "report links out", "report of another model",
             "report names other code", "failed, relabelled", "wrong types", "deep", "absolute artifact"]


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_resume_records_are_rebuilt(tmp_path, kind):
    entry, folder, record = _resumable(tmp_path)
    (folder / resume.RECORD).write_text(json.dumps(record))
    assert resume.previous(folder, record["hash"], entry) == record  # the honest record is reusable
    (folder / resume.RECORD).write_text(json.dumps(_forge(tmp_path, folder, dict(record), kind)))
    assert resume.previous(folder, record["hash"], entry) is None


@pytest.mark.timeout(120)
def test_a_fifo_as_resume_record_is_never_opened(tmp_path):
    entry, folder, record = _resumable(tmp_path)
    _fifo(folder / resume.RECORD)
    assert resume.previous(folder, record["hash"], entry) is None
    (folder / resume.RECORD).unlink()
    (folder / resume.RECORD).write_text(json.dumps(record))
    (folder / "a.onnx").unlink()
    _fifo(folder / "a.onnx")  # an artifact that is a FIFO: not hashed (that would block), rebuilt
    assert resume.previous(folder, record["hash"], entry) is None


# --- one real run: a grandchild escaping with setsid, error text, a manifest tolerance ------------
@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet-attacks")
    pidfile = folder / "grandchild.pid"
    (folder / "m.toml").write_text(f'''[defaults]
targets = ["onnx"]
num_samples = 1
[[model]]
model = "tests.fleet_models:mlp_1"
inputs = ["x:2x4"]
[[model]]
model = "tests.security.attack_models:setsid_grandchild"
name = "escapee"
inputs = ["x:2x4"]
[[model]]
model = "tests.fleet_models:mlp_2"
name = "injected"
inputs = [{json.dumps(HOSTILE_ERROR)}]
[[model]]
model = "tests.fleet_models:mlp_3"
name = "loose"
inputs = ["x:2x4"]
tolerance = ["*:rel_l2=0.5"]
''')
    os.environ["INTEROP_TEST_PIDFILE"] = str(pidfile)
    try:
        result = runner.invoke(app, ["build-many", str(folder / "m.toml"), "--out", str(folder / "out"), "--jobs", "2"])
    finally:
        del os.environ["INTEROP_TEST_PIDFILE"]
    summary = json.loads((folder / "out" / "summary.json").read_text())
    return folder, result, {m["name"]: m for m in summary["models"]}, pidfile


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_grandchild_that_calls_setsid_is_killed(file_run):
    folder, result, models, pidfile = file_run
    assert models["escapee"]["status"] == "passed", models["escapee"]
    pid = int(pidfile.read_text())
    assert not _alive(pid), f"grandchild {pid} outlived build-many"


def test_error_text_is_escaped_in_every_summary(file_run):
    folder, result, models, _ = file_run
    assert models["injected"]["status"] == "failed"
    assert "PASSED" in models["injected"]["error"]["message"]  # the hostile text did reach the record
    check_outputs(folder / "out", result.output)


def test_a_manifest_tolerance_is_named_as_the_manifest_s(file_run):
    folder, _, models, _ = file_run
    assert models["loose"]["tolerance_source"] == "manifest"
    assert models["loose"]["warnings"] and "manifest" in models["loose"]["warnings"][0]
    assert "(tolerance from the manifest)" in (folder / "out" / "summary.md").read_text()
    report = json.loads((folder / "out" / "loose" / "mlp_3.report.json").read_text())
    assert report["settings_source"]["tolerance"] == "manifest"


def test_verify_does_not_apply_the_looser_tolerance_a_report_holds(file_run):
    """The report of the manifest's loose build: verify fails naming the tolerance unless its own
    command line repeats it (the build's own check then reproduces)."""
    folder, *_ = file_run
    report = str(folder / "out" / "loose" / "mlp_3.report.json")
    refused = runner.invoke(app, ["verify", report, "--trust", "--json"])
    data = json.loads(refused.stdout)
    assert refused.exit_code == 1 and not data["passed"]
    assert any("rel_l2=0.5" in w and "looser" in w for w in data["warnings"])
    repeated = runner.invoke(app, ["verify", report, "--trust", "--tolerance", "*:rel_l2=0.5", "--json"])
    assert repeated.exit_code == 0, repeated.output


def test_a_swapped_artifact_with_a_forged_record_is_rebuilt(file_run, tmp_path):
    """The record is rewritten to match a swapped artifact (weights changed, sha256 recomputed):
    resume.previous accepts it (the forgery is consistent), and the re-verification catches it."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    folder, *_ = file_run
    out = tmp_path / "out"
    shutil.copytree(folder / "out" / "mlp_1", out / "mlp_1", symlinks=True)
    path = out / "mlp_1" / "mlp_1.onnx"
    model = onnx.load(str(path))
    weight = model.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(3), weight.name))
    onnx.save(model, str(path))
    record = json.loads((out / "mlp_1" / resume.RECORD).read_text())
    record["artifact_sha256"]["mlp_1.onnx"] = resume.artifact_sha256(path)
    (out / "mlp_1" / resume.RECORD).write_text(json.dumps(record))
    (tmp_path / "m.toml").write_text('[defaults]\ntargets = ["onnx"]\nnum_samples = 1\n'
                                     '[[model]]\nmodel = "tests.fleet_models:mlp_1"\ninputs = ["x:2x4"]\n')
    [entry] = fleet_manifest.load(tmp_path / "m.toml")
    assert resume.previous(out / "mlp_1", resume.content_hash(entry), entry) is not None
    result = build_many(tmp_path / "m.toml", out, jobs=1, resume=True)
    [m] = result["models"]
    assert m["status"] == "passed" and not m.get("verified")  # rebuilt, not "resumed"
    assert resume.artifact_sha256(path) != record["artifact_sha256"]["mlp_1.onnx"]
