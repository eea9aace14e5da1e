"""Shared fixtures: sample models, built once per session into a temporary folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def built_lstm(tmp_path_factory):
    """`interop build samples/lstm_sum.pt` once; returns (out folder, report dict)."""
    from interop import BuildConfig, build

    out = tmp_path_factory.mktemp("lstm")
    report = build(BuildConfig(model=str(SAMPLES / "lstm_sum.pt"), out=str(out)))
    return out, report


@pytest.fixture
def sample_copy(tmp_path):
    """Copy a committed sample into a private folder (so builds beside it are isolated)."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copy(SAMPLES / name, dst)
        return dst

    return copy
