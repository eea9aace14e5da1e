"""The Core ML target's ``interop inspect``: the features (shapes, flexibility) and metadata of an .mlpackage."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
