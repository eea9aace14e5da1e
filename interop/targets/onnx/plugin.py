"""The ONNX target's plugin: registered by the targets registry (targets/__init__.py ``BUILTIN``),
it builds, executes, inspects and benches through the modules of this folder (target.py: export,
simplify, metadata; bench.py; inspect.py; support.py: op support for ``check``; from_onnx.py: an
ONNX source; weights.py: weightless export)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interop.errors import first_line
from interop.support.memory import release
from interop.targets import register_target
from interop.targets.base import Target, TargetContext, TargetResult
from interop.targets.onnx.target import DEFAULT_OPSET, build_onnx, check_declared_shapes, full_check


@register_target
class OnnxTarget(Target):
    name = "onnx"
    suffix = ".onnx"
    default = True
    stage = "exporting and verifying ONNX"

    display_name = "ONNX"
    carries_folder_files = True  # Optimum and onnxruntime-genai load the output folder as it is

    def write_card(self, path: Path, card: dict[str, str]) -> None:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p for p in model.metadata_props}
        for key, value in card.items():
            prop = props.get(key) or model.metadata_props.add()
            prop.key, prop.value = key, value
        onnx.save_model(model, str(path))

    def ship_for_clients(self, path: Path) -> list[str]:
        from interop.sources import hf_ship

        if hf_ship.expose_logits(path):
            return ["output 'logits' added (the input of the softmax making classLabelProbs), as Optimum reads it"]
        return []
    packages = ("onnx", "onnxruntime", "onnxsim", "onnxscript")
    variant_modules = ("interop.targets.onnx.variants",)
    not_applicable = {f"palettize{b}": "palettization (k-means lookup tables) has no ONNX form: skipped"
                      for b in (4, 6, 8)}

    def reads_source(self, source: Any, prep: Any) -> bool:
        """An ONNX source (the source kind named like this target) ships as it is, unless interop
        adds to it (image preprocessing, classifier labels)."""
        return source.format == self.name and prep.image is None and not prep.labels

    def build(self, ctx: TargetContext) -> TargetResult:
        from interop.compare import diffs

        if self.uses_source_file(ctx):
            from interop.targets.onnx.from_onnx import build_onnx_file

            return build_onnx_file(ctx)
        from interop.stages.localise import first_onnx_departure, localise
        from interop.stages.prepare import output_dims

        prep, spec, config = ctx.prep, ctx.spec, ctx.config
        ref, names = prep.ref, prep.names
        dims = output_dims(spec, ref, prep.cases)

        def verify(path: Path, model: Any):
            """Run the file at ``path`` in ONNX Runtime on every case; ``model`` is its weightless
            ModelProto, for the declared shapes (the file is never parsed here)."""
            try:
                got = self._run_file(path, ref)
                for c in got:
                    check_declared_shapes(model, [o.shape for o in got[c][0]])
            except Exception as exc:
                return f"ONNX Runtime failed: {first_line(exc)}", None
            bad = [d for d in diffs("onnx", "onnxruntime", ref, got, names, "fp32", config.tolerance) if not d.passed]
            if bad:
                where = localise(lambda: first_onnx_departure(path, prep.module, ref.samples[bad[0].case][bad[0].sample],
                                                              spec.names()))
                return f"disagrees with PyTorch at case {bad[0].case}, output {bad[0].output}: {bad[0].note}{where}", None
            return None, got

        exporter = "dynamo" if getattr(config, "no_torchscript", False) else config.exporter
        result, got = build_onnx(prep.module, prep.export_args, spec, names, dims, ctx.work, ctx.stem,
                                 config.opset or DEFAULT_OPSET, exporter, verify, ctx.meta, ctx.noise, prep.trace,
                                 getattr(prep, "capture", None))
        full_check(result.model, ctx.work / f"{ctx.stem}.checked.onnx")
        entry = {"exporter": result.exporter, "opset": result.opset, "nodes_before": result.nodes_before,
                 "nodes_after": result.nodes_after, "simplified": result.simplified, "rejected": result.rejected,
                 "notes": result.notes, "external_data": result.external_data,
                 "verified_cases": [c.name for c in prep.cases]}
        data = result.path.parent / f"{ctx.stem}.onnx.data"
        return TargetResult(result.path, entry, diffs("onnx", "onnxruntime", ref, got, names, "fp32", config.tolerance),
                            companions=[data] if data.exists() else [])

    @staticmethod
    def _run_file(path: Path, ref: Any) -> dict[str, list[list[Any]]]:
        from interop.runtimes.onnxruntime import run_onnx, session
        from interop.stages.agreement import run_cases

        sess = session(str(path))  # holds its own copy of the weights: released before returning
        got = run_cases(lambda s: run_onnx(sess, s), ref)
        del sess
        release()
        return got

    def execute(self, path, spec, ref, names, labels=None, image=None):
        try:
            got = self._run_file(path, ref)
        except Exception as exc:
            yield "onnxruntime", None, f"ONNX Runtime cannot run it: {first_line(exc)}"
            return
        yield "onnxruntime", got, None

    def metadata(self, path: Path) -> dict[str, str]:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception:
            return {}
        return {p.key: p.value for p in model.metadata_props}

    def inspect(self, path: Path) -> dict[str, Any]:
        from interop.targets.onnx.inspect import inspect_onnx

        return inspect_onnx(path)

    def bench(self, path, spec, sample, warmup, runs, slow_runs, threads, report=None, compare_unsimplified=True):
        from interop.targets.onnx.bench import bench_onnx_target

        return bench_onnx_target(path, spec, sample, warmup, runs, threads, report, compare_unsimplified)

    def doctor(self, versions: dict[str, str | None]) -> dict[str, bool]:
        return {"onnxruntime": bool(versions.get("onnxruntime"))}

    def bench_rows(self, timed: dict[str, Any], label: str) -> list[tuple[str, str, dict[str, Any], str]]:
        if "unsimplified" not in timed:  # a compressed variant: the built model only
            return [("onnxruntime", label, timed.get("built", {"skipped": "not timed"}), "")]
        built, un = timed["built"], timed["unsimplified"]
        return [("onnxruntime", f"built, {built['nodes']} nodes" if "nodes" in built else "built", built, ""),
                ("onnxruntime", f"unsimplified, {un['nodes']} nodes" if "nodes" in un else "unsimplified", un,
                 un.get("note", ""))]

    def bench_notes(self, timed: dict[str, Any]) -> list[str]:
        if "speedup_p50" not in timed:
            return []
        return [f"built ONNX model vs the unsimplified export: p50 speed-up {timed['speedup_p50']:.2f}x "
                "(above 1: the built model is faster)"]

    def locate_departure(self, base: Path, variant: Path, feed: dict[str, Any], gate: Any) -> str | None:
        from interop.targets.onnx.measures import onnx_where

        return onnx_where(base, variant, feed, gate)

    def outputs_by_name(self, path: Path, feed: dict[str, Any]) -> dict[str, Any]:
        from interop.runtimes.onnxruntime import run_onnx, session

        sess = session(str(path))
        return dict(zip([o.name for o in sess.get_outputs()], run_onnx(sess, feed)))

    def weights(self, path: Path) -> dict[str, tuple[str, int]]:
        from interop.targets.onnx.measures import onnx_weights

        return onnx_weights(path)

    def coverage(self, base: Path, variant: Path) -> dict[str, Any] | None:
        from interop.targets.onnx.measures import onnx_coverage

        return onnx_coverage(base, variant)

    def op_support(self, kind: str, opset: int | None) -> str:
        from interop.targets.onnx.support import onnx_support

        return onnx_support(kind, opset or DEFAULT_OPSET)  # None: the opset a build would use
