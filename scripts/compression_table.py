#!/usr/bin/env python
"""Size ratio vs fidelity of every compressed variant, per zoo model: the table in docs/compression.md.

Builds each model of the test zoo (tests/zoo.py: real architectures, small configs, seeded random
weights; no downloads) with every ``--compress`` variant and prints one Markdown row per (model,
target, variant) from the build's report: size, ratio to the base artifact, PSNR / cosine / top-1
against PyTorch fp32, whether it passed its gate and, when not, where the error grows. The
``int8-static`` variants are calibrated on seeded samples drawn with another seed than the ones
they are judged on.

    scripts/compression_table.py                       # cnn, bert, lstm, gpt2; print the table
    scripts/compression_table.py cnn --variants int8,int4
    scripts/compression_table.py --write docs/compression.md   # replace the table between the markers
    scripts/compression_table.py vit --results /tmp/rows          # also save vit's rows as /tmp/rows/vit.json
    scripts/compression_table.py --results /tmp/rows --reuse --write docs/compression.md  # table from saved rows

``weight bytes`` is the variant's stored constants (initializers, Core ML weight blobs) over the
fp32 base artifact's (``coverage.stored_ratio``); ``ratio`` the whole artifact's size over the base's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = ("cnn", "resnet", "mobilenet_v2", "bert", "vit", "lstm")
BEGIN, END = "<!-- compression-table:begin -->", "<!-- compression-table:end -->"
CALIBRATION_SEED = 4242


def calibration_file(entry, folder: Path, count: int = 4) -> Path:
    """``count`` seeded samples of the model's example case, stacked on a leading axis."""
    from interop.stages.samples import draw
    from interop.stages.spec import InputSpec, cases

    spec = InputSpec.from_json(entry.spec_json())
    samples = draw(spec, cases(spec)[0], CALIBRATION_SEED, count)
    path = folder / f"{entry.name}.calibration.npz"
    np.savez(path, **{n: np.stack([s[n] for s in samples]) for n in samples[0]})
    return path


def rows_for(name: str, variants: list[str], folder: Path) -> list[dict]:
    from interop import build
    from interop.support.quiet import captured
    from tests import zoo

    entry = zoo.ZOO[name]
    config = entry.config(out=str(folder / name), compress=variants, allow_trace_warnings=True,
                          calibration=str(calibration_file(entry, folder)) if "int8-static" in variants else None)
    with captured():
        report = build(config)
    params = report.data["model"]["parameters"]
    return [{"model": name, "parameters": params, **r} for r in report.data["variants"]]


def _num(v, fmt: str) -> str:
    return "—" if v is None or isinstance(v, str) else format(v, fmt)


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def table(rows: list[dict]) -> str:
    from interop.variants.coverage import describe

    lines = ["| model | target | variant | size KB | ratio | weight bytes | coverage | PSNR dB | cosine | top-1 | passed | "
             "where / note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        passed = {True: "yes", False: "**no**", None: "skipped"}[r["passed"]]
        if r.get("status") == "not-applicable":
            passed = "not applicable"
        why = r.get("where") or r.get("error") or r.get("note") or ""
        if (r.get("recipe") or {}).get("kept") and r["passed"]:
            why = f"recipe kept {', '.join(r['recipe']['kept'])} at {r['recipe'].get('kept_as', '8 bits')}" + \
                  (f"; {why}" if why else "")
        if len((r.get("block_fallback") or {}).get("tried", [])) > 1:
            blocks = ", ".join(f"{t['block']}: {t['psnr_db']} dB" for t in r["block_fallback"]["tried"])
            why = f"block {r['block_fallback'].get('block_size')} (tried {blocks})" + (f"; {why}" if why else "")
        lines.append(f"| {r['model']} | {r['target']} | {r['variant']} | {_num((r['bytes'] or 0) / 1024 if r['bytes'] else None, '.1f')} | "
                     f"{_num(r['ratio'], '.3f')} | {_pct((r.get('coverage') or {}).get('stored_ratio'))} | {describe(r.get('coverage')) or '—'} | {_num(r['psnr_db'], '.1f')} | "
                     f"{_num(r['cosine'], '.5f')} | {_num(r['top1'], '.2f')} | {passed} | {why.replace('|', '/')} |")
    return "\n".join(lines)


def write(doc: Path, text: str) -> None:
    content = doc.read_text()
    if BEGIN not in content or END not in content:
        sys.exit(f"{doc} has no {BEGIN} ... {END} markers")
    head, _, rest = content.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main() -> int:
    from interop.variants import KNOWN

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--variants", default=",".join(KNOWN))
    parser.add_argument("--write", help="Markdown file whose table (between the markers) is replaced")
    parser.add_argument("--results", help="folder where each model's rows are saved as <model>.json")
    parser.add_argument("--reuse", action="store_true", help="take a model's rows from --results when saved there")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    saved = Path(args.results) if args.results else None
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="interop-compression-") as tmp:
        for name in args.models:
            cached = saved / f"{name}.json" if saved else None
            if args.reuse and cached and cached.is_file():
                rows += json.loads(cached.read_text())
                continue
            print(f"building {name} ...", file=sys.stderr)
            found = rows_for(name, variants, Path(tmp))
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(found, indent=1, default=str))
            rows += found
    text = table(rows)
    print(text)
    if args.write:
        write(Path(args.write), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
