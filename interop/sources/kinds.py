"""The built-in source kinds: thin adapters over sources/torch_files.py and sources/onnx_file.py
(their loaders stay where they are; this only puts them behind the SourceKind interface)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interop.sources import SourceKind, register_source


@register_source
class PytorchSource(SourceKind):
    """TorchScript, ``.pt2`` ExportedProgram, pickled module, state_dict + factory, MODULE:FN
    (torch_files sniffs which)."""

    name = "pytorch"
    formats = {"torchscript": False, "exported_program": False, "pickle": True, "state_dict": True,
               "factory": True}

    def claims(self, model: str) -> bool:
        return True  # the catch-all: asked last

    def load(self, model: str, factory: str | None, trust: bool) -> Any:
        from interop.sources.torch_files import load_source

        return load_source(model, factory=factory, trust=trust)


@register_source
class OnnxSource(SourceKind):
    """An ``.onnx`` file: its own pipeline (ONNX -> simplified ONNX, checked in ONNX Runtime)."""

    name = "onnx"
    formats = {"onnx": False}

    def claims(self, model: str) -> bool:
        return Path(model).suffix.lower() == ".onnx"

    def load(self, model: str, factory: str | None, trust: bool) -> Any:
        from interop.errors import SpecError

        raise SpecError(f"{model} is an ONNX model: interop builds from it with `interop build`, but "
                        "cannot run PyTorch-only steps on it", hint="pass the PyTorch model instead")

    def build(self, config: Any) -> Any:
        from interop.sources.onnx_file import build_from_onnx

        return build_from_onnx(config)
