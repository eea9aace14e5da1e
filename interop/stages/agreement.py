"""One agreement path: run an artifact's runtime over every case and sample of a reference, and
compare (``interop.compare.diffs``). Every target, ``verify`` and the ONNX-file source use these."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from interop.compare import OutputDiff, diffs

Outputs = dict[str, list[list[np.ndarray]]]


def run_cases(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], ref: Any) -> Outputs:
    """``run(sample) -> outputs in order`` over every case and sample of ``ref.samples``."""
    return {case: [run(sample) for sample in samples] for case, samples in ref.samples.items()}


def compare_runs(target: str, runtime: str, ref: Any, got: Outputs, names: list[str], precision: str,
                 tolerances: Any) -> list[OutputDiff]:
    return diffs(target, runtime, ref, got, names, precision, tolerances)


def first_failure(rows: list[OutputDiff]) -> OutputDiff | None:
    return next((d for d in rows if not d.passed), None)
