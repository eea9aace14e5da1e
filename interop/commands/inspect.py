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
