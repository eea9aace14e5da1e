"""What makes a fleet result reusable: a content hash over everything that decides a model's
artifacts (the source's bytes and the files beside it, its settings, interop's code and the
versions of the libraries it converts with), and the record of a passing build whose artifacts
are still on disk."""

from __future__ import annotations

import hashlib
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from interop.fleet.manifest import ModelEntry, is_factory

RECORD = "fleet.json"
DEPENDENCIES = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxscript", "coremltools", "numpy")


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """interop's version and a digest of its code (a changed interop rebuilds), Python's and the
    converting libraries' versions."""
    from importlib import metadata

    from interop import _version

    code = hashlib.sha256()
    root = Path(_version.__file__).parent
    for path in sorted(root.rglob("*.py")):
        code.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    found = {"interop": _version.__version__, "interop-code": code.hexdigest()[:16], "python": sys.version.split()[0]}
    for name in DEPENDENCIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def content_hash(entry: ModelEntry) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"settings": entry.settings, "versions": versions()}, sort_keys=True,
                             default=str).encode())
    for path in input_files(entry):
        digest.update(b"\0" + str(path).encode() + b"\0")
        digest.update(_file_digest(path) if path.is_file() else b"<absent>")
    return digest.hexdigest()


def input_files(entry: ModelEntry) -> list[Path]:
    """The files a build reads: the model (and its sidecars) or the factory's module, and every
    other file a setting names."""
    files: list[Path] = []
    for key in ("model", "factory"):
        value = entry.settings.get(key)
        if isinstance(value, str) and is_factory(value) and not Path(value).exists():
            files += [p for p in [module_file(value.partition(":")[0], entry.base)] if p]
        elif isinstance(value, str):
            path = Path(value)
            files += [path, path.with_name(path.stem + ".interop.json"), path.parent / "interop.toml"]
    for key in ("samples", "labels", "calibration"):
        if isinstance(entry.settings.get(key), str):
            files.append(Path(entry.settings[key]))
    return files


def module_file(module: str, base: Path) -> Path | None:
    """Where ``import module`` would find its source, found without importing it (importing runs
    the module's code)."""
    rel = Path(*module.split("."))
    for root in [base, Path.cwd(), *[Path(p) for p in sys.path if p]]:
        for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _file_digest(path: Path) -> bytes:
    from interop.sources.torch_files import file_sha256

    return bytes.fromhex(file_sha256(path))


def previous(folder: Path, digest: str) -> dict[str, Any] | None:
    """The earlier record in ``folder`` when it passed with this content hash and its artifacts
    are all still there; else None."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("hash") != digest or record.get("status") not in ("passed", "resumed"):
        return None
    artifacts = record.get("artifacts") or []
    if not artifacts or not all((folder / a).exists() for a in artifacts):
        return None
    return record
