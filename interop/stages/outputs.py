"""A model's outputs as a flat list of tensors (tensors, nested tuples/lists, dicts, Hugging Face
``ModelOutput``s), their key names, and a wrapper module that returns them flat: data-model helpers
the reference runtime, the stages and every target share."""

from __future__ import annotations

from typing import Any


def flatten_outputs(out: Any) -> list[Any]:
    """Tensors of a model output in a stable order: tensors, (nested) tuples/lists, dicts and
    HF ``ModelOutput``s (by key order); None entries are dropped."""
    if out is None:
        return []
    if hasattr(out, "shape") and hasattr(out, "dtype"):
        return [out]
    if isinstance(out, dict) or hasattr(out, "to_tuple"):
        items = out.items() if isinstance(out, dict) else zip(out.keys(), out.to_tuple())
        return [t for _, v in items for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    raise TypeError(f"unsupported model output of type {type(out).__name__}")


def output_keys(out: Any) -> list[str] | None:
    """Names for a dict-like output whose values are single tensors (e.g. ``logits``)."""
    if isinstance(out, dict) or hasattr(out, "to_tuple"):
        keys = list(out.keys())
        values = [out[k] for k in keys]
        if all(hasattr(v, "shape") for v in values):
            return [str(k) for k in keys]
    return None


def flat_module(module: Any) -> Any:
    """Wrap ``module`` so it returns a flat tuple of tensors (what both exporters want).

    TorchScript modules are returned as they are: wrapping them in a traced module breaks both
    torch.onnx's tracer and coremltools, and their outputs are tensors or tuples already."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return module

    class FlatOutputs(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> tuple:
            return tuple(flatten_outputs(self.inner(*args)))

    flat = FlatOutputs(module)
    try:
        return flat.eval()
    except NotImplementedError:  # an ExportedProgram's module() refuses train()/eval(): it is in eval already
        flat.training = False
        return flat
