#!/usr/bin/env python
"""Build a causal LM with ``--task text-generation`` and time decoding in both runtimes, side by side.

Prints the build time and peak RSS (with the model's fp32 weight size for scale), then ms per
decoded token (median over the decode steps after an 8-token prefill) in ONNX Runtime (past /
present) and in the Core ML reference runtime (stateful package, one state), and their ratio
(goal: reference <= 3x ORT). Single-threaded, like scripts/bench_mil.py.

    scripts/bench_generation.py                                  # Qwen2-0.5B-sized, random weights
    scripts/bench_generation.py --model tests.generation_models:tiny_llama --steps 16
    scripts/bench_generation.py --out big/ --no-build            # time artifacts built before
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402


def build(model: str, out: Path, max_context: int) -> float:
    from interop import BuildConfig
    from interop import build as run_build

    started = time.perf_counter()
    report = run_build(BuildConfig(model=model, out=str(out), max_context=max_context, decode_steps=4))
    seconds = time.perf_counter() - started
    print(f"build: {seconds:.1f} s, passed={report.passed}, peak RSS {_peak_gb():.2f} GB")
    for name, entry in report.data["targets"].items():
        print(f"  {name}: {entry['status']} {entry.get('seconds')} s {entry.get('error') or ''}")
    return seconds


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def time_onnx(path: Path, prompt: np.ndarray, steps: int) -> list[float]:
    import onnxruntime as ort

    from interop.generation.runs import positions

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = {"input_ids": prompt, "attention_mask": np.ones_like(prompt), "position_ids": positions(np.ones_like(prompt))}
    for inp in session.get_inputs():
        if inp.name.startswith("past_key_values."):
            feeds[inp.name] = np.zeros((1, inp.shape[1], 0, inp.shape[3]), np.float32)
    times, total = [], prompt.shape[1]
    for step in range(steps + 1):
        started = time.perf_counter()
        out = dict(zip(names, session.run(None, feeds)))
        if step:
            times.append(time.perf_counter() - started)
        nxt = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        total += 1
        feeds = {"input_ids": nxt, "attention_mask": np.ones((1, total), np.int64),
                 "position_ids": np.array([[total - 1]], np.int64)}
        feeds.update({n.replace("present.", "past_key_values."): v for n, v in out.items() if n != "logits"})
    return times


def time_reference(path: Path, prompt: np.ndarray, steps: int, mask_dtype) -> list[float]:
    """Per decode step seconds of the stateful package in the reference runtime (its fp32 copies
    of the weights kept for the run, as ONNX Runtime keeps its own)."""
    from interop.generation.runs import weights_kept_widened
    from interop.generation.wrappers import causal_mask
    from interop.runtimes import mil

    model = mil.load_model(path)
    state = model.make_state()
    ids, past, times = prompt.astype(np.int32), 0, []
    with weights_kept_widened(path):
        for step in range(steps + 1):
            feeds = {"input_ids": ids, "causal_mask": causal_mask(past, ids.shape[1], mask_dtype)}
            started = time.perf_counter()
            out = model.predict(feeds, state=state)
            if step:
                times.append(time.perf_counter() - started)
            past += ids.shape[1]
            ids = np.asarray(out["logits"])[:, -1].argmax(-1)[:, None].astype(np.int32)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tests.generation_models:qwen2_05b_like")
    parser.add_argument("--out", default="bench-generation")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--max-context", type=int, default=512)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--no-build", action="store_true", help="time the artifacts already in --out")
    args = parser.parse_args()
    out, stem = Path(args.out), args.model.rpartition(":")[2]
    if not args.no_build:
        build(args.model, out, args.max_context)
    prompt = np.arange(1, 9, dtype=np.int64)[None]
    ort_ms = 1e3 * statistics.median(time_onnx(out / f"{stem}.onnx", prompt, args.steps))
    ref_ms = 1e3 * statistics.median(time_reference(out / f"{stem}.mlpackage", prompt, args.steps,
                                                    np.float16 if args.precision == "fp16" else np.float32))
    print(f"{'runtime':<24}{'ms / decoded token':>20}")
    print(f"{'onnxruntime (fp32)':<24}{ort_ms:>20.1f}")
    print(f"{'interop-mil (' + args.precision + ')':<24}{ref_ms:>20.1f}")
    print(f"reference / ORT: {ref_ms / ort_ms:.2f}x (goal <= 3x); peak RSS {_peak_gb():.2f} GB")


if __name__ == "__main__":
    main()
