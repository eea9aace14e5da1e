"""fp16 vs ``--precision auto`` (fp32 islands) on the precision fixtures, side by side: the worst
logits / output error of each Core ML package against PyTorch, the ops kept in fp32, and the
package size. Usage: ``python -m scripts.precision_islands [MODEL ...]`` (names in
tests/fixtures/precision_models.py; the default: every Gemma-family decoder and the LayerNorm)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

GENERATION = ("tiny_loud_gemma", "loud_gemma", "loud_gemma2", "loud_gemma3", "loud_llama")
SINGLE = ("scaled_layernorm",)


def _build(model: str, precision: str, out: Path):
    from interop import BuildConfig, build

    kw = (dict(task="text-generation", max_context=48, decode_steps=16) if model in GENERATION
          else dict(inputs=["x:2x16"]))
    return build(BuildConfig(model=f"tests.fixtures.precision_models:{model}", targets=["coreml"],
                             out=str(out / precision), precision=precision, **kw))


def _worst_abs(report) -> float:
    rows = [g for g in report.data.get("generation", []) if g.get("runtime") == "interop-mil"] or \
           [a for a in report.data["agreement"] if a["target"] == "coreml"]
    return max(float(r.get("worst_max_abs", r.get("max_abs")) or 0.0) for r in rows)


def main(models: list[str]) -> None:
    print(f"{'model':18s} {'fp16 max_abs':>13s} {'auto max_abs':>13s} {'fp32 ops':>9s} {'share ops':>10s} "
          f"{'fp16 bytes':>11s} {'auto bytes':>11s} {'size ratio':>10s}")
    for model in models:
        with tempfile.TemporaryDirectory() as tmp:
            fp16 = _build(model, "fp16", Path(tmp))
            auto = _build(model, "auto", Path(tmp))
        islands = auto.data["targets"]["coreml"].get("fp32_islands", {})
        size = islands.get("bytes", {"fp16": 0, "islands": 0})
        ratio = size["islands"] / size["fp16"] if size["fp16"] else float("nan")
        print(f"{model:18s} {_worst_abs(fp16):13.4g} {_worst_abs(auto):13.4g} {len(islands.get('ops', [])):9d} "
              f"{islands.get('share', {}).get('ops', 0):10.1%} {size['fp16']:11d} {size['islands']:11d} {ratio:10.3f}"
              + ("" if auto.passed else "  (auto did not pass)"))


if __name__ == "__main__":
    main(sys.argv[1:] or [*GENERATION[:4], *SINGLE])
