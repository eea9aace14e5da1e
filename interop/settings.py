"""BuildConfig, and reading it from ``interop.toml`` or ``[tool.interop]`` in pyproject.toml.

Priority of every setting: CLI flags > config file > what the model carries (embedded spec) >
the ExportedProgram signature.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from interop.errors import SpecError


@dataclass
class BuildConfig:
    model: str = ""
    inputs: list[str] = field(default_factory=list)
    dynamic: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    out: str | None = None
    targets: list[str] = field(default_factory=lambda: ["onnx", "coreml"])
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
    task: str = "auto"  # auto (text-generation for a causal LM) | text-generation | default
    max_context: int = 512
    decode_steps: int = 16


_LIST_KEYS = {"inputs", "dynamic", "output_names", "targets", "tolerance"}


def read_config_file(path: str | None, model_dir: Path | None = None) -> dict[str, Any]:
    """Settings from ``path`` (interop.toml, or a pyproject.toml's [tool.interop]); without a path,
    an ``interop.toml`` beside the model. Unknown keys are errors, not silently ignored."""
    candidate = Path(path) if path else (model_dir / "interop.toml" if model_dir else None)
    if candidate is None or (not path and not candidate.exists()):
        return {}
    if not candidate.is_file():
        raise SpecError(f"config file {candidate} does not exist", hint="check the --config path")
    try:
        data = tomllib.loads(candidate.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"config file {candidate} is not valid TOML: {exc}", hint="fix the file") from exc
    if candidate.name == "pyproject.toml":
        data = data.get("tool", {}).get("interop", {})
    data = data.get("interop", data) if "interop" in data and isinstance(data["interop"], dict) else data
    known = {f.name for f in fields(BuildConfig)}
    settings = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SpecError(f"unknown setting(s) {', '.join(unknown)} in {candidate}",
                        hint=f"known settings: {', '.join(sorted(known - {'model'}))}")
    for key in _LIST_KEYS & set(settings):
        if isinstance(settings[key], str):
            settings[key] = [s.strip() for s in settings[key].split(",")] if key == "targets" else [settings[key]]
    return settings


def merge(cli: dict[str, Any], file_settings: dict[str, Any]) -> BuildConfig:
    """CLI values win where the user gave them (non-empty / non-None)."""
    merged = dict(file_settings)
    for key, value in cli.items():
        if value not in (None, [], ()):
            merged[key] = value
    return BuildConfig(**merged)
