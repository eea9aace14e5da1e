"""What a target is: the protocol every target plugin implements, and what it hands back.

A target turns the prepared source model into one artifact in the work folder (``build``), says
which runtimes execute that artifact (``execute``), and optionally how to time it (``bench``),
describe it (``inspect``) and which source ops it cannot translate (``op_support``). The
pipeline, the report, ``verify``, ``bench``, ``inspect`` and ``check`` only ever talk to targets
through this protocol: adding a target is one new module that registers itself
(``@register_target``) and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# (runtime name, outputs per case and sample in output order | None, problem | None)
Execution = tuple[str, "dict[str, list[list[np.ndarray]]] | None", "str | None"]


@dataclass
class TargetContext:
    """Everything a target needs to build its artifact, prepared once for all targets."""

    config: Any  # interop.settings.BuildConfig, resolved
    source: Any  # interop.sources.Source
    spec: Any  # interop.stages.spec.InputSpec
    prep: Any  # interop.stages.prepare.Prepared: module as exported, cases, reference, names, trace
    work: Path  # the build's temporary folder inside --out
    stem: str
    meta: dict[str, Any]  # metadata every artifact carries (spec, labels, source hash, ...)
    report: Any  # interop.report.Report: for warnings a target wants to add

    @property
    def noise(self) -> Any:
        return self.prep.noise


@dataclass
class TargetResult:
    """A built artifact in the work folder and what the report says about it."""

    path: Path
    entry: dict[str, Any]  # the report's ``targets.<name>`` entry (status and path are set by the pipeline)
    diffs: list[Any] = field(default_factory=list)  # OutputDiff rows, one per runtime, case, sample, output
    not_executed: list[tuple[str, str]] = field(default_factory=list)  # (runtime, why)
    companions: list[Path] = field(default_factory=list)  # files shipped beside the artifact (external data)


class Target:
    """Base of every target plugin. Subclasses set ``name`` and ``suffix`` and implement ``build``
    and ``execute``; the rest has sensible defaults."""

    name: str = ""
    suffix: str = ""  # the artifact's suffix: <stem><suffix>
    default: bool = False  # part of the default --targets
    stage: str = ""  # what the progress line says while it builds
    verify_stage: str = ""
    display_name: str = ""  # how people write it ("ONNX", "Core ML"); its name when empty
    packages: tuple[str, ...] = ()  # distributions `interop doctor` reports the versions of
    variant_modules: tuple[str, ...] = ()  # modules registering its compressed variants (imported on first use)
    carries_folder_files: bool = False  # a Hugging Face folder's config and tokenizer files ship beside it
    not_applicable: dict[str, str] = {}  # variant -> why this target has no such variant (the skip note)

    @property
    def title(self) -> str:
        return self.display_name or self.name

    def precision(self, config: Any) -> str:
        """The precision whose tolerances judge this target's outputs."""
        return "fp32"

    def ensure_available(self) -> None:
        """Raise SpecError (exit 2, with the install hint) when this installation cannot build the
        target (an optional dependency missing); called for every target a build asks for."""

    def build(self, ctx: TargetContext) -> TargetResult:
        """Build the artifact into ``ctx.work`` and check it; raise ExportError when it cannot be built."""
        raise NotImplementedError

    def execute(self, path: Path, spec: Any, ref: Any, names: list[str], labels: list[str] | None = None,
                image: Any = None) -> Iterator[Execution]:
        """Run the artifact at ``path`` on every case and sample of ``ref`` in each runtime that can
        execute it here; a runtime that cannot run it yields its problem instead of outputs."""
        raise NotImplementedError

    def reference_for(self, prep: Any, spec: Any) -> Any:
        """The reference this target is compared against (an image input takes one picture: Core ML)."""
        return prep.ref

    def bench(self, path: Path, spec: Any, sample: dict[str, np.ndarray], warmup: int, runs: int,
              slow_runs: int, threads: int | None, **options: Any) -> dict[str, Any]:
        """Latencies of the artifact on ``sample``: {runtime: Latency JSON or {"skipped": why}}.
        ``options``: ``report`` (the bench Subject: the build's report and artifacts, its ``trust``)
        and ``compare_unsimplified``; a target uses what it needs and ignores the rest."""
        return {"skipped": f"interop cannot time {self.name} artifacts yet"}

    def inspect(self, path: Path) -> dict[str, Any]:
        return {"path": str(path), "format": self.name}

    def write_card(self, path: Path, card: dict[str, str]) -> None:
        """A model card's license / description into an artifact whose export wrote neither (the
        text-generation forms)."""

    def ship_for_clients(self, path: Path) -> list[str]:
        """What the artifact gains so a Hugging Face folder's clients (Optimum, onnxruntime-genai)
        load it as it is, as notes for its report entry (``carries_folder_files`` targets)."""
        return []

    def metadata(self, path: Path) -> dict[str, str]:
        """The metadata interop wrote into the artifact (``interop.spec`` and friends)."""
        return {}

    def feed(self, spec: Any, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What this target's runtime is fed for ``sample`` (e.g. Core ML: integers as int32)."""
        return sample

    def op_support(self, kind: str, opset: int | None) -> str:
        """'ok', or why the op (a TorchScript ``aten::`` kind) has no translation for this target;
        a reason starting with ``missing`` blocks the build (``interop check``'s ``blocked_targets``),
        any other is a note (``patched by interop``, a partial translation)."""
        return "ok"

    def uses_source_file(self, ctx: TargetContext) -> bool:
        """True when this target builds from the source file itself rather than from the PyTorch
        module (the ONNX target of an ONNX source): it does not depend on a converted module."""
        return self.reads_source(ctx.source, ctx.prep)

    def reads_source(self, source: Any, prep: Any) -> bool:
        """:meth:`uses_source_file` before a build context exists (``interop check``)."""
        return False

    def check_model(self, prep: Any, spec: Any, config: Any) -> dict[str, Any]:
        """What ``interop check`` finds beyond missing ops: keys for its result, ``ops`` rows among
        them (``{"op", "where", <target name>: why}``; e.g. Core ML: a value that overflows fp16).
        Empty: nothing."""
        return {}

    def doctor(self, versions: dict[str, str | None]) -> dict[str, bool]:
        """`interop doctor`'s runtimes of this target: {label: whether it runs here}."""
        return {}

    def bench_rows(self, timed: dict[str, Any], label: str) -> list[tuple[str, str, dict[str, Any], str]]:
        """The bench table's rows of what :meth:`bench` returned: (runtime, model, latency, note);
        ``label``: ``built`` or, for a compressed variant, its name and size ratio."""
        model = f"{self.name}, {label}" if label == "built" else label
        rows = [(runtime, model, lat, "") for runtime, lat in timed.items()
                if isinstance(lat, dict) and ("p50_ms" in lat or "skipped" in lat)]
        if "skipped" in timed:
            rows.append((self.name, label, timed, ""))
        return rows

    def bench_notes(self, timed: dict[str, Any]) -> list[str]:
        """Lines the bench table prints first about this target's timings."""
        return []

    def locate_departure(self, base: Path, variant: Path, feed: dict[str, np.ndarray], gate: Any) -> str | None:
        """Where a compressed variant first departs from its base artifact past ``gate`` (the first
        intermediate tensor), or None when this target cannot say."""
        return None

    def outputs_by_name(self, path: Path, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        """Every output of the artifact at ``path`` on ``feed``, by name (mixed-precision recipes)."""
        raise NotImplementedError(f"{self.name} artifacts cannot be run output by output")

    def weights(self, path: Path) -> dict[str, tuple[str, int]]:
        """Weight name -> (op kind of its first reader, bytes) of the artifact (variant coverage)."""
        return {}

    def coverage(self, base: Path, variant: Path) -> dict[str, Any] | None:
        """How much of ``base``'s weights ``variant`` compressed (interop.variants.coverage); None: no measure."""
        return None

    def owns(self, path: Path) -> bool:
        return path.name.endswith(self.suffix)

    def __repr__(self) -> str:
        return f"<target {self.name}>"
