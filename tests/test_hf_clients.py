"""Hugging Face output folders in the clients that are not in interop's own environment, and
build-many over a folder of model folders (slow: each is several full builds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interop.cli import app
from tests import hf_folders

ROOT = Path(__file__).resolve().parents[1]
OPTIMUM_PYTHON = Path(os.environ.get("OPTIMUM_VENV", "/tmp/optimum-venv")) / "bin" / "python"
runner = CliRunner()


def _build(folder: Path, out: Path, *args: str) -> None:
    result = runner.invoke(app, ["build", str(folder), "--out", str(out), "--targets", "onnx", "--json", *args])
    assert result.exit_code == 0, result.stdout


def _optimum_ready() -> bool:
    if not OPTIMUM_PYTHON.exists():
        return False
    return subprocess.run([str(OPTIMUM_PYTHON), "-c", "import optimum.onnxruntime"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _optimum_ready(), reason=f"no Optimum venv at {OPTIMUM_PYTHON} (make optimum creates it)")
def test_every_kind_loads_in_optimum_and_agrees(tmp_path):
    """scripts/check_optimum.py in Optimum's own venv: sequence/token/image classification,
    feature extraction (from pytorch_model.bin), a causal LM with past (generated with and without
    the cache) and one built without past (--task default) load in ORTModelFor<Task> as they are
    and agree with transformers."""
    kinds = {"bert_classifier": (), "bert_token_classifier": (), "bert_base_bin": (), "vit_classifier": (),
             "llama_with_tokenizer": (), "llama_no_past": ("--task", "default")}
    outs = []
    for name, args in kinds.items():
        maker = "llama_with_tokenizer" if name == "llama_no_past" else name
        source = tmp_path / "src" / name
        getattr(hf_folders, maker)(source)
        _build(source, tmp_path / "out" / name, *args)
        outs.append(str(tmp_path / "out" / name))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_optimum.py"), *outs],
                          capture_output=True, text=True)
    lines = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith("{")]
    assert done.returncode == 0 and len(lines) == len(kinds), done.stdout + done.stderr
    assert all(r["loaded"] and r["passed"] for r in lines), lines
    lm = next(r for r in lines if r["folder"].endswith("llama_with_tokenizer"))
    assert lm["tokens_match_use_cache_True"] and lm["tokens_match_use_cache_False"] and lm["distinct_tokens"] > 2


@pytest.mark.slow
def test_build_many_over_a_folder_of_model_folders(tmp_path):
    zoo = tmp_path / "zoo"
    hf_folders.bert_classifier(zoo / "sentiment")
    hf_folders.bert_token_classifier(zoo / "tagger")
    (zoo / "notes").mkdir()  # neither a model folder nor an interop.toml: not a model
    out = tmp_path / "out"
    result = runner.invoke(app, ["build-many", str(zoo), "--out", str(out), "--jobs", "1", "--json"])
    summary = json.loads(result.stdout)
    assert result.exit_code == 0, summary
    assert sorted(m["name"] for m in summary["models"]) == ["sentiment", "tagger"]
    assert all(m["status"] == "passed" for m in summary["models"])
    assert (out / "sentiment" / "model.onnx").is_file() and (out / "tagger" / "config.json").is_file()
