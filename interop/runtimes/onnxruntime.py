"""Run an ``.onnx`` file with ONNX Runtime (CPU)."""

from __future__ import annotations

from typing import Any

import numpy as np


def session(path: str, intermediate: bool = False) -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # failures surface as exceptions in the report, not C++ log lines
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def run_onnx(sess: Any, sample: dict[str, np.ndarray]) -> list[np.ndarray]:
    feeds = {i.name: sample[i.name] for i in sess.get_inputs()}
    return sess.run(None, feeds)
