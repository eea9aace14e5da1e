"""Zip bombs that really inflate (deflated zeros, about 3 MB on disk, GiBs inflated), at the top
of a torch.save archive or inside a zip stored in it: refused from the central directories, before
any member is inflated, with the memory of a small model load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.security import crafted

_CHILD = r"""
import json, resource, sys
from interop.errors import InteropError
from interop.sources.torch_files import load_source
import torch  # imported before the baseline: the growth measured is the loading's own
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_source(sys.argv[1])
    message = None
except InteropError as exc:
    message = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"message": message, "growth_mib": (after - before) / 1024}))
"""


def _module_pickle(path: Path) -> Path:
    import torch

    torch.save(torch.nn.Linear(3, 2), path)  # a whole module: weights_only refuses, the scan runs
    return path


@pytest.mark.parametrize("nested, size", [(False, 900 << 20), (True, 3 << 30)], ids=["member", "nested-zip"])
def test_a_real_zip_bomb_is_refused_without_inflating(tmp_path, nested, size):
    # 900 MiB stays under the archive-total rule (1 GiB): the compressed-member rule refuses it
    bomb = crafted.deflate_bomb(_module_pickle(tmp_path / "m.pt"), tmp_path / "bomb.pt", size, nested=nested)
    assert bomb.stat().st_size < 4 << 20  # a small file ...
    done = subprocess.run([sys.executable, "-c", _CHILD, str(bomb)], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["message"] and "zip bomb" in result["message"], result
    assert result["growth_mib"] < 256, result  # ... refused before its 3 GiB are inflated


def test_a_compressed_member_below_the_bound_still_loads(tmp_path):
    from interop.trust import check_zip

    bomb = crafted.deflate_bomb(_module_pickle(tmp_path / "m.pt"), tmp_path / "ok.pt", 64 << 20)
    check_zip(bomb)  # 64 MiB of zeros is highly compressed but within the bound
