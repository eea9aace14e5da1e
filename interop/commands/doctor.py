"""`interop doctor`: versions, platform, runtimes, known-bad combinations — without importing
torch or coremltools (fast), by reading installed package metadata."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

BASE_PACKAGES = ("torch", "numpy")  # every target's packages come from the target (Target.packages)


def packages() -> tuple[str, ...]:
    """The distributions doctor reports: interop's own, then every registered target's."""
    from interop import targets

    return BASE_PACKAGES + tuple(p for p in targets.packages() if p not in BASE_PACKAGES)
COREMLTOOLS_TESTED_TORCH = {"9": (2, 7)}  # coremltools major -> newest torch it was tested with


def _version(name: str, found: dict[str, str] | None = None) -> str | None:
    if found and name in found:
        return found[name]
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _dist_info_versions() -> dict[str, str]:
    """name -> version from the ``<name>-<version>.dist-info`` folder names on sys.path: a
    directory listing instead of parsing each package's METADATA (the slow part of doctor)."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            if folder.endswith(".dist-info") and "-" in folder:
                name, _, version = folder[: -len(".dist-info")].partition("-")
                found.setdefault(name.lower().replace("_", "-"), version)
    return found


def _tuple(v: str | None) -> tuple[int, ...]:
    out = []
    for part in (v or "0").split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def diagnose() -> dict[str, Any]:
    found = _dist_info_versions()
    from interop import targets

    versions = {p: _version(p, found) for p in packages()}
    problems = known_bad(versions)
    runtimes = {label: runs for t in targets.registered().values() for label, runs in t.doctor(versions).items()}
    return {"platform": f"{platform.system()} {platform.release()} {platform.machine()}",
            "python": platform.python_version(), "versions": versions, "runtimes": runtimes, "problems": problems,
            "patches": patch_listing(found), "no_torchscript": no_torchscript()}


def no_torchscript() -> dict[str, Any]:
    """The TorchScript-free mode: whether the environment turns it on, and what still needs TorchScript."""
    from interop.stages import export_capture

    return {"env": export_capture.ENV, "env_value": os.environ.get(export_capture.ENV),
            "still_needs_torchscript": list(export_capture.STILL_NEEDS_TORCHSCRIPT)}


def patch_listing(found: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """interop.patches' declared changes to third-party internals, each with the version of its
    library installed here (``matches``: same major.minor as the one it was checked against)."""
    from interop import patches

    out = []
    for entry in patches.listing():
        installed = _version(entry["library"], found)
        checked = entry["checked_against"].rsplit(" ", 1)[-1]
        out.append({**entry, "installed": installed,
                    "matches": installed is not None and _tuple(installed)[:2] == _tuple(checked)[:2]})
    return out


def known_bad(versions: dict[str, str | None]) -> list[str]:
    problems = []
    np_v, ct_v, torch_v = (_tuple(versions.get(k)) for k in ("numpy", "coremltools", "torch"))
    from interop import targets

    missing = [p for p in ["torch", *targets.packages(default_only=True)] if not versions.get(p)]
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
