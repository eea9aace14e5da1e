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


def run_all_outputs(path: Any, sample: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[Any]]:
    """Every node output of the model at ``path`` on ``sample`` (the graph's outputs extended by
    each intermediate tensor), in graph order, and the model's nodes: what localisation compares."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    existing = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for out in node.output:
            if out and out not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=out))
                existing.add(out)
    ort.set_default_logger_severity(4)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: sample[i.name] for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds))), list(model.graph.node)
