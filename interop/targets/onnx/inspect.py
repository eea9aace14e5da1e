"""The ONNX target's ``interop inspect``: opset, producer, inputs, outputs and metadata of an .onnx file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interop.errors import LoadError


def inspect_onnx(path: Path) -> dict[str, Any]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise LoadError(f"{path} is not a readable ONNX model ({type(exc).__name__})", hint="rebuild it") from exc

    def tensor(v: Any) -> dict[str, Any]:
        tt = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tt.shape.dim]
        return {"name": v.name, "type": onnx.TensorProto.DataType.Name(tt.elem_type).lower(), "shape": shape}

    return {"path": str(path), "format": "onnx", "opset": [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")],
            "producer": f"{model.producer_name} {model.producer_version}",
            "inputs": [tensor(v) for v in model.graph.input], "outputs": [tensor(v) for v in model.graph.output],
            "metadata": {p.key: p.value for p in model.metadata_props}}
