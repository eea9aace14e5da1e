"""The house's plugin seams and import structure.

* A third target, defined and registered in this file alone (a Linear model's weights in an .npz,
  executed with numpy), goes through ``build``, the report, ``verify`` and ``bench`` with no edit
  anywhere else.
* Registering a target name twice is an error.
* The package's module-level imports have no cycle.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from interop.cli import app
from interop.targets.base import Target, TargetContext, TargetResult

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
MODEL = "tests.fixtures.models:three_layers"  # Linear -> tanh -> Linear -> relu -> Linear


class NumpyTarget(Target):
    """The model's Linear weights in an .npz; numpy runs them (tanh, relu between)."""

    name = "numpy-test"
    suffix = ".npz"
    stage = "saving the weights for numpy"

    def build(self, ctx: TargetContext) -> TargetResult:
        from interop.compare import diffs

        module = ctx.source.module
        path = ctx.work / f"{ctx.stem}{self.suffix}"
        np.savez(path, **{k: v.detach().numpy() for k, v in module.state_dict().items()})
        (runtime, got, problem), = self.execute(path, ctx.spec, ctx.prep.ref, ctx.prep.names)
        rows = diffs(self.name, runtime, ctx.prep.ref, got, ctx.prep.names, "fp32", ctx.config.tolerance)
        return TargetResult(path, {"arrays": len(module.state_dict())}, rows)

    def execute(self, path, spec, ref, names, labels=None, image=None):
        from interop.stages.agreement import run_cases

        w = dict(np.load(path))

        def run(sample):
            h = np.tanh(sample["x"] @ w["fc1.weight"].T + w["fc1.bias"])
            h = np.maximum(h @ w["fc2.weight"].T + w["fc2.bias"], 0)
            return [(h @ w["fc3.weight"].T + w["fc3.bias"]).astype(np.float32)]

        yield "numpy", run_cases(run, ref), None

    def bench(self, path, spec, sample, warmup, runs, slow_runs, threads, **options):
        from interop.support.timing import measure

        w = dict(np.load(path))
        return {"numpy": measure(lambda: np.tanh(sample["x"] @ w["fc1.weight"].T), warmup, runs).to_json()}


@pytest.fixture
def numpy_target():
    from interop import targets

    targets.register_target(NumpyTarget)
    yield targets.get("numpy-test")
    targets.unregister_target("numpy-test")


def test_a_third_target_needs_no_edit_outside_its_file(numpy_target, tmp_path):
    built = runner.invoke(app, ["build", MODEL, "--input", "x:2x6", "--dynamic", "x:0=batch:1..4",
                                "--targets", "onnx,numpy-test", "--out", str(tmp_path), "--json"])
    assert built.exit_code == 0, built.output
    report = json.loads(built.stdout)
    entry = report["targets"]["numpy-test"]
    assert entry["status"] == "ok" and entry["shipped"] and entry["executed_by"] == ["numpy"]
    assert Path(entry["path"]) == tmp_path / "three_layers.npz" and Path(entry["path"]).exists()
    rows = [a for a in report["agreement"] if a["target"] == "numpy-test"]
    assert {a["case"] for a in rows} == {c["name"] for c in report["cases"]} and all(a["passed"] for a in rows)
    assert report["settings"]["targets"] == ["onnx", "numpy-test"]

    report_path = str(tmp_path / "three_layers.report.json")
    verified = runner.invoke(app, ["verify", report_path, "--trust", "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["targets"]["numpy-test"]["executed_by"] == ["numpy"]

    timed = runner.invoke(app, ["bench", report_path, "--runs", "3", "--warmup", "0", "--no-unsimplified", "--json"])
    assert timed.exit_code == 0, timed.output
    assert json.loads(timed.stdout)["numpy-test"]["numpy"]["runs"] == 3

    # verify executes the artifact: changed weights are caught, on that target only
    np.savez(entry["path"], **{k: v * 1.5 for k, v in np.load(entry["path"]).items()})
    bad = json.loads(runner.invoke(app, ["verify", report_path, "--trust", "--json"]).stdout)
    assert bad["targets"]["numpy-test"]["status"] == "disagrees" and bad["targets"]["onnx"]["status"] == "ok"


def test_registering_a_name_twice_is_an_error(numpy_target):
    from interop import targets

    with pytest.raises(targets.RegistrationError, match="already registered"):
        targets.register_target(NumpyTarget)

    class Impostor(NumpyTarget):
        name = "onnx"

    with pytest.raises(targets.RegistrationError, match="already registered"):
        targets.register_target(Impostor)
    assert type(targets.get("onnx")).__name__ == "OnnxTarget"


def test_an_unknown_target_is_exit_2_naming_the_registered_ones():
    result = runner.invoke(app, ["check", MODEL, "--input", "x:2x6", "--targets", "numpy-test"])
    assert result.exit_code == 2 and "unknown target" in result.stderr and "onnx" in result.stderr


# --- imports --------------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """interop modules ``path`` imports when it is imported: module-level statements (including
    those in module-level try / if blocks, except ``if TYPE_CHECKING``), not function bodies."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])

    visit(ast.parse(path.read_text()).body)
    edges = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.add(target)
            parent = target.rpartition(".")[0]
            while parent:  # importing a submodule imports its packages first
                if parent != name and not name.startswith(parent + "."):
                    edges.add(parent)
                parent = parent.rpartition(".")[0]
    return edges


def import_graph() -> dict[str, set[str]]:
    paths = sorted((ROOT / "interop").rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): top_level_imports(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_module_level_imports_have_no_cycle():
    graph = import_graph()
    assert len(graph) > 60
    assert "interop.settings" in graph["interop.stages.pipeline"]  # the walk sees real edges
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


# --- third-party patches ---------------------------------------------------------------------------


def test_doctor_lists_every_declared_patch():
    from interop import patches

    info = json.loads(runner.invoke(app, ["doctor", "--json"]).stdout)
    listed = {p["name"]: p for p in info["patches"]}
    assert set(listed) == {p.name for p in patches.PATCHES}
    for name in ("typer-help-flag", "coremltools-torch-ops", "coremltools-fp16-overflow-check",
                 "torch-onnx-export-params"):
        entry = listed[name]
        assert entry["reason"] and entry["scope"] and entry["checked_against"].split()[0] == entry["library"]
        assert entry["installed"] and (ROOT / entry["where"].split(":")[0].split(" ")[0]).exists()


def test_core_ml_patches_are_undone_after_the_conversion():
    """In a fresh process (in this one, other tests install the translations for good)."""
    import subprocess
    import sys

    code = """
import json
from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY as r
from coremltools.converters.mil.mil.passes.defs.quantization import FP16ComputePrecision as F
from interop import patches
before = dict(r.name_to_func_mapping), F.__dict__["fp16_overflow"]
with patches.applied(*patches.COREML_CONVERSION):
    during = [r.get_func(n).__module__ for n in ("diff", "new_ones", "permute")], F.__dict__["fp16_overflow"] is before[1]
    with patches.applied(*patches.COREML_CONVERSION):  # nested: left to the outer block
        pass
    nested = r.get_func("diff") is not None
after = dict(r.name_to_func_mapping) == before[0], F.__dict__["fp16_overflow"] is before[1]
print(json.dumps([before[0].get("diff") is None, during, nested, after]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    absent, (modules, same_check), nested, (registry_back, check_back) = json.loads(done.stdout.splitlines()[-1])
    assert absent and modules == ["interop.targets.coreml.ops"] * 3 and not same_check and nested
    assert registry_back and check_back


def test_only_interop_patches_changes_third_party_internals():
    """The assignments that patch torch / coremltools / typer live in interop/patches.py and the
    implementations it names (a target's patches.py); onnx/weights.py and coreml/ops.py hand their
    replacements to patches.swap / swapped."""
    markers = ("_export_onnx =", "fp16_overflow =", "process_value =", "set_func_by_name(", "register_torch_op(",
               "_group_norm_impl =")
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in (ROOT / "interop").rglob("*.py")
                 if p.name not in ("patches.py", "conformance_plugin.py") for m in markers if m in p.read_text()]
    assert offenders == []


# --- model sources -----------------------------------------------------------------------------------


def test_a_source_kind_registered_here_alone_feeds_the_build(tmp_path):
    from interop import BuildConfig, build, sources
    from interop.sources.torch_files import Source

    class ZooSource(sources.SourceKind):
        name = "test-zoo"
        formats = {"test-zoo": True}

        def claims(self, model):
            return model.startswith("zoo:")

        def load(self, model, factory, trust):
            from tests.fixtures.models import three_layers

            return Source(three_layers(), "test-zoo", model, forward_names=["x"])

    sources.register_source(ZooSource)
    try:
        with pytest.raises(sources.RegistrationError, match="already registered"):
            sources.register_source(ZooSource)
        assert sources.for_model("zoo:three").name == "test-zoo"
        assert sources.for_model("model.onnx").name == "onnx" and sources.for_model("m.pt").name == "pytorch"
        assert sources.runs_code("test-zoo") and sources.runs_code("pickle") and not sources.runs_code("torchscript")
        report = build(BuildConfig(model="zoo:three", inputs=["x:2x6"], targets=["onnx"], out=str(tmp_path)))
        assert report.passed and report.data["model"]["format"] == "test-zoo"
    finally:
        sources.unregister_source("test-zoo")
