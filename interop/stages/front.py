"""The one front end of build, check, verify and bench: the source model loaded, the task it is
built as (interop/tasks/), its input spec resolved (flags > config > what the model carries, or a
report's), the request's size refused when absurd, and the model prepared (seeded samples, the
PyTorch reference outputs, one trace). What comes after -- exporting each target, comparing,
reporting -- is the caller's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from interop.errors import SpecError
from interop.stages.spec import InputSpec, case_shape, cases
from interop.support.limits import _gib, check_sample_count, memory_bytes


@dataclass
class Front:
    """What the front end hands on. ``spec`` and ``prep`` are None when the task builds the
    model its own way (``task.own_build``: text generation)."""

    source: Any
    task: Any
    spec: InputSpec | None = None
    prep: Any = None


def front_end(config: Any, kind: Any, spec: InputSpec | None = None, noise: Any = None,
              single_shot: bool = False) -> Front:
    """Load the source with ``kind`` (torch's warnings captured into ``noise``), pick its task
    (``single_shot``: the default task whatever the model: check, and a default report's replay),
    resolve the spec (unless given: a report's), check the request, prepare."""
    from interop import tasks
    from interop.stages.prepare import prepare
    from interop.support.progress import stage
    from interop.support.quiet import Noise, captured

    load_noise = noise if noise is not None else Noise()
    stage("loading the model")
    with captured(load_noise):  # torch's warnings while building / unpickling the model
        source = kind.load(config.model, config.factory, config.trust)
    task = tasks.get(tasks.DEFAULT) if single_shot else tasks.for_build(config, source)
    if task.own_build:
        return Front(source, task)
    if hasattr(source, "as_single_shot"):  # a causal LM folder built as one forward (sources/hf_folder.py)
        source.as_single_shot()
    if spec is None:
        from interop.stages.resolve import resolve_spec

        spec = kind.resolve_spec(config, source) or resolve_spec(config, source)
    check_request(spec, config.num_samples)  # absurd sizes refused before any work
    stage("running PyTorch on the sample inputs and tracing")
    prep = prepare(config, source, spec)
    prep.noise.other[:0] = load_noise.other
    return Front(source, task, spec, prep)


def reload(report: dict[str, Any], config: Any) -> tuple[Any, Any, Any]:
    """The build's source, input spec and prepared state again, from its report and the settings
    ``from_report`` read back (verify and bench's re-export)."""
    from interop import sources

    names = report["settings"]["output_names"]
    spec = InputSpec.from_json({"inputs": report["inputs"], "outputs": names})
    spec.output_names = [n for n in names if n != "classLabelProbs"] or spec.output_names
    front = front_end(config, sources.for_model(config.model), spec, single_shot=True)  # its shapes are data too
    return front.source, front.spec, front.prep


def check_request(spec: Any, num_samples: int) -> None:
    """One sample's inputs must fit in an eighth of memory, all samples of all cases in a quarter."""
    import numpy as np

    check_sample_count(num_samples)
    budget = memory_bytes()
    total = 0
    for case in cases(spec):
        one = sum(math.prod(case_shape(t, case)) * np.dtype(t.dtype).itemsize for t in spec.inputs)
        if one > budget // 8:
            raise SpecError(f"one sample of case {case.name} needs {_gib(one)} of inputs; the limit is "
                            f"{_gib(budget // 8)} (an eighth of this machine's {_gib(budget)} memory)",
                            hint="use smaller --input shapes or dynamic ranges")
        total += one * num_samples
    if total > budget // 4:
        raise SpecError(f"the samples need {_gib(total)} of inputs in all; the limit is {_gib(budget // 4)} "
                        f"(a quarter of this machine's memory)", hint="use fewer --num-samples or smaller shapes")
