#!/usr/bin/env python
"""Build time and peak memory of `interop build` as the model grows, up to BERT-base (~110M
parameters); writes the table into docs/performance.md.

The models are BERT encoders with a classification head from ``transformers`` configs, random
weights (no downloads) at BERT's own initializer range (0.02), in the sizes of Google's BERT
miniatures up to BERT-base (vocabulary 30522). (With ten times larger random weights, 0.2 as in
tests/zoo.py, Core ML's fp16 misses the fp16 tolerance from bert-mini up: rel_l2 1.0-1.2e-2 against
1e-2, first departing at an attention softmax -- a precision matter, reported by the build itself.)
Each is built by the real CLI in its own process (``interop build scripts.scaling:<name>``, both
targets, all checks) with a dynamic batch and sequence axis. Measured per build: wall and CPU
(user+sys) time, the per-target seconds from the report, and memory two ways -- the peak RSS of
the largest process (``ru_maxrss`` from ``wait4``) and the peak of the summed RSS of the whole
process tree, polled every 50 ms from /proc (shared pages counted once per process, so this
over-counts forked workers; it never under-counts).

    python scripts/scaling.py                 # all sizes, writes docs/performance.md
    python scripts/scaling.py --sizes tiny,mini --no-write

The doc's table sits between ``<!-- scaling:begin -->`` and ``<!-- scaling:end -->``; the rest of
docs/performance.md is left as it is (the file is created when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INTEROP = Path(sys.executable).parent / "interop"
DOC = REPO / "docs" / "performance.md"
BEGIN, END = "<!-- scaling:begin -->", "<!-- scaling:end -->"
GIB = 1024**3


@dataclass(frozen=True)
class Size:
    name: str
    layers: int
    hidden: int
    heads: int


SIZES = [Size("tiny", 2, 128, 2), Size("mini", 4, 256, 4), Size("small", 4, 512, 8), Size("medium", 8, 512, 8),
         Size("base", 12, 768, 12)]
SEQ, SEQ_MAX, BATCH_MAX, VOCAB = 32, 128, 8, 30522
FLAGS = ["--input", f"input_ids:1x{SEQ}:int64:0..{VOCAB - 1}", "--input", f"attention_mask:1x{SEQ}:int64:1..1",
         "--dynamic", f"input_ids:0=batch:1..{BATCH_MAX}", "--dynamic", f"input_ids:1=seq:2..{SEQ_MAX}",
         "--dynamic", f"attention_mask:0=batch:1..{BATCH_MAX}", "--dynamic", f"attention_mask:1=seq:2..{SEQ_MAX}",
         "--allow-trace-warnings"]


# --- the models (factories for `interop build scripts.scaling:bert_<size>`) ------------------------


def make_bert(size: Size) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    class TextLogits(torch.nn.Module):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=size.hidden, num_hidden_layers=size.layers,
                        num_attention_heads=size.heads, intermediate_size=4 * size.hidden, num_labels=3,
                        max_position_embeddings=512, initializer_range=0.02)
    return TextLogits(BertForSequenceClassification(config)).eval()


def __getattr__(name: str) -> Any:  # bert_tiny ... bert_base, found by `interop build MODULE:FN`
    for size in SIZES:
        if name == f"bert_{size.name}":
            def factory() -> Any:
                return make_bert(size)

            factory.interop_spec = SPEC  # the same spec as FLAGS (scripts/bench_build.py's raw recipe reads it)
            return factory
    raise AttributeError(name)


def _spec() -> dict[str, Any]:
    dynamic = {"0": {"name": "batch", "min": 1, "max": BATCH_MAX}, "1": {"name": "seq", "min": 2, "max": SEQ_MAX}}
    return {"inputs": [{"name": "input_ids", "shape": [1, SEQ], "dtype": "int64", "range": [0, VOCAB - 1],
                        "dynamic": dynamic},
                       {"name": "attention_mask", "shape": [1, SEQ], "dtype": "int64", "range": [1, 1],
                        "dynamic": dynamic}], "outputs": []}


SPEC = _spec()


def parameters(size: Size) -> int:
    """BERT's parameter count from its config (no model is built)."""
    h, i, layers = size.hidden, 4 * size.hidden, size.layers
    embeddings = (VOCAB + 512 + 2) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * 2 * h + (h * i + i) + (i * h + h)
    return embeddings + layers * layer + (h * h + h) + (h * 3 + 3)


# --- one measured build ----------------------------------------------------------------------------


def tree_rss(root: int) -> int:
    """Summed RSS (bytes) of ``root`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(p, 0) for p in tree)


def measure_build(size: Size, out: Path) -> dict[str, Any]:
    cmd = [str(INTEROP), "build", f"scripts.scaling:bert_{size.name}", "--out", str(out), "--json", *FLAGS]
    peak = [0]
    done = threading.Event()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def poll() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], tree_rss(proc.pid))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    stdout, stderr = _drain(proc)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    poller.join()
    report = _report(stdout)
    params = parameters(size)
    row = {"size": size.name, "layers": size.layers, "hidden": size.hidden, "parameters": params,
           "fp32_weights_mb": params * 4 / 2**20, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
           "peak_rss_mb": usage.ru_maxrss / 1024, "peak_tree_rss_mb": peak[0] / 2**20,
           "exit": os.waitstatus_to_exitcode(status), "passed": bool(report and report.get("passed"))}
    if report:
        onnx, coreml = report["targets"]["onnx"], report["targets"]["coreml"]
        row.update(onnx_s=onnx.get("seconds"), coreml_s=coreml.get("seconds"), exporter=onnx.get("exporter"),
                   capture=coreml.get("capture"), reported_parameters=report["model"].get("parameters"))
    else:
        row["error"] = (stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1][:200]
    return row


def _drain(proc: subprocess.Popen) -> tuple[bytes, bytes]:
    """Read stdout and stderr to the end without reaping the process (wait4 does that)."""
    chunks: dict[str, bytes] = {}

    def read(name: str, stream: Any) -> None:
        chunks[name] = stream.read()

    readers = [threading.Thread(target=read, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    return chunks["out"], chunks["err"]


def _report(stdout: bytes) -> dict[str, Any] | None:
    try:
        return json.loads(stdout)
    except ValueError:
        return None


# --- the table ---------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], baseline_mb: float | None) -> str:
    lines = ["| model | layers x hidden | parameters | fp32 weights | build wall | CPU | onnx / coreml stage | "
             "peak RSS (largest process) | peak RSS (process tree) | peak / fp32 weights | above baseline / fp32 "
             "weights | passed |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        weights = r["fp32_weights_mb"]
        peak = max(r["peak_rss_mb"], r["peak_tree_rss_mb"])
        above = f"{(peak - baseline_mb) / weights:.1f}x" if baseline_mb is not None and r["size"] != "tiny" else "-"
        stages = f"{r['onnx_s']:.0f} s / {r['coreml_s']:.0f} s" if r.get("onnx_s") is not None else "-"
        passed = "yes" if r["passed"] else f"NO ({r.get('error', 'see report')})"
        lines.append(f"| bert-{r['size']} | {r['layers']} x {r['hidden']} | {r['parameters'] / 1e6:.1f}M | "
                     f"{weights:.0f} MB | {r['wall_s']:.0f} s | {r['cpu_s']:.0f} s | {stages} | "
                     f"{r['peak_rss_mb']:.0f} MB | {r['peak_tree_rss_mb']:.0f} MB | {peak / weights:.1f}x | {above} | "
                     f"{passed} |")
    return "\n".join(lines)


def section(rows: list[dict[str, Any]], load: str) -> str:
    baseline = next((max(r["peak_rss_mb"], r["peak_tree_rss_mb"]) for r in rows if r["size"] == "tiny"), None)
    biggest = max(rows, key=lambda r: r["parameters"])
    peak = max(biggest["peak_rss_mb"], biggest["peak_tree_rss_mb"])
    times = peak / biggest["fp32_weights_mb"]
    verdict = (f"bert-{biggest['size']}: peak {peak / 1024:.2f} GiB = **{times:.1f}x its fp32 weights** "
               f"({biggest['fp32_weights_mb']:.0f} MB): {'within' if times <= 4 else 'NOT within'} the 4x target; "
               f"{peak / (24 * 1024):.0%} of 24 GiB.")
    note = (f" \"above baseline\" subtracts bert-tiny's peak ({baseline:.0f} MB: Python, torch, coremltools, onnx, "
            "onnxruntime and a 4M-parameter model) -- what the model's size costs." if baseline else "")
    return "\n".join([
        BEGIN,
        f"Measured by `python scripts/scaling.py` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"load average {load} (a shared machine: wall times are inflated and noisy; CPU time is the steadier "
        "figure). Every build: both targets, all checks, example input 1x32 tokens, dynamic batch 1..8 and "
        "sequence 2..128 (3 shape cases x 2 samples), Core ML fp16.",
        "",
        table(rows, baseline),
        "",
        verdict + note,
        END,
    ])


def write_doc(text: str) -> None:
    DOC.parent.mkdir(exist_ok=True)
    if not DOC.exists():
        DOC.write_text("# Performance\n\n## Scaling\n\n" + text + "\n")
        return
    doc = DOC.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + text + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n## Scaling\n\n" + text + "\n"
    DOC.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", help=f"comma-separated subset of {', '.join(s.name for s in SIZES)}")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    wanted = args.sizes.split(",") if args.sizes else [s.name for s in SIZES]
    sizes = [s for s in SIZES if s.name in wanted]
    if len(sizes) != len(wanted):
        parser.error(f"unknown size in {args.sizes}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="interop-scaling-") as tmp:
        for size in sizes:
            row = measure_build(size, Path(tmp) / size.name)
            rows.append(row)
            print(f"bert-{size.name:7s} {row['parameters'] / 1e6:6.1f}M params  {row['wall_s']:6.1f}s wall "
                  f"{row['cpu_s']:6.1f}s cpu  peak {row['peak_rss_mb']:6.0f} MB (tree {row['peak_tree_rss_mb']:6.0f} MB)"
                  f"  passed={row['passed']} {row.get('error', '')}", flush=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    text = section(rows, load)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if not args.no_write:
        write_doc(text)
        print(f"wrote {DOC.relative_to(REPO)}")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
