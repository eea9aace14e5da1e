"""One place draws the seeded samples of a build: every route (PyTorch sources, ONNX sources,
verify, bench) gets the same inputs for the same spec, case and seed. Value kinds (stages/kinds.py)
hold at every case; a ``--sampler`` (kinds.Sampler) replaces the inputs it returns."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from interop.stages.spec import Case, InputSpec, make_sample


def sample_seed(seed: int, case: str, index: int) -> int:
    """The seed of sample ``index`` of ``case``: stable across runs, routes and platforms."""
    return seed + 1000 * index + zlib.crc32(case.encode()) % 997


def draw(spec: InputSpec, case: Case, seed: int, count: int, pixels: set[str] | frozenset = frozenset(),
         sampler: Any = None) -> list[dict[str, np.ndarray]]:
    """``count`` seeded samples of ``case`` (image inputs as whole-number pixels)."""
    samples = [make_sample(spec, case, sample_seed(seed, case.name, i), sampler) for i in range(count)]
    for sample in samples:
        for name in pixels:
            sample[name] = np.round(sample[name])
    return samples


def example_sample(spec: InputSpec, seed: int) -> dict[str, Any]:
    """The example case's first sample (what ``bench`` times)."""
    from interop.stages.spec import cases

    return draw(spec, cases(spec)[0], seed, 1)[0]
