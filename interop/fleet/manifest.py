"""The build-many manifest: which models to build, each with the settings `interop build` takes.

A manifest is data, like every file interop reads: its keys are the keys of ``interop.toml``
(BuildConfig's fields, so a setting added there is accepted here too) plus ``name``, ``timeout``
and ``memory_limit``. It can never turn on ``trust`` (unpickling runs code; only the command line
grants it), never choose where artifacts go (``--out/<name>/``), and its relative paths resolve
against the manifest's folder and may not climb out of it.

Two forms::

    # models.toml
    [defaults]                  # optional: applied to every model
    targets = ["onnx"]
    [[model]]
    name = "resnet"             # optional: default is the model file's stem / the factory's name
    model = "resnet/model.pt"
    inputs = ["x:1x3x224x224"]
    timeout = 600               # seconds, optional
    memory_limit = "4GiB"       # optional

or a folder whose sub-folders each hold a model and its ``interop.toml``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from interop.errors import SpecError

FLEET_KEYS = {"name", "timeout", "memory_limit"}
CODE_KEYS = ("factory", "sampler")  # import and run code: from a manifest only with build-many --trust
MIN_MEMORY = 64 << 20  # a cap below this is a typo (or a unit that rounds to nothing), not a limit
MAX_TIMEOUT = 7 * 24 * 3600.0
REFUSED = {"trust": "a manifest is data and cannot grant trust: pass --trust to build-many if you trust every model",
           "out": "artifacts always go to --out/<name>/"}
PATH_KEYS = ("model", "samples", "labels", "calibration", "config")  # inside the manifest's folder
MODEL_SUFFIXES = (".pt", ".pt2", ".pth", ".onnx", ".ts")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


@dataclass
class ModelEntry:
    """One model of the fleet: its settings (BuildConfig keyword arguments) and its limits."""

    name: str
    settings: dict[str, Any]
    timeout: float | None = None
    memory_limit: int | None = None
    base: Path = field(default_factory=Path.cwd)


def build_config_keys() -> set[str]:
    from interop.settings import BuildConfig

    return {f.name for f in fields(BuildConfig)}


def load(path: str | Path) -> list[ModelEntry]:
    """The models a manifest file (or a folder of model folders) lists, in a stable order."""
    path = Path(path)
    if path.is_dir():
        entries = _from_folder(path)
    elif os.path.lexists(path):
        entries = _from_file(path)  # the one reader refuses a FIFO, a device, a huge file
    else:
        raise SpecError(f"manifest {path} does not exist", hint="pass a .toml manifest or a folder of models")
    names = [e.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"model name(s) {', '.join(dupes)} appear more than once in {path}",
                        hint="give each [[model]] a unique name = ...")
    if not entries:
        raise SpecError(f"{path} lists no models", hint="add [[model]] tables (model = ..., inputs = [...])")
    return entries


def _read(path: Path, what: str, root: Path | None = None) -> dict[str, Any]:
    """A TOML file of the fleet through the one reader (regular file, bounded, inside ``root``),
    with the refused keys looked for at every level of nesting."""
    from interop.support import safe_io

    data = safe_io.read_toml(path, what, root)
    _refuse_nested(data, str(path))
    return data


def _refuse_nested(value: Any, where: str, depth: int = 0) -> None:
    """``trust`` and ``out`` are refused wherever they appear, in any table or array of tables."""
    if isinstance(value, dict):
        for key, item in value.items():
            key = str(key).replace("-", "_")
            if key in REFUSED:
                raise SpecError(f"{where}: key {key!r} is not allowed in a manifest (at any level)", hint=REFUSED[key])
            _refuse_nested(item, where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _refuse_nested(item, where, depth + 1)


def _from_file(path: Path) -> list[ModelEntry]:
    data = _read(path, "manifest")
    extra = sorted(set(data) - {"model", "defaults"})
    if extra:
        raise SpecError(f"unknown top-level key(s) {', '.join(extra)} in {path}",
                        hint="a manifest has [[model]] tables and an optional [defaults] table")
    defaults = data.get("defaults", {})
    models = data.get("model", [])
    if not isinstance(defaults, dict) or not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise SpecError(f"{path}: models must be [[model]] tables and defaults a [defaults] table",
                        hint="see docs/fleet.md")
    return [entry({**defaults, **table}, path.parent, f"{path} [[model]] #{i + 1}") for i, table in enumerate(models)]


def _from_folder(folder: Path) -> list[ModelEntry]:
    """Each sub-folder with an interop.toml, or a Hugging Face model folder (``config.json``), is one
    model; its model file is the toml's ``model``, the Hugging Face folder itself, or the one model
    file in the sub-folder."""
    entries = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and ((p / "interop.toml").is_file() or
                                                                    (p / "config.json").is_file())):
        toml = sub / "interop.toml"
        table = _read(toml, "model settings", root=sub) if toml.is_file() else {}
        _model_folder_rules(table, toml)
        if "model" not in table and (sub / "config.json").is_file():
            table["model"] = "."  # the folder is the model (sources/hf_folder.py)
        if "model" not in table:
            found = sorted(p.name for p in sub.iterdir() if p.suffix in MODEL_SUFFIXES)
            if len(found) != 1:
                raise SpecError(f"{sub} holds {len(found)} model files", hint="set model = \"FILE\" in its interop.toml")
            table["model"] = found[0]
        table.setdefault("name", sub.name)
        entries.append(entry(table, sub, str(toml), root=folder))
    return entries


def _model_folder_rules(table: dict[str, Any], toml: Path) -> None:
    """A folder manifest's interop.toml comes with its model: the keys a model-folder file may not
    set (loosening verdicts, redirecting output, running code) are refused here too."""
    from interop.settings import NOT_FROM_MODEL_FOLDER

    refused = sorted(k for k in (str(k).replace("-", "_") for k in table) if k in (*NOT_FROM_MODEL_FOLDER, "config"))
    if refused:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in refused)
        raise SpecError(f"{toml} beside the model sets {', '.join(refused)}: a file that comes with a model may not "
                        "loosen verdicts, redirect output or run code", hint=f"pass {flags} in a manifest file instead")
    model = table.get("model")
    if isinstance(model, str) and is_factory(model) and not (toml.parent / model).exists():
        raise SpecError(f"{toml} beside the model names model = {model!r}, code to import and run: a file that comes "
                        "with a model may not run code", hint="name a model file, or list MODULE:FN in a manifest file")


def refuse_code_without_trust(entries: list[ModelEntry], trust: bool) -> None:
    """``factory`` / ``sampler`` in a manifest import and run code: only with build-many --trust."""
    if trust:
        return
    for e in entries:
        named = [f"{k} = {e.settings[k]!r}" for k in CODE_KEYS if e.settings.get(k)]
        if named:
            raise SpecError(f"model {e.name}: the manifest names {', '.join(named)}, which imports and runs code",
                            hint="pass --trust to build-many if you trust that code")


def entry(table: dict[str, Any], base: Path, where: str, root: Path | None = None) -> ModelEntry:
    """Validate one model's table: known keys only, no trust, paths inside the manifest's folder."""
    table = {k.replace("-", "_"): v for k, v in table.items()}
    for key, why in REFUSED.items():
        if key in table:
            raise SpecError(f"{where}: key {key!r} is not allowed in a manifest", hint=why)
    known = build_config_keys() | FLEET_KEYS
    unknown = sorted(set(table) - known)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}",
                        hint=f"known keys: {', '.join(sorted(known - set(REFUSED)))}")
    if not isinstance(table.get("model"), str) or not table["model"]:
        raise SpecError(f"{where}: no model = \"...\"", hint="name the model file (relative to the manifest) or MODULE:FN")
    settings = {k: v for k, v in table.items() if k not in FLEET_KEYS}
    _normalise_lists(settings, where)
    for key in PATH_KEYS:
        if isinstance(settings.get(key), str):
            settings[key] = _resolve(settings[key], base, root or base, where, key)
    name = table.get("name") or default_name(table["model"])
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise SpecError(f"{where}: bad name {name!r}", hint="use letters, digits, '.', '_' and '-' (it names a folder)")
    return ModelEntry(name, settings, seconds(table.get("timeout"), where),
                      parse_size(table["memory_limit"], where) if table.get("memory_limit") is not None else None,
                      base.resolve())


def _normalise_lists(settings: dict[str, Any], where: str) -> None:
    """Each value as its BuildConfig field takes it (type-checked, exit 2 one line; a list given as
    one string is split on commas for targets and compress): settings.checked, as for interop.toml."""
    from interop.settings import checked

    for key in list(settings):
        if key != "model":
            settings[key] = checked(key, settings[key], where)


def default_name(model: str) -> str:
    if is_factory(model):
        return model.rpartition(":")[2]
    return Path(model).stem


def is_factory(text: str) -> bool:
    mod, _, fn = text.partition(":")
    return bool(mod and fn and all(p.isidentifier() for p in mod.split(".")) and fn.isidentifier())


def _resolve(value: str, base: Path, root: Path, where: str, key: str) -> str:
    """A relative path resolves against the manifest's folder and must stay inside it; an absolute
    path is taken as written; ``MODULE:FN`` (for model) is left as is."""
    if key == "model" and is_factory(value) and not (base / value).exists():
        return value
    path = Path(value)
    if path.is_absolute():
        return str(path)
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise SpecError(f"{where}: {key} = {value!r} points outside the manifest's folder {root}",
                        hint="use a path inside it, or an absolute path")
    return str(resolved)


def seconds(value: Any, where: str) -> float | None:
    """A finite, positive number of seconds (NaN and infinity would disable the limit)."""
    import math

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0 \
            or value > MAX_TIMEOUT:
        raise SpecError(f"{where}: timeout {value!r} is not a positive number of seconds (at most {MAX_TIMEOUT:g})",
                        hint="e.g. timeout = 600")
    return float(value)


def parse_size(text: Any, where: str = "--memory-limit") -> int:
    """``4GiB``, ``512MiB``, ``2G``, ``1048576`` -> bytes (K/M/G/T and KiB/MiB/... are powers of 1024)."""
    hint = "write e.g. 4GiB, 512MiB or a number of bytes"
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        size = text
    else:
        match = _SIZE.match(str(text)) if isinstance(text, str) else None
        if not match or float(match.group(1)) <= 0:
            raise SpecError(f"{where}: bad memory size {text!r}", hint=hint)
        unit = (match.group(2) or "B").upper()[0]
        size = int(float(match.group(1)) * 1024 ** "BKMGT".index(unit))
    if size < MIN_MEMORY:  # 0.00001GiB rounds to a few bytes: that would be a limit nothing passes
        raise SpecError(f"{where}: memory size {text!r} is below the minimum of {MIN_MEMORY >> 20} MiB", hint=hint)
    return size


def select_shard(entries: list[ModelEntry], index: int, count: int) -> list[ModelEntry]:
    """The models of shard ``index`` of ``count``: by a hash of the model's name, so a model stays
    in its shard when others are added or removed, on every machine and Python version."""
    return [e for e in entries if shard_of(e.name, count) == index]


def shard_of(name: str, count: int) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) % count


def parse_shard(text: str | None, env: dict[str, str]) -> tuple[int, int] | None:
    """``I/N`` (0-based), or ``auto`` / ``auto/N``: the index from the scheduler's environment
    (Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX; Slurm job arrays: SLURM_ARRAY_TASK_ID, counted
    from SLURM_ARRAY_TASK_MIN), the count from ``/N`` or SLURM_ARRAY_TASK_COUNT."""
    if text is None:
        return None
    head, _, tail = text.strip().partition("/")
    hint = "write --shard I/N with 0 <= I < N (e.g. 0/3), or --shard auto/N under Kubernetes or Slurm"
    try:
        count = int(tail) if tail else (int(env["SLURM_ARRAY_TASK_COUNT"]) if head == "auto" else -1)
        if head != "auto":
            index = int(head)
        elif "JOB_COMPLETION_INDEX" in env:
            index = int(env["JOB_COMPLETION_INDEX"])
        else:
            index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    except KeyError as exc:
        raise SpecError(f"--shard {text}: {exc.args[0]} is not set", hint=hint) from exc
    except ValueError as exc:
        raise SpecError(f"bad --shard {text!r}", hint=hint) from exc
    if count < 1 or not 0 <= index < count:
        raise SpecError(f"bad --shard {text!r} (index {index} of {count})", hint=hint)
    return index, count
