"""BuildConfig, and resolving it once: flag > environment (``ENVIRONMENT``: only
``INTEROP_NO_TORCHSCRIPT``) > ``--config`` file > ``interop.toml`` beside the model > default, with
where each setting came from (``provenance``, the report's ``settings_source``: ``env`` for the
environment).

* A *flag* is a command-line option or an argument the API caller passed to ``BuildConfig(...)``
  (or assigned afterwards): an explicit ``--precision fp16`` wins over any file, even though fp16
  is also the default.
* ``--config FILE`` (``interop.toml``, or a ``pyproject.toml``'s ``[tool.interop]``) is the user's
  own choice of file: it may set anything but ``trust``.
* An ``interop.toml`` beside the model came with the model: it is data, and may not loosen a
  verdict or redirect output (``NOT_FROM_MODEL_FOLDER``).
* Values from files and reports are type-checked (``trust = "false"`` is not true); a relative
  path in a file (``samples``, ``labels``, ``out``) is relative to that file's folder.
* ``trust`` comes from the command line or the API argument only: never from a file, never from a
  report (``from_report`` takes it as an argument: ``verify --trust``).

Settings the input spec resolves further (inputs carried by the model, ExportedProgram signature)
are resolved in ``stages/resolve.py`` from what this gives it.
"""

from __future__ import annotations

import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from interop.errors import SpecError


def _default_targets() -> list[str]:
    """The registered targets marked ``default`` (Target.default): onnx, coreml."""
    from interop import targets

    return targets.default_names()


@dataclass
class BuildConfig:
    model: str = ""
    inputs: list[str] = field(default_factory=list)
    dynamic: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    out: str | None = None
    targets: list[str] = field(default_factory=lambda: _default_targets())
    precision: str = "fp16"
    factory: str | None = None
    trust: bool = False
    samples: str | None = None
    num_samples: int = 2
    seed: int = 0
    exporter: str = "auto"
    opset: int | None = None
    deployment_target: str = "iOS16"
    coreml_shapes: str = "range"
    coreml_capture: str = "auto"
    tolerance: list[str] = field(default_factory=list)
    keep_failed: bool = False
    labels: str | None = None
    image: str | None = None
    mean: str | None = None
    std: str | None = None
    pixel_scale: float | None = None
    allow_trace_warnings: bool = False
    all_or_nothing: bool = False
    author: str | None = None
    license: str | None = None
    description: str | None = None
    version: str | None = None
    config: str | None = None  # the --config file; read by resolve()
    sampler: str | None = None  # MODULE:FN drawing input values (user code, like a MODULE:FN source)
    compress: list[str] = field(default_factory=list)  # --compress: variants to build (interop.variants)
    calibration: str | None = None  # --calibration FILE.npz for int8-static
    gate: list[str] = field(default_factory=list)  # --gate VARIANT:psnr=30
    task: str = "auto"  # auto (text-generation for a causal LM) | text-generation | default
    max_context: int = 512
    decode_steps: int = 16
    compare_where: list[str] = field(default_factory=list)  # --compare-where OUTPUT:[!]INPUT (a verdict limit)
    no_torchscript: bool = False  # --no-torchscript / INTEROP_NO_TORCHSCRIPT=1: torch.export routes only
    # where each setting came from (flag | config | model-folder | default); set by resolve()
    provenance: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_given", set())

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        given = self.__dict__.get("_given")
        if given is not None and name in _setting_names():
            given.add(name)

    def given(self) -> set[str]:
        """The settings the caller set (constructor arguments and later assignments)."""
        return set(self.__dict__.get("_given", ()))


def _track_init() -> None:
    """Record which settings the caller passed to ``BuildConfig(...)`` (the dataclass' own
    ``__init__`` assigns every field, so the assignments it makes are not counted)."""
    generated = BuildConfig.__init__

    def __init__(self: BuildConfig, *args: Any, **kwargs: Any) -> None:
        generated(self, *args, **kwargs)
        names = [f.name for f in fields(BuildConfig) if f.init]
        object.__setattr__(self, "_given", set(names[: len(args)]) | set(kwargs))

    __init__.__doc__ = generated.__doc__
    BuildConfig.__init__ = __init__  # type: ignore[method-assign]


_track_init()

SOURCES = ("flag", "env", "config", "model-folder", "default", "manifest")  # manifest: a build-many entry
ENVIRONMENT = {"no_torchscript": "INTEROP_NO_TORCHSCRIPT"}  # settings an environment variable may give
MODEL_FOLDER_FILE = "interop.toml"
NOT_FROM_FILES = ("model", "config", "trust")  # command line / API argument only
NOT_FROM_MODEL_FOLDER = ("tolerance", "out", "trust", "allow_trace_warnings", "keep_failed", "compare_where",
                         "factory", "sampler")  # the last two import and run code
NOT_FROM_REPORTS = ("trust", "out", "keep_failed", "config")  # verify/bench: trust is their own flag
PATH_SETTINGS = ("samples", "labels", "out", "calibration")  # relative to the file that sets them


def _setting_names() -> tuple[str, ...]:
    global _NAMES
    if _NAMES is None:
        _NAMES = tuple(f.name for f in fields(BuildConfig) if f.init)
    return _NAMES


_NAMES: tuple[str, ...] | None = None


def setting_names() -> tuple[str, ...]:
    """Every setting, in BuildConfig's order."""
    return _setting_names()


# --- reading files ---------------------------------------------------------------------------------


def _read_toml(candidate: Path) -> dict[str, Any]:
    if not candidate.is_file():
        raise SpecError(f"config file {candidate} does not exist", hint="check the --config path")
    try:
        data = tomllib.loads(candidate.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"config file {candidate} is not valid TOML: {exc}", hint="fix the file") from exc
    if candidate.name == "pyproject.toml":
        data = data.get("tool", {}).get("interop", {})
    return data.get("interop", data) if isinstance(data.get("interop"), dict) else data


def read_config_file(path: str | None, model_dir: Path | None = None) -> dict[str, Any]:
    """Type-checked settings from ``path`` (interop.toml, or a pyproject.toml's [tool.interop]);
    without a path, from an ``interop.toml`` in ``model_dir`` (with the model-folder rules). Unknown
    keys are errors, not silently ignored."""
    if path:
        return _file_settings(Path(path), "config")
    candidate = model_dir / MODEL_FOLDER_FILE if model_dir else None
    return _file_settings(candidate, "model-folder") if candidate and candidate.is_file() else {}


def _file_settings(candidate: Path, kind: str) -> dict[str, Any]:
    settings = {str(k).replace("-", "_"): v for k, v in _read_toml(candidate).items()}
    allowed = set(_setting_names()) - set(NOT_FROM_FILES)
    unknown = sorted(k for k in settings if k not in _setting_names())
    if unknown:
        raise SpecError(f"unknown setting(s) {', '.join(unknown)} in {candidate}",
                        hint=f"known settings: {', '.join(sorted(allowed))}")
    if "trust" in settings:
        raise SpecError(f"{candidate} sets trust: trust never comes from a file",
                        hint="pass --trust on the command line if you trust the model")
    misplaced = sorted(k for k in settings if k in NOT_FROM_FILES)
    if misplaced:
        raise SpecError(f"{candidate} sets {', '.join(misplaced)}, which only the command line gives",
                        hint="remove it from the file")
    refused = sorted(k for k in settings if kind == "model-folder" and k in NOT_FROM_MODEL_FOLDER)
    if refused:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in refused)
        raise SpecError(f"{candidate} beside the model sets {', '.join(refused)}: a file that comes with a model "
                        "may not loosen verdicts, redirect output or run code", hint=f"pass {flags} as a flag or in a --config file")
    values = {k: checked(k, v, str(candidate)) for k, v in settings.items()}
    for key in PATH_SETTINGS:  # a path in a file names a file beside it, wherever interop runs
        if isinstance(values.get(key), str) and not Path(values[key]).is_absolute():
            values[key] = str(candidate.parent / values[key])
    return values


def checked(key: str, value: Any, where: str) -> Any:
    """``value`` as setting ``key`` takes it, or one-line SpecError saying what it must be."""
    hint = _hints()[key]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    if value is None and optional:
        return None
    if typing.get_origin(base) is list:
        if isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()] if key in ("targets", "compress") else [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        want = "a list of strings"
    elif base is bool:
        if isinstance(value, bool):
            return value
        want = "true or false (unquoted)"
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        want = "a whole number"
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        want = "a number"
    else:
        if isinstance(value, str):
            return value
        want = "a string"
    raise SpecError(f"setting {key} in {where} must be {want}, not {value!r}", hint=f"fix {key} in {where}")


def _hints() -> dict[str, Any]:
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(BuildConfig)
    return _HINTS


_HINTS: dict[str, Any] | None = None


# --- resolving ---------------------------------------------------------------------------------------


def model_folder_file(model: str) -> Path | None:
    """The ``interop.toml`` beside a model file, if there is one (a MODULE:FN source has none)."""
    path = Path(model)
    if not model or not path.is_file():
        return None
    candidate = path.parent / MODEL_FOLDER_FILE
    return candidate if candidate.is_file() else None


def resolve(config: BuildConfig) -> BuildConfig:
    """The settings of a build, resolved once: flag > --config file > interop.toml beside the
    model > default; ``provenance`` says which for every setting. Resolving a resolved config
    returns it unchanged. Values are validated (unknown choices are exit 2)."""
    if config.provenance:
        return config
    layers: list[tuple[str, dict[str, Any]]] = [("flag", {k: getattr(config, k) for k in config.given()}),
                                                ("env", _env_settings())]  # the machine's word, above files
    if config.config:
        layers.append(("config", _file_settings(Path(config.config), "config")))
    beside = model_folder_file(config.model)
    if beside is not None and not (config.config and _same(beside, Path(config.config))):
        layers.append(("model-folder", _file_settings(beside, "model-folder")))
    values: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    for name in _setting_names():
        source = next((s for s, layer in layers if name in layer), "default")
        provenance[name] = source
        if source != "default":
            values[name] = next(layer[name] for s, layer in layers if s == source)
    resolved = BuildConfig(**values)
    resolved.provenance = provenance
    validate(resolved)
    return resolved


def _env_settings() -> dict[str, Any]:
    """Settings from the environment (``ENVIRONMENT``), below every file: ``1/true/yes/on`` or
    ``0/false/no/off`` (empty: unset); anything else is exit 2."""
    import os

    values: dict[str, Any] = {}
    for name, variable in ENVIRONMENT.items():
        text = os.environ.get(variable, "").strip().lower()
        if not text:
            continue
        if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise SpecError(f"{variable}={os.environ[variable]!r} is not a yes or no",
                            hint=f"set {variable}=1 (or 0), or unset it")
        values[name] = text in ("1", "true", "yes", "on")
    return values


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def validate(config: BuildConfig, check_targets: bool = True) -> None:
    """Choices and ranges of a resolved config (exit 2 on an unknown one)."""
    from interop import targets, tasks
    from interop.compare import parse_tolerance

    if check_targets:
        targets.selected(config.targets)  # unknown names are exit 2
    if config.precision not in ("auto", "fp16", "fp32"):
        raise SpecError(f"unknown precision {config.precision!r}", hint="use --precision fp16, fp32 or auto")
    choices = (("exporter", config.exporter, ("auto", "torchscript", "dynamo")),
               ("coreml-shapes", config.coreml_shapes, ("range", "enumerated")),
               ("coreml-capture", config.coreml_capture, ("auto", "trace", "export")),
               ("task", config.task, ("auto", *tasks.names())))
    for flag, value, allowed in choices:
        if value not in allowed:
            raise SpecError(f"unknown --{flag} {value!r}", hint=f"use one of {', '.join(allowed)}")
    _check_torchscript_free(config)
    if config.opset is not None and not 7 <= config.opset <= 23:
        raise SpecError(f"--opset {config.opset} is outside what the exporters support", hint="use 7..23 (default 20)")
    if config.num_samples < 1:
        raise SpecError("--num-samples must be at least 1", hint="e.g. --num-samples 2")
    from interop.support.limits import check_generation_bounds

    check_generation_bounds(config.decode_steps, config.max_context)  # from a file or a report too
    for text in config.tolerance:
        parse_tolerance(text)
    from interop.compare import parse_compare_where

    parse_compare_where(list(config.compare_where))
    from interop.variants import check_choices as check_variants

    check_variants(config)  # --compress, --gate, --calibration


def _check_torchscript_free(config: BuildConfig) -> None:
    """--no-torchscript refuses the choices that are TorchScript by definition."""
    if not config.no_torchscript:
        return
    where = source_of(config, "no_torchscript")
    where = "INTEROP_NO_TORCHSCRIPT" if where == "env" else "--no-torchscript"
    for flag, value, torchscript in (("exporter", config.exporter, "torchscript"),
                                     ("coreml-capture", config.coreml_capture, "trace")):
        if value == torchscript:
            raise SpecError(f"--{flag} {value} uses TorchScript, which {where} rules out",
                            hint=f"drop --{flag} (the TorchScript-free build uses the dynamo exporter and "
                                 f"torch.export), or unset {where}")


def source_of(config: BuildConfig, name: str) -> str:
    """Where setting ``name`` came from (a config never resolved: given = flag, else default)."""
    if config.provenance:
        return config.provenance.get(name, "default")
    return "flag" if name in config.given() else "default"


# --- what the report records, and reading it back -------------------------------------------------


def recorded(config: BuildConfig, output_names: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The report's ``settings`` (every setting, output names as resolved) and ``settings_source``."""
    settings: dict[str, Any] = {}
    for name in _setting_names():
        if name == "model":
            continue
        value = getattr(config, name)
        settings[name] = list(value) if isinstance(value, (list, tuple)) else value
    settings["output_names"] = list(output_names)
    return settings, {name: source_of(config, name) for name in settings}


def tolerance_warnings(config: BuildConfig) -> list[str]:
    """One line per tolerance override: verdicts judged by the user's limits, not interop's."""
    where = {"flag": "--tolerance", "config": f"--config {config.config}",
             "manifest": "the build-many manifest"}.get(source_of(config, "tolerance"),
                                                                              source_of(config, "tolerance"))
    limits = [f"compare-where ({source_of(config, 'compare_where')}): output {text.partition(':')[0]} is compared "
              f"only at the positions {text.partition(':')[2]} selects" for text in getattr(config, "compare_where", [])]
    return [f"tolerance override ({where}): {text} replaces interop's default tolerance for the outputs it names"
            for text in config.tolerance] + limits


def from_report(report: dict[str, Any], trust: bool, command: str) -> BuildConfig:
    """The build's resolved settings, as its report recorded them, for ``verify`` and ``bench``
    (one function for both). ``trust`` is the command's own ``--trust``: a report never turns it
    on, and a source that needs it (a pickle, a state_dict + factory, a MODULE:FN entry point) is
    refused without it."""
    where = "the report"
    try:
        settings, source = report["settings"], report["model"]["source"]
        recorded_sources = report.get("settings_source") or {}
        values = {k: checked(k, v, where) for k, v in settings.items()
                  if k in _setting_names() and k not in NOT_FROM_REPORTS and k != "model"}
    except (KeyError, TypeError) as exc:
        raise SpecError(f"the report has no readable settings ({type(exc).__name__}: {exc})",
                        hint="pass the .report.json written by interop build") from exc
    if not isinstance(source, str):
        raise SpecError("the report names no source model", hint="pass the .report.json written by interop build")
    config = BuildConfig(model=source, trust=trust, **values)
    config.provenance = {**{k: str(v) for k, v in recorded_sources.items()}, "trust": "flag"}
    if not trust and needs_trust(report, config):
        fmt = report["model"].get("format")
        if ":" in source and not Path(source).exists():
            what = f"the source model {source} is a Python entry point (MODULE:FN) that imports and runs code"
        elif config.factory or config.sampler:
            what = (f"the report names the entry point {config.factory or config.sampler} (a factory or sampler) "
                    "that imports and runs code")
        else:
            what = f"the source model {source} ({fmt}) runs code when loaded"
        raise SpecError(f"{what}, and a report never grants trust", hint=f"pass --trust to {command} if you trust it")
    validate(config, check_targets=False)
    return config


def needs_trust(report: dict[str, Any], config: BuildConfig) -> bool:
    """Loading the report's source runs code: its format says so (a pickle, a state_dict +
    factory, a MODULE:FN; see the source kinds' ``formats``), or it names a factory or an entry
    point whatever format the report claims."""
    from interop import sources

    fmt = (report.get("model") or {}).get("format")
    entry_point = ":" in config.model and not Path(config.model).exists()
    return sources.runs_code(fmt) or bool(config.factory) or bool(config.sampler) or entry_point
