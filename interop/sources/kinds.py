"""The built-in source kinds: thin adapters over sources/torch_files.py and sources/onnx_file.py
(their loaders stay where they are; this only puts them behind the SourceKind interface)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interop.sources import SourceKind, register_source


@register_source
class PytorchFileKind(SourceKind):
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
class OnnxFileKind(SourceKind):
    """An ``.onnx`` file: ONNX Runtime on the file is the reference; targets built from a module
    build from the graph converted to PyTorch (sources/onnx_file.py, sources/onnx_convert.py)."""

    name = "onnx"
    formats = {"onnx": False}

    def claims(self, model: str) -> bool:
        return Path(model).suffix.lower() == ".onnx"

    def load(self, model: str, factory: str | None, trust: bool) -> Any:
        from interop.sources.onnx_file import load_onnx_file

        return load_onnx_file(Path(model))

    def resolve_spec(self, config: Any, source: Any) -> Any:
        from interop.sources.onnx_file import onnx_spec

        return onnx_spec(config, source)

    def artifact_stem(self, stem: str) -> str:
        return stem + ".interop"  # <stem>.interop.onnx beside the source <stem>.onnx
