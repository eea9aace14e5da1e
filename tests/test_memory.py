"""Peak memory of the ONNX target: at any moment it holds at most about two extra copies of the
weights (ONNX Runtime building a session: the parsed file and its own tensors), never the five or
six a plain export -> load -> name dims -> save -> simplify -> check chain holds. Measured in a
fresh process (Linux: the kernel's peak-RSS mark, re-armed once the libraries are imported and
the model is built)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")

CHILD = textwrap.dedent('''
    import json, sys, tempfile
    import torch, onnx, onnxruntime, onnxsim  # imported before the baseline, as a build needs them
    from torch import nn

    class Wide(nn.Module):  # an embedding table (onnxsim need not see it) and dense layers (it must)
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(int(24000 * float(sys.argv[2])), 512)
            self.layers = nn.Sequential(*[nn.Linear(512, 1024) if i % 2 == 0 else nn.Linear(1024, 512)
                                          for i in range(12)])

        def forward(self, ids):
            return self.layers(self.embed(ids)).mean(dim=1)

    torch.manual_seed(0)
    MODEL = Wide().eval()

    def wide():  # the factory hands over the model already in memory: it is part of the baseline
        return MODEL

    import interop.targets.onnx.weights as weights
    if sys.argv[1] == "plain":  # what the export does without onnx_weights: torch serializes the weights
        import contextlib
        weights.weights_apart = contextlib.contextmanager(lambda threshold=0: (yield weights.Held()))
    from interop import BuildConfig, build

    def status(key):
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))

    weight_bytes = sum(p.numel() * p.element_size() for p in MODEL.parameters())
    open("/proc/self/clear_refs", "w").write("5")
    base = status("VmRSS")
    with tempfile.TemporaryDirectory() as out:
        ids = f"ids:2x16:int64:0..{MODEL.embed.num_embeddings - 1}"
        report = build(BuildConfig(model="__main__:wide", inputs=[ids],
                                   dynamic=["ids:0=batch:1..4"], targets=["onnx"], out=out, num_samples=1))
    print(json.dumps({"passed": report.passed, "weights": weight_bytes, "extra": status("VmHWM") - base,
                      "simplified": report.data["targets"]["onnx"].get("simplified")}))
''')


def _measure(mode: str, scale: float = 1.0) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(scale)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


FIXED = 96 * 2**20  # ONNX Runtime's and onnxsim's first use (thread pools, arenas, schemas): ~80 MB here


def test_onnx_target_holds_at_most_two_extra_copies_of_the_weights():
    """A 70 MB model (already in memory: part of the baseline), targets onnx: export, ONNX Runtime
    verification of the export and of the simplified model, onnxsim, checker, both files written.
    Measured: 2.6x the weights above the baseline (1.5x plus the fixed cost); the same build with
    torch serializing the weights (the export as it was) takes 6x."""
    got = _measure("weightless")
    assert got["passed"] and got["simplified"]
    limit = 2 * got["weights"] + FIXED
    assert got["extra"] <= limit, f"{got['extra'] / 2**20:.0f} MB for {got['weights'] / 2**20:.0f} MB of weights"
