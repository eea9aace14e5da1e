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
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = ("cnn", "bert", "lstm", "gpt2")
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


def table(rows: list[dict]) -> str:
    from interop.variants.coverage import describe

    lines = ["| model | target | variant | size KB | ratio | coverage | PSNR dB | cosine | top-1 | passed | where / note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        passed = {True: "yes", False: "**no**", None: "skipped"}[r["passed"]]
        if r.get("status") == "not-applicable":
            passed = "not applicable"
        why = r.get("where") or r.get("error") or r.get("note") or ""
        if (r.get("recipe") or {}).get("kept") and r["passed"]:
            why = f"recipe kept {', '.join(r['recipe']['kept'])} at {r['recipe'].get('kept_as', '8 bits')}" + \
                  (f"; {why}" if why else "")
        lines.append(f"| {r['model']} | {r['target']} | {r['variant']} | {_num((r['bytes'] or 0) / 1024 if r['bytes'] else None, '.1f')} | "
                     f"{_num(r['ratio'], '.3f')} | {describe(r.get('coverage')) or '—'} | {_num(r['psnr_db'], '.1f')} | "
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
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="interop-compression-") as tmp:
        for name in args.models:
            print(f"building {name} ...", file=sys.stderr)
            rows += rows_for(name, variants, Path(tmp))
    text = table(rows)
    print(text)
    if args.write:
        write(Path(args.write), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
