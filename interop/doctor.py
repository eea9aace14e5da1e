"""`interop doctor`: versions, platform, runtimes, known-bad combinations — without importing
torch or coremltools (fast), by reading installed package metadata."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

PACKAGES = ("torch", "coremltools", "onnx", "onnxruntime", "onnxsim", "onnxscript", "numpy")
COREMLTOOLS_TESTED_TORCH = {"9": (2, 7)}  # coremltools major -> newest torch it was tested with


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _tuple(v: str | None) -> tuple[int, ...]:
    out = []
    for part in (v or "0").split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def diagnose() -> dict[str, Any]:
    versions = {p: _version(p) for p in PACKAGES}
    problems = known_bad(versions)
    darwin = platform.system() == "Darwin"
    runtimes = {
        "onnxruntime": bool(versions["onnxruntime"]),
        "coreml (native)": darwin and bool(versions["coremltools"]),
        "interop-mil (Core ML reference runtime)": bool(versions["coremltools"]),
    }
    return {"platform": f"{platform.system()} {platform.release()} {platform.machine()}",
            "python": platform.python_version(), "versions": versions, "runtimes": runtimes, "problems": problems}


def known_bad(versions: dict[str, str | None]) -> list[str]:
    problems = []
    np_v, ct_v, torch_v = (_tuple(versions.get(k)) for k in ("numpy", "coremltools", "torch"))
    missing = [p for p in ("torch", "coremltools", "onnx", "onnxruntime") if not versions.get(p)]
    if missing:
        problems.append(f"missing: {', '.join(missing)} — run `make demo` or pip install the package")
    if versions.get("coremltools") and ct_v[0] == 9 and np_v >= (2, 4):
        problems.append(f"numpy {versions['numpy']} with coremltools {versions['coremltools']}: its torch frontend "
                        "breaks (coremltools#2633) — pip install 'numpy<2.4'")
    tested = COREMLTOOLS_TESTED_TORCH.get(str(ct_v[0]))
    if versions.get("torch") and tested and torch_v[:2] > tested:
        problems.append(f"torch {versions['torch']} is newer than coremltools {versions['coremltools']} was tested "
                        f"with ({tested[0]}.{tested[1]}); interop's agreement checks cover the gap (warning)")
    return problems
