"""Real Core ML (macOS only) and the choice of Core ML runtimes for this platform."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np


def native_available() -> bool:
    """True where coremltools can call the Core ML framework (macOS with its native module)."""
    if platform.system() != "Darwin":
        return False
    try:
        import coremltools.libcoremlpython  # noqa: F401
    except ImportError:
        return False
    return True


def run_native(path: str, sample: dict[str, np.ndarray]) -> dict[str, Any]:
    import coremltools as ct

    model = ct.models.MLModel(path, compute_units=ct.ComputeUnit.CPU_ONLY)
    return model.predict(sample)
