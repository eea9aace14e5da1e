"""What interop folds into the model before export, identically for both targets.

* **Image inputs** (``--image x --mean .. --std .. --pixel-scale 255``): the artifacts take raw
  pixels; ``(pixels / pixel_scale - mean) / std`` runs inside the model. Core ML's ImageType has
  only one scalar scale and a per-channel bias, so a per-channel std cannot be expressed there
  (coremltools#64, #905): folding it into the model is the only exact way, and doing it for ONNX as
  well means both artifacts take the same raw pixels.
* **Classifiers** (``--labels``): the scored output becomes probabilities (softmax, unless the
  model already returns them) named ``classLabelProbs``; Core ML adds ``classLabel``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from interop.errors import SpecError

PROBS = "classLabelProbs"
LABEL = "classLabel"


@dataclass
class ImageInput:
    input: str
    mean: list[float]
    std: list[float]
    pixel_scale: float = 255.0

    def to_json(self) -> dict[str, Any]:
        return {"input": self.input, "mean": self.mean, "std": self.std, "pixel_scale": self.pixel_scale}


def parse_floats(text: Any, what: str) -> list[float]:
    if isinstance(text, (list, tuple)):
        values = list(text)
    else:
        values = [v for v in str(text).split(",") if v.strip()]
    try:
        return [float(v) for v in values]
    except ValueError as exc:
        raise SpecError(f"bad {what} {text!r}", hint=f"write comma-separated numbers, e.g. --{what} 0.5,0.5,0.5") from exc


def image_input(name: str | None, mean: Any, std: Any, pixel_scale: float | None, spec: Any,
                hint: dict[str, Any] | None) -> ImageInput | None:
    """Resolve and validate the image preprocessing (flags win over the model's embedded hint)."""
    hint = hint or {}
    name = name or hint.get("input")
    if not name:
        if mean is not None or std is not None:
            raise SpecError("--mean/--std given without --image", hint="name the image input: --image NAME")
        return None
    tensor = spec.by_name(name)
    if len(tensor.shape) != 4 or tensor.shape[1] not in (1, 3):
        raise SpecError(f"image input {name!r} has shape {tensor.shape}",
                        hint="an image input is N x C x H x W with C = 3 (RGB) or 1 (grayscale)")
    channels = tensor.shape[1]
    mean_v = parse_floats(mean if mean is not None else hint.get("mean", [0.0] * channels), "mean")
    std_v = parse_floats(std if std is not None else hint.get("std", [1.0] * channels), "std")
    for label, values in (("mean", mean_v), ("std", std_v)):
        if len(values) != channels:
            raise SpecError(f"--{label} has {len(values)} values but image {name!r} has {channels} channels",
                            hint=f"give {channels} comma-separated values")
    if any(s <= 0 for s in std_v):
        raise SpecError(f"--std {std_v} has a value <= 0", hint="std values are positive")
    scale = float(pixel_scale if pixel_scale is not None else hint.get("pixel_scale", 255.0))
    if scale <= 0:
        raise SpecError(f"--pixel-scale {scale} must be positive", hint="255 for 8-bit pixels, 1 if the model takes 0..255")
    tensor.dtype, tensor.low, tensor.high = "float32", 0.0, 255.0
    return ImageInput(name, mean_v, std_v, scale)


def looks_like_probabilities(outputs: list[np.ndarray]) -> bool:
    """Non-negative rows summing to 1 (the model applies softmax itself)."""
    return all(o.ndim >= 1 and np.all(o >= 0) and np.allclose(o.sum(axis=-1), 1.0, atol=1e-3) for o in outputs)


def wrap(module: Any, input_names: list[str], image: ImageInput | None, softmax: bool) -> Any:
    """An nn.Module doing the preprocessing, the model, output flattening and (for classifiers)
    softmax; the module itself (flattened) when there is nothing to fold in."""
    import torch

    from interop.stages.outputs import flat_module, flatten_outputs

    if image is None and not softmax:
        return flat_module(module)

    class Prepared(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module
            self.index = input_names.index(image.input) if image else -1
            if image:
                mean = torch.tensor(image.mean, dtype=torch.float32).view(1, -1, 1, 1) * image.pixel_scale
                inv = 1.0 / (torch.tensor(image.std, dtype=torch.float32).view(1, -1, 1, 1) * image.pixel_scale)
                self.register_buffer("pixel_mean", mean)
                self.register_buffer("pixel_inv_std", inv)

        def forward(self, *args: Any) -> tuple:
            args = list(args)
            if self.index >= 0:
                args[self.index] = (args[self.index] - self.pixel_mean) * self.pixel_inv_std
            outs = flatten_outputs(self.inner(*args))
            if softmax:
                outs[0] = torch.softmax(outs[0], dim=-1)
            return tuple(outs)

    return Prepared().eval()


def probs_from_dict(value: dict[Any, Any], labels: list[str]) -> np.ndarray:
    """A Core ML classifier's probability dict, in label order, as a (rows, n) array: (1, n) for
    one row of floats, (batch, n) where each value holds a probability per row."""
    return np.stack([np.ravel(np.asarray(value[label], dtype=np.float32)) for label in labels], axis=-1)
