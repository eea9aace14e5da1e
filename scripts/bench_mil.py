#!/usr/bin/env python
"""Speed of the Core ML reference runtime next to ONNX Runtime, on a few small models.

Each model is a torch ``nn.Module`` built here, exported twice -- ``torch.jit.trace`` ->
coremltools -> ``.mlpackage`` (run by ``interop.runtimes.mil`` from disk), and
``torch.onnx.export(dynamo=False)`` -> ONNX Runtime -- then both run the same input in one process.
Printed per model: median per-sample time of each runtime, their ratio (goal: <= 3x), eager
PyTorch's time (BatchNorm folded into the convs, as in the converted program) for scale -- the
floor of any op-by-op runtime calling torch kernels from Python -- and the ratios to it,
the package load time, and the largest difference between the two runtimes' outputs (a sanity
check, not a tolerance test).

    scripts/bench_mil.py                       # all models, fp16 Core ML, 1 thread each
    scripts/bench_mil.py --models cnn,lstm --precision fp32 --repeat 50
    scripts/bench_mil.py --profile transformer # also: where the reference runtime spends its time
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' per-pass progress bars
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    # numpy's BLAS reads these once, at import: one thread, like torch and ONNX Runtime below.
    # (Multi-threaded OpenBLAS on a busy machine turns a 0.1 ms matmul into 50 ms.)
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402


# --- the models -----------------------------------------------------------------------------


def small_cnn() -> tuple[Any, dict[str, np.ndarray]]:
    """Three conv-bn-relu stages, global pooling, a linear head; one 64x64 RGB image."""
    from torch import nn

    def stage(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    model = nn.Sequential(stage(3, 16), stage(16, 32), stage(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(64, 10))
    return model, {"x": _rand(1, 3, 64, 64)}


class LSTMClassifier:
    """Token embedding -> 2-layer LSTM -> linear head on the last step (built lazily: torch)."""

    @staticmethod
    def build() -> tuple[Any, dict[str, np.ndarray]]:
        import torch
        from torch import nn

        class Model(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = nn.Embedding(1000, 64)
                self.lstm = nn.LSTM(64, 128, num_layers=2, batch_first=True)
                self.head = nn.Linear(128, 5)

            def forward(self, ids: torch.Tensor) -> torch.Tensor:
                out, _ = self.lstm(self.embed(ids))
                return self.head(out[:, -1])

        ids = np.random.default_rng(0).integers(0, 1000, size=(1, 32)).astype(np.int32)
        return Model(), {"ids": ids}


def mobilenet_blocks() -> tuple[Any, dict[str, np.ndarray]]:
    """A MobileNetV2-like stack: stem, six inverted-residual blocks, pooled linear head; 1x3x96x96."""
    from torch import nn

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
            super().__init__()
            hidden = cin * expand
            self.residual = stride == 1 and cin == cout
            self.body = nn.Sequential(
                nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
                nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
                nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    blocks = [(16, 24, 2), (24, 24, 1), (24, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)]
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                          *(InvertedResidual(*b) for b in blocks),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 100))
    return model, {"x": _rand(1, 3, 96, 96)}


class EncoderLayer:
    """A post-norm transformer encoder layer (d_model 128, 4 heads, GELU ff 512) over 64 tokens.

    Written out (linear q/k/v, softmax attention) rather than ``nn.TransformerEncoderLayer``:
    that one's fused fast path traces to an op coremltools lacks, and with the fast path off its
    ``scaled_dot_product_attention`` call breaks the TorchScript ONNX exporter (torch 2.13).
    """

    @staticmethod
    def build() -> tuple[Any, dict[str, np.ndarray]]:
        import torch
        from torch import nn

        class Model(nn.Module):
            def __init__(self, dim: int = 128, heads: int = 4, ff: int = 512) -> None:
                super().__init__()
                self.heads = heads
                self.qkv = nn.Linear(dim, 3 * dim)
                self.proj = nn.Linear(dim, dim)
                self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
                self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Linear(ff, dim))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                b, t, d = x.shape
                q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
                attn = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
                y = (attn @ v).transpose(1, 2).reshape(b, t, d)
                x = self.norm1(x + self.proj(y))
                return self.norm2(x + self.ff(x))

        return Model(), {"x": _rand(1, 64, 128)}


MODELS: dict[str, Callable[[], tuple[Any, dict[str, np.ndarray]]]] = {
    "cnn": small_cnn,
    "lstm": LSTMClassifier.build,
    "mobilenet": mobilenet_blocks,
    "transformer": EncoderLayer.build,
}


def _rand(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


# --- exporting ------------------------------------------------------------------------------


def export_coreml(model: Any, inputs: dict[str, np.ndarray], folder: Path, precision: str) -> Path:
    """torch.jit.trace -> coremltools ML program package on disk."""
    import coremltools as ct
    import torch

    example = tuple(torch.from_numpy(v) for v in inputs.values())
    traced = torch.jit.trace(model, example)
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name=k, shape=v.shape, dtype=v.dtype) for k, v in inputs.items()],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS16,
    )
    path = folder / "model.mlpackage"
    mlmodel.save(str(path))
    return path


def export_onnx(model: Any, inputs: dict[str, np.ndarray], folder: Path) -> Path:
    """torch.onnx.export with the TorchScript exporter (``dynamo=False``)."""
    import torch

    path = folder / "model.onnx"
    example = tuple(torch.from_numpy(v) for v in inputs.values())
    torch.onnx.export(model, example, str(path), input_names=list(inputs), output_names=["y"], dynamo=False)
    return path


# --- timing ---------------------------------------------------------------------------------


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = CLOCKS["cpu"]


def median_seconds(fns: list[Callable[[], Any]], repeat: int, warmup: int = 2) -> list[float]:
    """Median time of each function, timed in interleaved rounds (one call of each per round) so
    that a change of load on a shared machine hits all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, spent in zip(fns, times):
            start = CLOCK()
            fn()
            spent.append(CLOCK() - start)
    return [statistics.median(t) for t in times]


def batched(inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The example inputs with ``batch`` samples along axis 0 (the first one is the example)."""
    if batch == 1:
        return inputs
    rng = np.random.default_rng(1)
    out = {}
    for name, v in inputs.items():
        shape = (batch - 1,) + v.shape[1:]
        more = (rng.standard_normal(shape).astype(v.dtype) if v.dtype.kind == "f"
                else rng.integers(int(v.min()), int(v.max()) + 1, size=shape).astype(v.dtype))
        out[name] = np.concatenate([v, more])
    return out


def folded(model: Any) -> Any:
    """``model`` with each BatchNorm folded into the conv before it (torch.fx), as the converted
    programs have it, so that eager PyTorch does the same arithmetic; the model itself when FX
    cannot trace it."""
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(model)
    except Exception:
        return model


def bench_model(name: str, precision: str, repeat: int, threads: int, batch: int = 1) -> dict[str, Any]:
    """Export ``name`` both ways and time both runtimes on the same input (``batch`` samples at
    once; times are per sample)."""
    import onnxruntime as ort
    import torch

    from interop.runtimes import mil

    torch.manual_seed(0)
    model, inputs = MODELS[name]()
    inputs = batched(inputs, batch)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        package = export_coreml(model, inputs, Path(tmp), precision)
        onnx_path = export_onnx(model, inputs, Path(tmp))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        start = time.perf_counter()
        loaded = mil.load_model(package)
        load_s = time.perf_counter() - start
        mil_out = list(loaded.predict(dict(inputs)).values())[0]
        ort_out = session.run(None, dict(inputs))[0]
        example = tuple(torch.from_numpy(v) for v in inputs.values())
        eager = folded(model)
        mil_s, ort_s, torch_s = median_seconds(
            [lambda: loaded.predict(dict(inputs)), lambda: session.run(None, dict(inputs)), lambda: eager(*example)],
            repeat)
        ops = sum(1 for op in loaded.program.functions["main"].operations if op.op_type != "const")
    diff = float(np.max(np.abs(np.asarray(mil_out, np.float32) - ort_out)))
    return {"model": name, "ops": ops, "mil_ms": 1e3 * mil_s / batch, "ort_ms": 1e3 * ort_s / batch,
            "ratio": mil_s / ort_s, "torch_ms": 1e3 * torch_s / batch, "batch": batch,
            "load_ms": 1e3 * load_s, "max_abs_diff": diff, "loaded": loaded, "inputs": inputs}


def profile_ops(loaded: Any, inputs: dict[str, np.ndarray], repeat: int) -> list[tuple[str, float, int]]:
    """Seconds per sample spent in each op type's kernel, plus the interpreter's own overhead."""
    from interop.runtimes.mil import interpreter

    spent: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    original = interpreter.Interpreter._run_op

    def timed(self, op, env):
        start = CLOCK()
        original(self, op, env)
        spent[op.op_type] += CLOCK() - start
        counts[op.op_type] += 1

    interpreter.Interpreter._run_op = timed
    try:
        start = CLOCK()
        for _ in range(repeat):
            loaded.predict(dict(inputs))
        total = CLOCK() - start
    finally:
        interpreter.Interpreter._run_op = original
    rows = sorted(((k, v / repeat, counts[k] // repeat) for k, v in spent.items()), key=lambda r: -r[1])
    return rows + [("(outside ops)", (total - sum(spent.values())) / repeat, 0)]


def print_results(rows: list[dict[str, Any]], precision: str, threads: int, batch: int = 1) -> None:
    clock = next(name for name, fn in CLOCKS.items() if fn is CLOCK)
    print(f"\nCore ML reference runtime vs ONNX Runtime  (Core ML precision {precision}, {threads} thread(s), "
          f"median {clock} time per sample, batch {batch})")
    print(f"  {'model':<12} {'MIL ops':>7} {'reference':>10} {'onnxruntime':>12} {'ratio':>7}"
          f" {'torch eager':>12} {'eager/ORT':>9} {'ref/eager':>9} {'load':>8} {'max|diff|':>10}")
    for r in rows:
        flag = "" if r["ratio"] <= 3 else "  > 3x"
        print(f"  {r['model']:<12} {r['ops']:>7} {r['mil_ms']:>8.2f}ms {r['ort_ms']:>10.3f}ms {r['ratio']:>6.1f}x"
              f" {r['torch_ms']:>10.3f}ms {r['torch_ms'] / r['ort_ms']:>8.1f}x {r['mil_ms'] / r['torch_ms']:>8.2f}x"
              f" {r['load_ms']:>6.0f}ms {r['max_abs_diff']:>10.2e}{flag}")
    met = sum(r["ratio"] <= 3 for r in rows)
    print(f"  goal <= 3x ONNX Runtime: met on {met} of {len(rows)}; reference / eager PyTorch median "
          f"{statistics.median(r['mil_ms'] / r['torch_ms'] for r in rows):.2f}x (eager PyTorch, the floor of a "
          f"runtime made of torch kernels, is itself {min(r['torch_ms'] / r['ort_ms'] for r in rows):.1f}-"
          f"{max(r['torch_ms'] / r['ort_ms'] for r in rows):.1f}x ONNX Runtime here)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and ONNX Runtime intra-op threads (numpy's BLAS: OPENBLAS_NUM_THREADS, default 1)")
    parser.add_argument("--batch", default="1",
                        help="samples per prediction, comma-separated for several runs (times are per sample)")
    parser.add_argument("--profile", default="", help="comma-separated models to profile op by op")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu",
                        help="cpu (default): this process's CPU time, steady on a busy machine but summed over "
                             "threads (use wall with --threads > 1); wall: elapsed time")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = CLOCKS[args.clock]

    import torch

    torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    unknown = set(names) - set(MODELS)
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")
    for batch in (int(b) for b in args.batch.split(",")):
        rows = [bench_model(n, args.precision, args.repeat, args.threads, batch) for n in names]
        print_results(rows, args.precision, args.threads, batch)
        profile(rows, args)
    return 0


def profile(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    for row in rows:
        if row["model"] in args.profile.split(","):
            print(f"\nWhere the reference runtime spends {row['model']}'s {row['mil_ms']:.2f} ms:")
            for op_type, seconds, count in profile_ops(row["loaded"], row["inputs"], args.repeat)[:15]:
                print(f"  {op_type:<28} {1e3 * seconds:8.3f} ms  {count:>4} ops")


if __name__ == "__main__":
    sys.exit(main())
