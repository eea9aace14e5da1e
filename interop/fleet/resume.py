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
BASE_DEPENDENCIES = ("torch", "numpy")  # and the default targets' packages (Target.packages)


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
    from interop import targets

    for name in dict.fromkeys([*BASE_DEPENDENCIES, *targets.packages(default_only=True)]):
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


def previous(folder: Path, digest: str, entry: ModelEntry | None = None) -> dict[str, Any] | None:
    """The earlier record in ``folder`` when it passed with this content hash, every artifact it
    lists is inside the folder with the bytes it recorded, and its report names this entry's model;
    else None (the model is rebuilt). Passing this is not a verdict: the runner then re-verifies
    the artifacts (``verify``'s checks, no conversion) before the summary calls them passed. A record
    that is not of interop's shape (forged, damaged, a FIFO, huge) is rebuilt, never trusted."""
    from interop.errors import InteropError
    from interop.fleet.records import FleetRecord
    from interop.support import safe_io

    try:
        record = safe_io.read_json(folder / RECORD, "fleet record", root=folder, schema=FleetRecord)
        if record["hash"] != digest or record["status"] not in ("passed", "resumed"):
            return None
        for rel in record["artifacts"]:
            path = safe_io.within(folder / rel, folder, "artifact")
            if ".." in Path(rel).parts or Path(rel).is_absolute() or artifact_sha256(path) != record["artifact_sha256"].get(rel):
                return None
        report = safe_io.read_json(safe_io.within(folder / record["report"], folder, "report"), "report", root=folder)
        if entry is not None and not _same_model(report, entry):
            return None
    except (InteropError, OSError, ValueError, TypeError, KeyError):
        return None
    return record


def _same_model(report: Any, entry: ModelEntry) -> bool:
    """The report is of this entry's model (a planted report of another model is not reused)."""
    source = (report.get("model") or {}).get("source") if isinstance(report, dict) else None
    model = str(entry.settings.get("model", ""))
    settings = report.get("settings") if isinstance(report, dict) else None
    if not isinstance(source, str) or not isinstance(settings, dict):
        return False
    if any(settings.get(k) != entry.settings.get(k) for k in ("factory", "sampler")):
        return False  # code the report would run must be the code the manifest names
    if is_factory(model) and not Path(model).exists():
        return source == model
    try:
        return Path(source).resolve() == Path(model).resolve()
    except OSError:
        return False


def artifact_sha256(path: Path) -> str | None:
    """The sha256 of an artifact: a file's bytes, or a folder's (an ``.mlpackage``) relative names
    and file bytes, in order; None when absent or holding anything but folders and regular files."""
    import os
    import stat

    try:
        top = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(top):
        return _file_digest(path).hex()
    if not stat.S_ISDIR(top):
        return None  # a symlink, a FIFO, a device: never read
    digest = hashlib.sha256()
    for sub in sorted(path.rglob("*")):
        mode = os.lstat(sub).st_mode
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            return None
        digest.update(str(sub.relative_to(path)).encode() + b"\0" + _file_digest(sub))
    return digest.hexdigest()


VERIFY_COPY = ".fleet-verify.report.json"


def verify_copy(folder: Path, record: dict[str, Any]) -> Path:
    """The record's report with every artifact path pointing at this folder's file of that name
    (the very bytes ``previous`` re-hashed; a copied or moved --out verifies its own files, never
    the paths a report names elsewhere), written beside them for the verify child."""
    from interop.support import safe_io

    report = safe_io.read_json(folder / record["report"], "report", root=folder)
    for entry in (report.get("targets") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            entry["path"] = str((folder / Path(entry["path"]).name).resolve())
    for row in report.get("variants") or []:
        if isinstance(row, dict) and isinstance(row.get("path"), str):
            row["path"] = str((folder / Path(row["path"]).name).resolve())
    safe_io.write_json(folder / VERIFY_COPY, report, root=folder.parent)
    return (folder / VERIFY_COPY).resolve()
