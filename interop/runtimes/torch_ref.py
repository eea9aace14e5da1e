"""Reference outputs from the PyTorch model itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from interop.errors import SpecError, first_line


def to_torch(sample: dict[str, np.ndarray], names: list[str]) -> tuple:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(sample[n])) for n in names)


def run_torch(module: Any, sample: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    """Run the (output-flattening) module on ``sample``; a model that fails on the spec's shapes
    is a spec problem, reported as such."""
    import torch

    try:
        with torch.no_grad():
            outs = module(*to_torch(sample, names))
    except Exception as exc:
        shapes = ", ".join(f"{n}{tuple(sample[n].shape)}:{sample[n].dtype}" for n in names)
        raise SpecError(f"the model fails on inputs {shapes}: {first_line(exc)}",
                        hint="fix --input shapes/dtypes (or --dynamic sizes) to ones the model accepts") from exc
    from interop.targets import flatten_outputs

    return [o.detach().cpu().numpy() for o in flatten_outputs(outs)]
