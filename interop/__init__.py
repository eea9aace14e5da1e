"""interop: one PyTorch model in, an ONNX model and a Core ML package out, proven to agree.

Public API::

    from interop import build, BuildConfig
    report = build(BuildConfig(model="model.pt", inputs=["x:1x3x224x224"], dynamic=["x:0=batch:1..64"]))
    report.passed, report.data["targets"]["onnx"]["path"]

    from interop import build_many
    summary = build_many("models.toml", out="fleet-out", jobs=2)   # every model in its own process
    summary["passed"], summary["counts"]
"""

from __future__ import annotations

from interop._version import __version__

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy modules load on first use, so `interop --help` stays instant
    from interop.settings import BuildConfig
    from interop.report import Report
    from interop.stages.spec import InputSpec, TensorSpec

__all__ = ["build", "build_many", "BuildConfig", "InputSpec", "TensorSpec", "Report", "__version__"]


def build(config: "BuildConfig") -> "Report":
    from interop.stages.pipeline import build as _build

    return _build(config)


def build_many(manifest: Any, out: Any = "interop-fleet", **options: Any) -> dict[str, Any]:
    """Build every model a manifest lists, each in its own process; see interop.fleet.build_many."""
    from interop.fleet import build_many as _build_many

    return _build_many(manifest, out, **options)


def __getattr__(name: str) -> Any:
    if name == "BuildConfig":
        from interop.settings import BuildConfig

        return BuildConfig
    if name in ("InputSpec", "TensorSpec"):
        from interop.stages import spec

        return getattr(spec, name)
    if name == "Report":
        from interop.report import Report

        return Report
    raise AttributeError(name)
