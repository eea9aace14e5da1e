"""Why a Core ML package disagrees with PyTorch: ``fp16-precision``, ``conversion`` or ``capture``.

The same ML program runs again in the reference runtime with fp32 compute (every fp16-typed value
kept in fp32: ``LoadedModel.predict(promote_fp16=True)``) and is compared with the PyTorch
reference at the tolerance the package is held to:

* the fp32 run agrees -> ``fp16-precision`` (fp32 islands can repair it: coreml_precision.py);
* it disagrees too, and the captured graph (jit.trace / torch.export) agrees with eager PyTorch
  -> ``conversion``: coremltools translated something wrong; the first MIL op that departs is named;
* it disagrees and the capture itself differs from eager PyTorch -> ``capture``.
"""

from __future__ import annotations

from interop.stages.localise import _all_ops  # the one walk over a MIL block's ops, nested blocks included

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from interop.compare import metrics


@dataclass
class Cause:
    cause: str  # one of coreml_precision.CAUSES
    fp32_rel_l2: float  # the worst rel_l2 of the fp32 run on the failing sample
    op: str | None = None  # conversion: "<type> <name>" of the first MIL op that departs
    detail: str = ""

    def note(self) -> str:
        text = {"fp16-precision": f"cause fp16-precision: the same program in fp32 agrees "
                                  f"(rel_l2 {self.fp32_rel_l2:.2e})",
                "conversion": f"cause conversion: the same program in fp32 disagrees as well "
                              f"(rel_l2 {self.fp32_rel_l2:.2e}) while the captured graph agrees with PyTorch",
                "capture": "cause capture: the captured graph itself differs from eager PyTorch"}[self.cause]
        if self.op:
            text += f"; first MIL op that departs: {self.op}"
        return text + (f" ({self.detail})" if self.detail else "")


def fp32_outputs(path: Path, feed: dict[str, Any], names: list[str], labels: list[str] | None = None) -> list[np.ndarray]:
    """The package's outputs with fp32 compute (its fp16 values kept in fp32)."""
    from interop.runtimes import mil
    from interop.stages.preprocess import probs_from_dict

    out = mil.load_model(path).predict(feed, promote_fp16=True)
    return [probs_from_dict(out[n], labels) if isinstance(out[n], dict) and labels else np.asarray(out[n])
            for n in names]


def fp32_agrees(got: list[np.ndarray], ref: Any, case: str, index: int, names: list[str], precision: str,
                tolerances: Any) -> tuple[bool, float]:
    """(every output of sample ``index`` of ``case`` within the tolerance the package is held to
    (``--compare-where`` masks apply as in the agreement check), the worst rel_l2)."""
    from types import SimpleNamespace

    from interop.compare import diffs

    one = SimpleNamespace(outputs={case: [ref.outputs[case][index]]}, samples={case: [ref.samples[case][index]]},
                          compare_where=getattr(ref, "compare_where", None))
    rows = diffs("coreml", "interop-mil fp32", one, {case: [[g.astype(np.float32) if g.dtype == np.float16 else g
                                                              for g in got]]}, names, precision, tolerances)
    worst = max((r.rel_l2 if np.isfinite(r.rel_l2) else float("inf") for r in rows), default=0.0)
    return all(r.passed for r in rows), worst


def classify(fp32_ok: bool, fp32_rel: float, capture_differs: bool) -> Cause:
    if fp32_ok:
        return Cause("fp16-precision", fp32_rel)
    return Cause("capture" if capture_differs else "conversion", fp32_rel)


def first_conversion_op(path: Path, feed: dict[str, Any], module: Any, sample: dict[str, np.ndarray],
                        names: list[str], rel_l2: float = 1e-2, stateful: bool = False) -> str | None:
    """The first MIL op, in program order, that computes what PyTorch computes wrongly: after the
    last op whose fp32 value matches a PyTorch layer's output, the first op producing a value of
    the shape of the next layer's output (which matches nothing). ``"<type> <name>"``, or None.
    A ``stateful`` program runs from fresh (zero) states, as ``module``'s own buffers start."""
    from interop.runtimes import mil
    from interop.stages.localise import _module_outputs

    loaded = mil.load_model(path)
    state = {"state": loaded.make_state()} if stateful else {}
    _, trace = loaded.predict(feed, intermediate=True, promote_fp16=True, **state)
    torch_values = _module_outputs(module, sample, names)
    if not torch_values:
        return None
    producers = {v.name: op for op in _all_ops(loaded.program.functions["main"]) for v in op.outputs}
    values = [(n, v.astype(np.float32)) for n, v in trace.items()
              if isinstance(v, np.ndarray) and v.dtype.kind == "f" and producers.get(n) is not None
              and producers[n].op_type not in ("const", "cast")]
    last_match, missing = -1, None
    for ref in torch_values.values():
        hits = [i for i, (_, v) in enumerate(values) if v.shape == ref.shape and metrics(ref, v)["rel_l2"] <= rel_l2]
        if not hits:
            missing = ref
            break
        after = [i for i in hits if i > last_match]
        last_match = after[0] if after else last_match
    if missing is None:
        return None
    for name, v in values[last_match + 1:]:
        if v.shape == missing.shape:
            op = producers[name]
            return f"{op.op_type} {op.name!r}"
    return None



def hint(cause: Cause) -> str | None:
    """What to do about a cause (capture keeps the capture check's own wording)."""
    if cause.cause == "fp16-precision":
        return ("fp16 precision: build with --precision auto (fp16 with fp32 islands for the ops that drift) "
                "or --precision fp32")
    if cause.cause == "conversion":
        where = f" at MIL op {cause.op}" if cause.op else ""
        return (f"coremltools' translation is wrong{where}: the same program disagrees in fp32 too; "
                "`--targets onnx` ships the verified ONNX model alone")
    return None
