"""`interop inspect`: the interface and metadata of an .onnx file or an .mlpackage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interop.errors import LoadError


def inspect_artifact(path_text: str) -> dict[str, Any]:
    from interop import targets, trust
    from interop.stages.outdir import recover_folder

    path = Path(path_text)
    if not path.exists():
        raise LoadError(f"{trust.shown(path)} does not exist", hint="pass an .onnx file or an .mlpackage folder")
    recover_folder(path.parent)  # an interrupted build's move is rolled back before reading
    target = targets.for_path(path)
    if target is None:
        kinds = ", ".join(t.suffix for t in targets.registered().values())
        raise LoadError(f"{trust.shown(path)} is neither of the artifacts interop knows ({kinds})",
                        hint="pass a built artifact")
    trust.check_artifact(path)  # read only inside the artifact (external data, package links)
    return target.inspect(path)


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


def inspect_mlpackage(path: Path) -> dict[str, Any]:
    from interop.support.quiet import captured
    from interop.runtimes.mil.loader import _package_paths, _read_spec

    with captured():  # importing coremltools prints proxy-loading noise off macOS
        spec = _read_spec(_package_paths(path)[0])
    desc = spec.description

    def feature(f: Any) -> dict[str, Any]:
        kind = f.type.WhichOneof("Type")
        info: dict[str, Any] = {"name": f.name, "type": kind, "shape": [], "description": f.shortDescription}
        if kind == "multiArrayType":
            m = f.type.multiArrayType
            info["type"] = f"multiArray {type(m).ArrayDataType.Name(m.dataType).lower()}"
            info["shape"] = list(m.shape)
            if m.WhichOneof("ShapeFlexibility") == "shapeRange":
                info["shape"] = [f"{r.lowerBound}..{r.upperBound if r.upperBound >= 0 else '∞'}" for r in m.shapeRange.sizeRanges]
            elif m.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
                info["shape"] = [list(s.shape) for s in m.enumeratedShapes.shapes]
        elif kind == "imageType":
            img = f.type.imageType
            info["type"] = f"image {type(img).ColorSpace.Name(img.colorSpace)}"
            info["shape"] = [img.height, img.width]
        elif kind == "dictionaryType":
            info["type"] = "dictionary"
        return info

    meta = dict(desc.metadata.userDefined)
    for key in ("author", "license", "shortDescription", "versionString"):
        if getattr(desc.metadata, key):
            meta[key] = getattr(desc.metadata, key)
    return {"path": str(path), "format": "mlpackage", "specification_version": spec.specificationVersion,
            "inputs": [feature(f) for f in desc.input], "outputs": [feature(f) for f in desc.output],
            "metadata": meta}
