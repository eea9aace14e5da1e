"""Foreign ONNX files: every item of tests/foreign_corpus.py (files written by torch.onnx's
TorchScript and dynamo exporters, onnx.helper and onnxruntime.quantization, never by interop),
then `interop build <file>.onnx`. Writes the "Foreign ONNX files" section of docs/coverage.md
(between its markers): per producer and opset, and per file.

    python scripts/foreign_onnx_coverage.py                       # the whole corpus
    python scripts/foreign_onnx_coverage.py --only cnn-torchscript11 unet-dynamo20
    python scripts/foreign_onnx_coverage.py --json results.json   # also the raw results
    python scripts/foreign_onnx_coverage.py --no-doc              # print only (e.g. a before/after run)
    python scripts/foreign_onnx_coverage.py --before old.json --reuse new.json --only A B
        # a before/after table against an earlier run's --json; --reuse takes the results of
        # items not re-run from a run of the same code (the section says which were re-run)
    python scripts/foreign_onnx_coverage.py --results after.json --reuse before.json --before before.json
        # the section from finished runs' --json files, nothing built
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.doc_sections import replace_section, run_worker  # noqa: E402

DOC = ROOT / "docs" / "coverage.md"
BEGIN, END = "<!-- foreign-onnx:begin -->", "<!-- foreign-onnx:end -->"
TIMEOUT = 900


def worker(name: str, folder: Path) -> dict[str, Any]:
    import warnings

    import torch

    from interop import build
    from interop.settings import BuildConfig
    from tests import foreign_corpus

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    item = foreign_corpus.BY_NAME[name]
    try:
        path = foreign_corpus.make(item, folder / "src")
    except Exception as exc:  # the producer itself failed: not interop's result
        return {"producer_error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}
    data = build(BuildConfig(model=str(path), out=str(folder / "out"))).data
    coreml = data["targets"]["coreml"]
    rows = [a for a in data["agreement"] if a["target"] == "coreml"]
    inputs = {i["name"]: sorted(i.get("dynamic", {})) for i in data["inputs"]}
    return {"opset": data["targets"]["onnx"].get("opset"), "conversion": data.get("conversion", {}),
            "normalisation": data.get("conversion", {}).get("normalisation"),
            "coreml": {"status": coreml["status"], "error": coreml.get("error"),
                       "shapes": _shapes(coreml),
                       "cases": sorted({a["case"] for a in rows}),
                       "worst": max((float(a["rel_l2"]) for a in rows), default=None)},
            "dynamic_inputs": inputs, "onnx_ok": data["targets"]["onnx"]["status"] == "ok",
            "passed": data["passed"]}


def _shapes(coreml: dict[str, Any]) -> str:
    """'fixed' when the package declares fixed shapes: the run-time-shape fallback of the build, or
    coremltools' own fallback from range / enumerated shapes."""
    if coreml.get("declared_shapes") == "fixed" or (coreml.get("shapes") or {}).get("mode") == "fixed":
        return "fixed"
    return "flexible"


def run(name: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="interop-foreign-") as tmp:
        result, why = run_worker("scripts.foreign_onnx_coverage", f"worker({name!r}, Path({tmp!r}))", TIMEOUT)
    return result if result is not None else {"error": why}


def converts(r: dict[str, Any]) -> bool:
    return r.get("coreml", {}).get("status") == "ok"


def row(name: str, item: Any, r: dict[str, Any]) -> str:
    head = f"| {name} | {item.producer} | {item.opset} |"
    if "producer_error" in r:
        return f"{head} — | — | (the producer failed: {r['producer_error']}) |"
    if "error" in r:
        return f"{head} — | — | ✗ {r['error']} |"
    norm = r.get("normalisation") or {}
    norm_text = norm.get("kept") or "—"
    c = r["coreml"]
    if c["status"] == "ok":
        coreml = f"✓ {c['shapes']} shapes, {len(c['cases'])} case(s), worst rel_l2 {c['worst']:.0e}"
    else:
        coreml = f"✗ {c['status']}: {(c['error'] or '')[:160]}".replace("|", "/")
    return f"{head} {'✓' if r['onnx_ok'] else '✗'} | {norm_text} | {coreml} |"


def category(item: Any) -> str:
    """The category a corpus item counts under in the before/after table."""
    if item.producer in ("qdq", "qdyn"):
        return "quantized (onnxruntime.quantization)"
    if item.producer == "onnx.helper":
        return "onnx.helper: Resize" if item.model.startswith("resize-") else "onnx.helper: other"
    return f"{item.producer} {item.model}"


def before_after(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    """Per category: files built and agreeing (flexible shapes) before and after."""
    from tests.foreign_corpus import BY_NAME

    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for idx, results in ((0, before), (3, after)):
        for name, r in results.items():
            if "producer_error" in r or name not in BY_NAME:
                continue
            c = counts[category(BY_NAME[name])]
            c[idx] += 1
            c[idx + 1] += converts(r)
            c[idx + 2] += converts(r) and r["coreml"]["shapes"] != "fixed"
    lines = ["| category | before: agreeing / files (flexible) | after: agreeing / files (flexible) |",
             "|---|---|---|"]
    total = [0] * 6
    for cat in sorted(counts):
        c = counts[cat]
        total = [a + b for a, b in zip(total, c)]
        lines.append(f"| {cat} | {c[1]}/{c[0]} ({c[2]}) | {c[4]}/{c[3]} ({c[5]}) |")
    lines.append(f"| **all** | **{total[1]}/{total[0]} ({total[2]})** | **{total[4]}/{total[3]} ({total[5]})** |")
    return lines


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    from tests.foreign_corpus import BY_NAME

    groups: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for name, r in results.items():
        if "producer_error" in r:
            continue
        item = BY_NAME[name]
        groups[(item.producer, str(item.opset))].append(converts(r))
    lines = ["| producer | opset | Core ML built and agreeing |", "|---|---|---|"]
    for (producer, opset), oks in sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
        lines.append(f"| {producer} | {opset} | {sum(oks)}/{len(oks)} |")
    return lines


def main() -> None:
    from tests.foreign_corpus import BY_NAME, CORPUS

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--json")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--before", help="an earlier run's --json: adds the before/after table")
    parser.add_argument("--reuse", help="results (a --json of this code) for the items not in --only")
    parser.add_argument("--results", help="a --json of a finished run: write the section from it, run nothing")
    args = parser.parse_args()
    names = args.only or [i.name for i in CORPUS]
    results: dict[str, dict[str, Any]] = {}
    reused = json.loads(Path(args.reuse).read_text()) if args.reuse else {}
    done = json.loads(Path(args.results).read_text()) if args.results else None
    if done is not None:
        names = [n for n in names if n in done] if args.only else list(done)
    for name in names:
        results[name] = done[name] if done is not None else run(name)
        print(row(name, BY_NAME[name], results[name]), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    rerun = list(results)
    for item in CORPUS:
        if item.name not in results and item.name in reused:
            results[item.name] = reused[item.name]
    results = {i.name: results[i.name] for i in CORPUS if i.name in results}
    made = [r for r in results.values() if "producer_error" not in r]
    ok = sum(1 for r in made if converts(r))
    flexible = sum(1 for r in made if converts(r) and r["coreml"]["shapes"] != "fixed")
    print(f"Core ML built and agreeing: {ok}/{len(made)} ({flexible} with flexible shapes)")
    if args.no_doc:
        return
    section = [BEGIN, "## Foreign ONNX files", "",
               "Generated by `python scripts/foreign_onnx_coverage.py` over `tests/foreign_corpus.py`: ONNX files "
               "written by other tools (torch.onnx's TorchScript exporter at opsets 11-17, with and without constant "
               "folding and with initializers as inputs; its dynamo exporter at opsets 18-23; onnx.helper graphs; "
               "QDQ models from onnxruntime.quantization.quantize_static), each built with `interop build FILE.onnx` "
               "and no other flag. The reference is ONNX Runtime on the file. 'normalised' says which graph "
               "normalisation (sources/onnx_normalise.py) was kept, each only where ONNX Runtime agreed with the "
               "file.", "",
               f"Core ML built and agreeing: {ok}/{len(made)} ({flexible} with flexible shapes).", ""]
    if args.before:
        before = json.loads(Path(args.before).read_text())
        section += ["Before and after (files whose producer itself failed are not counted; 'flexible': the "
                    "package keeps the file's dynamic batch axis):", "", *before_after(before, results), ""]
        if reused and len(rerun) < len(results):
            section += [f"The after column re-ran {len(rerun)} files (every file that failed or was fixed-shape "
                        f"before, every new file, and a spot check of passing ones); the other "
                        f"{len(results) - len(rerun)} are the before run's results.", ""]
    section += [*table(results), "",
               "| file | producer | opset | ONNX | normalised | Core ML |", "|---|---|---|---|---|---|"]
    section += [row(n, BY_NAME[n], r) for n, r in results.items()] + ["", END]
    replace_section(DOC, BEGIN, END, "\n".join(section))


if __name__ == "__main__":
    main()
