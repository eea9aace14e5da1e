"""The layers are an executable contract (pyproject.toml [tool.importlinter], docs/architecture.md):
every import points down, counting the imports inside functions (grimp sees those too), and no
import cycle at all. Also: nothing imports the facade, the registry packages sit low, no module
outside ``targets/<name>/`` imports that target, and ``import interop.cli`` loads no heavy library.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"
REGISTRIES = {"interop.targets", "interop.sources", "interop.variants", "interop.tasks"}
# the text-generation task exports its ONNX forms with the ONNX target's weightless export
# the text-generation build still exports and converts its KV-cache forms itself (to move into the
# target folders); every other module reaches a target through the registry only
OUTSIDE_ALLOWED = {("interop.generation.export", "interop.targets.onnx"),
                   ("interop.generation.export", "interop.targets.coreml"),
                   ("interop.generation.verify", "interop.targets.coreml"),
                   ("interop.generation.precision", "interop.targets.coreml")}
HEAVY = ("torch", "coremltools", "onnx", "onnxruntime")


def layers() -> list[list[str]]:
    contract = tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]["contracts"][0]
    return [[m.strip() for m in entry.replace("|", ":").split(":")] for entry in contract["layers"]]


def layer_of(module: str, order: list[list[str]]) -> int | None:
    """Index counted from the top (0 = cli); None: in no layer."""
    for i, names in enumerate(order):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return None


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("interop", cache_dir=None)


def _grimp_layers(order: list[list[str]], contract: list[str]) -> list[grimp.Layer]:
    return [grimp.Layer(*names, independent="|" in raw) for names, raw in zip(order, contract)]


def _illegal(graph) -> set:
    contract = tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    return graph.find_illegal_dependencies_for_layers(layers=_grimp_layers(layers(), contract))


def test_lint_imports_keeps_the_layers_contract():
    from importlinter.application.use_cases import lint_imports
    from importlinter.configuration import configure

    configure()
    assert lint_imports(config_filename=str(CONFIG), cache_dir=None, no_logo=True)


def test_an_upward_import_breaks_the_contract(graph):
    assert _illegal(graph) == set()
    graph.add_import(importer="interop.errors", imported="interop.commands.bench")  # errors -> a command
    try:
        broken = _illegal(graph)
        assert {(d.importer, d.imported) for d in broken} == {("interop.errors", "interop.commands")}
    finally:
        graph.remove_import(importer="interop.errors", imported="interop.commands.bench")


def strongly_connected(graph) -> list[set[str]]:
    """Tarjan's components of more than one module, over every import grimp found."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for nxt in graph.find_modules_directly_imported_by(node):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            comp = set()
            while True:
                m = stack.pop()
                on.discard(m)
                comp.add(m)
                if m == node:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_import_cycle_counting_function_bodies(graph):
    assert graph.direct_import_exists(importer="interop.stages.front", imported="interop.stages.prepare")  # in a def
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_one(graph):
    graph.add_import(importer="interop.errors", imported="interop.cli")
    try:
        (cycle,) = [c for c in strongly_connected(graph) if "interop.errors" in c]
        assert "interop.cli" in cycle
    finally:
        graph.remove_import(importer="interop.errors", imported="interop.cli")


def test_every_module_is_in_a_layer(graph):
    order = layers()
    empty_packages = {m for m in graph.modules if (ROOT / m.replace(".", "/") / "__init__.py").exists()
                      and not graph.find_modules_directly_imported_by(m)}
    loose = sorted(m for m in graph.modules
                   if layer_of(m, order) is None and m not in REGISTRIES | {"interop"} | empty_packages)
    assert loose == []


def test_registry_packages_import_only_the_layers_below_settings(graph):
    order = layers()
    floor = layer_of("interop.settings", order)
    for registry in REGISTRIES:
        for imported in graph.find_modules_directly_imported_by(registry) - REGISTRIES:  # variants asks targets
            assert layer_of(imported, order) > floor, f"{registry} imports {imported}"


def test_nothing_imports_the_facade(graph):
    assert graph.find_modules_that_directly_import("interop") == set()


def test_no_module_outside_a_target_folder_imports_it(graph):
    offenders = set()
    for name in ("onnx", "coreml", "coreai"):
        folder = f"interop.targets.{name}"
        for module in graph.find_descendants(folder) | {folder}:
            for importer in graph.find_modules_that_directly_import(module):
                if not (importer == folder or importer.startswith(folder + ".")):
                    offenders.add((importer, folder))
    assert offenders == OUTSIDE_ALLOWED


def test_the_cli_loads_no_heavy_library():
    code = (f"import json, sys; import interop.cli; print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == []
    helped = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['interop', '--help']\n"
                             "from interop.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
                             f"import json; print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(helped.stdout.splitlines()[-1]) == [], helped.stdout
