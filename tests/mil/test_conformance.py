"""The reference runtime against coremltools' own op tests (a fast subset), and the plugin itself.

``scripts/coreml_conformance.py --subset fast`` runs two cases of every coremltools MIL op test
function (both precisions, every opset folder): ~370 cases, under a minute. The full suite
(~8.4k runnable ML-program cases, ~10 min) is run by hand with the same script (`make conformance`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "coreml_conformance.py"
MIN_PASS_RATE = 0.95
NEVER = ("unsupported", "kernel-error", "timeout")
"""Failure kinds the subset must not show at all: a missing kernel, a kernel that raises, a hang.
(What remains are value mismatches: fp32 cases whose fp16 inputs coremltools' expected values
ignore, and ops under repair; see docs/coreml-runtime.md.)"""

pytestmark = pytest.mark.conformance


def _run_script(tmp_path: Path, *args: str) -> dict:
    summary = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quiet", "--json", str(summary), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    broke = f"the conformance run broke (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert summary.exists() and proc.returncode in (0, 1), broke
    return json.loads(summary.read_text())


def test_fast_subset_of_coremltools_op_tests_passes(tmp_path):
    summary = _run_script(tmp_path, "--subset", "fast", "--precision", "both")
    failing = "\n".join(f"  {f['op']} ({f['kind']}, {f['count']}): {f['sample'][:200]}"
                        for f in summary["failing_ops"])
    assert summary["runnable_mlprogram"] >= 300, summary["totals"]
    assert summary["pass_rate"] >= MIN_PASS_RATE, f"pass rate {summary['pass_rate']:.3f}; failing ops:\n{failing}"
    crashes = {kind: n for kind, n in summary["kinds"].items() if kind in NEVER}
    assert not crashes, f"every op needs a kernel that runs: {crashes}\n{failing}"


# --- the plugin's bookkeeping, on hand-made cases whose outcome is known ----------------------

CASES = textwrap.dedent('''
    import numpy as np
    import pytest
    import coremltools as ct
    from coremltools.converters.mil.mil import Builder as mb, types
    from coremltools.converters.mil.mil.ops.tests.testing_utils import run_compare_builder
    from coremltools.converters.mil.testing_reqs import BackendConfig
    from interop.runtimes.mil import registry

    X = np.array([[-1.5, 0.0, 2.25]], dtype=np.float32)
    ML_PROGRAM = BackendConfig(backend="mlprogram", precision="fp32", opset_version=ct.target.iOS15)
    NEURAL_NETWORK = BackendConfig(backend="neuralnetwork", precision="fp32", opset_version=ct.target.iOS14)


    def _relu(backend, expected):
        run_compare_builder(lambda x: mb.relu(x=x), {"x": mb.placeholder(shape=X.shape)}, {"x": X},
                            expected_output_types=(1, 3, types.fp32),
                            expected_outputs=expected, backend=backend)


    @pytest.mark.parametrize("backend", [ML_PROGRAM, NEURAL_NETWORK], ids=["mlprogram", "nn"])
    def test_relu(backend):
        _relu(backend, np.maximum(X, 0))


    @pytest.mark.parametrize("backend", [ML_PROGRAM], ids=["mlprogram"])
    def test_wrong_expectation(backend):
        _relu(backend, np.maximum(X, 0) + 1)


    @pytest.mark.parametrize("backend", [ML_PROGRAM], ids=["mlprogram"])
    def test_missing_kernel(backend, monkeypatch):
        registry.implemented_ops()
        monkeypatch.delitem(registry.KERNELS, "relu")
        _relu(backend, np.maximum(X, 0))
''')


def test_plugin_classifies_outcomes(tmp_path):
    (tmp_path / "test_cases.py").write_text(CASES)
    record = tmp_path / "cases.jsonl"
    subprocess.run([sys.executable, "-m", "pytest", "-p", "interop.runtimes.mil.conformance_plugin",
                    "-p", "no:cacheprovider", "-q", "-o", "addopts=", f"--mil-record={record}", "--mil-precision=both",
                    str(tmp_path / "test_cases.py")], cwd=REPO, capture_output=True, timeout=300)
    kinds = {case["nodeid"].split("::")[-1]: case for case in map(json.loads, record.read_text().splitlines())}
    assert {name: case["kind"] for name, case in kinds.items()} == {
        "test_relu[mlprogram]": "passed",
        "test_relu[nn]": "skip-neuralnetwork",
        "test_wrong_expectation[mlprogram]": "mismatch",
        "test_missing_kernel[mlprogram]": "unsupported",
    }
    assert kinds["test_missing_kernel[mlprogram]"]["culprit"] == "relu"
    assert kinds["test_relu[mlprogram]"]["runtime_called"]
