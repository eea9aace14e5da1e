"""No code outside ``interop/targets/<name>/`` branches on a target's name: a target's behaviour
is a property or hook of the Target (interop/targets/base.py), so a new target is one folder.

Every string literal equal to a built-in target's name (``"onnx"``, ``"coreml"``, ``"coreai"``)
outside the target folders is an offender -- compared, a dict key, an argument -- except docstrings
and the spots in ``ALLOWED`` below, each with its reason (they name a file format, a Python
distribution, or a task whose forms are fixed to two targets)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("onnx", "coreml", "coreai")
# (file, name) -> (occurrences allowed, why)
ALLOWED: dict[tuple[str, str], tuple[int, str]] = {
    ("interop/sources/kinds.py", "onnx"): (2, "the .onnx source kind is named after its file format, not the target"),
    ("interop/sources/onnx_file.py", "onnx"): (1, "an ONNX source's format (the source kind's name)"),
    # the text-generation task builds its own KV-cache forms of exactly these two targets (prefill +
    # decode ONNX for onnxruntime-genai, a stateful Core ML package); its report rows are keyed by them
    ("interop/generation/build.py", "onnx"): (3, "text-generation: its ONNX form"),
    ("interop/generation/build.py", "coreml"): (3, "text-generation: its Core ML form"),
    ("interop/generation/verify.py", "onnx"): (2, "text-generation: rows of its ONNX form"),
    ("interop/generation/verify.py", "coreml"): (7, "text-generation: rows of its Core ML form"),
    ("interop/generation/precision.py", "coreml"): (5, "text-generation: the Core ML form's fp16 islands"),
    ("interop/variants/generation.py", "onnx"): (3, "text-generation: variants of its ONNX form"),
}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def name_literals(root: Path = ROOT / "interop") -> dict[tuple[str, str], list[int]]:
    """(file, target name) -> lines where that name is a string literal, outside target folders."""
    found: dict[tuple[str, str], list[int]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if any(rel.startswith(f"interop/targets/{n}/") for n in NAMES):
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in NAMES and id(node) not in docs:
                found.setdefault((rel, node.value), []).append(node.lineno)
    return found


def test_no_code_outside_a_target_folder_names_a_target():
    found = name_literals()
    offenders = {k: v for k, v in found.items() if len(v) > ALLOWED.get(k, (0, ""))[0]}
    assert offenders == {}, "branch on a Target property or hook instead (interop/targets/base.py)"
    stale = {k for k in ALLOWED if k not in found}
    assert stale == set(), "an allowed spot is gone: drop it from ALLOWED"


def test_the_scan_finds_a_branch_on_a_name(tmp_path):
    pkg = tmp_path / "interop"
    (pkg / "targets" / "onnx").mkdir(parents=True)
    (pkg / "report.py").write_text('"""doc naming "onnx" is fine."""\nif target == "coreml":\n    pass\n')
    (pkg / "targets" / "onnx" / "plugin.py").write_text('name = "onnx"\n')
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert name_literals(pkg) == {("interop/report.py", "coreml"): [2]}
    finally:
        ROOT = saved
