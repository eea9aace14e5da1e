"""The ``numpy-mlp`` target: an op list and weights in an ``.npz``, run by numpy (see __init__)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interop.errors import ExportError
from interop.targets.base import Target, TargetContext, TargetResult

KERNELS = {"linear", "tanh", "relu"}
SUPPORTED_ATEN = {"aten::linear", "aten::tanh", "aten::relu", "aten::addmm", "aten::matmul", "aten::t"}


def translate(module: Any) -> tuple[list[str], dict[str, np.ndarray]]:
    """The module's forward as numpy ops (torch.fx): ``linear:<i>``, ``tanh``, ``relu``."""
    import torch
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as exc:
        raise ExportError(f"torch.fx cannot trace the model: {exc}", hint="numpy-mlp takes plain MLPs") from exc
    mods = dict(module.named_modules())
    ops: list[str] = []
    weights: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        kind = node.target if node.op == "call_module" else getattr(node.target, "__name__", str(node.target))
        sub = mods.get(kind) if node.op == "call_module" else None
        if isinstance(sub, torch.nn.Linear):
            i = len(weights) // 2
            weights[f"w{i}"] = sub.weight.detach().numpy().astype(np.float32)
            weights[f"b{i}"] = sub.bias.detach().numpy().astype(np.float32)
            ops.append(f"linear:{i}")
        elif isinstance(sub, (torch.nn.Tanh, torch.nn.ReLU)) or kind in ("tanh", "relu"):
            ops.append("tanh" if isinstance(sub, torch.nn.Tanh) or kind == "tanh" else "relu")
        else:
            raise ExportError(f"numpy-mlp has no kernel for {kind!r}", hint="use --targets onnx,coreml for this model")
    return ops, weights


def run(path: Path, x: np.ndarray) -> np.ndarray:
    with np.load(path) as data:
        arrays = dict(data)
    h = np.asarray(x, np.float32)
    for op in [str(o) for o in arrays.pop("ops")]:
        if op.startswith("linear:"):
            i = op.split(":")[1]
            w = arrays[f"w{i}"].astype(np.float32)
            h = h @ w.T + arrays[f"b{i}"].astype(np.float32)
        else:
            h = np.tanh(h) if op == "tanh" else np.maximum(h, 0)
    return h.astype(np.float32)


class NumpyMlpTarget(Target):
    name = "numpy-mlp"
    display_name = "numpy MLP"
    suffix = ".mlp.npz"
    stage = "translating to a numpy MLP"
    verify_stage = "executing the numpy MLP"
    runtimes = ("numpy",)
    packages = ("numpy",)
    variant_modules = ("tests.fake_target.variants",)
    not_applicable = {"int4": "numpy-mlp stores float weights only: skipped"}

    def build(self, ctx: TargetContext) -> TargetResult:
        from interop.compare import diffs

        import torch

        module = ctx.prep.module
        while isinstance(getattr(module, "inner", None), torch.nn.Module):  # interop's wrappers (*args, flat outputs)
            module = module.inner
        ops, weights = translate(module)
        dtype = "float32"
        path = ctx.work / f"{ctx.stem}{self.suffix}"
        np.savez(path, ops=np.array(ops), **{k: v.astype(dtype) for k, v in weights.items()})
        (runtime, got, problem), = self.execute(path, ctx.spec, ctx.prep.ref, ctx.prep.names)
        if problem:
            raise ExportError(problem, hint="report it")
        rows = diffs(self.name, runtime, ctx.prep.ref, got, ctx.prep.names, "fp32", ctx.config.tolerance)
        return TargetResult(path, {"ops": ops, "dtype": dtype}, rows)

    def execute(self, path, spec, ref, names, labels=None, image=None):
        from interop.stages.agreement import run_cases

        try:
            got = run_cases(lambda s: [run(Path(path), s[spec.names()[0]])], ref)
        except Exception as exc:
            yield "numpy", None, f"numpy cannot run it: {exc}"
            return
        yield "numpy", got, None

    def bench(self, path, spec, sample, warmup, runs, slow_runs, threads, **options):
        from interop.support.timing import measure

        x = sample[spec.names()[0]]
        return {"numpy": measure(lambda: run(Path(path), x), warmup, runs).to_json()}

    def inspect(self, path: Path) -> dict[str, Any]:
        with np.load(path) as data:
            return {"path": str(path), "format": self.name, "ops": [str(o) for o in data["ops"]],
                    "arrays": {k: list(data[k].shape) for k in data.files if k != "ops"}}

    def op_support(self, kind: str, opset: int | None) -> str:
        return "ok" if kind in SUPPORTED_ATEN or not kind.startswith("aten::") else "missing in numpy-mlp (no numpy kernel)"

    def doctor(self, versions: dict[str, str | None]) -> dict[str, bool]:
        return {"numpy (numpy-mlp)": bool(versions.get("numpy"))}
