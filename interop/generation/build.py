"""``interop build --task text-generation``: a causal LM in, the past/present ONNX model (+
``genai_config.json``) and the stateful Core ML package out, each verified by greedy generation
against PyTorch (see ``docs/generation.md``)."""

from __future__ import annotations

import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from interop._version import __version__
from interop.errors import ExportError, SpecError
from interop.report import Report

from .check import PROMPT_LENGTH, choose_prompt
from .wrappers import cache_geometry

TASK = "text-generation"
TARGETS = ("onnx", "coreml")


def is_causal_lm(module: Any) -> bool:
    """A transformers ``*ForCausalLM`` (or a module with the same call signature and config)."""
    name = type(module).__name__
    config = getattr(module, "config", None)
    return config is not None and hasattr(module, "get_input_embeddings") and (
        name.endswith("ForCausalLM") or name.endswith("LMHeadModel"))


def check_config(config: Any) -> None:
    if config.max_context < PROMPT_LENGTH + config.decode_steps + 2:
        raise SpecError(f"--max-context {config.max_context} is too small for a {PROMPT_LENGTH}-token prompt and "
                        f"{config.decode_steps} decode steps", hint=f"use --max-context {PROMPT_LENGTH + config.decode_steps + 2} or more")
    if config.decode_steps < 1:
        raise SpecError("--decode-steps must be at least 1", hint="e.g. --decode-steps 16")
    unknown = [t for t in config.targets if t not in TARGETS]
    if unknown:
        raise SpecError(f"target(s) {', '.join(unknown)} have no {TASK} form", hint="use --targets onnx,coreml")
    from interop.variants.generation import check_compress

    check_compress(config)  # --compress: the variants a generation build supports


def build_generation(config: Any, source: Any = None) -> Report:
    """Run the generation build; returns the report (``report.passed`` decides the exit code)."""
    from interop.sources.torch_files import load_source
    from interop.stages.outdir import OutputFolder
    from interop.support.progress import stage

    check_config(config)
    folder = OutputFolder.for_model(config.model, config.out)
    if source is None:
        stage("loading the model")
        source = load_source(config.model, factory=config.factory, trust=config.trust)
    if not is_causal_lm(source.module):
        raise SpecError(f"{config.model} is not a causal language model ({type(source.module).__name__})",
                        hint="--task text-generation takes a transformers *ForCausalLM (or drop --task)")
    with folder.session() as work:
        report = start_report(config, source)
        run_generation(config, source.module, work, folder.stem, report)
        from interop.generation.genai_config import ship_lm_folder

        ship_lm_folder(source, work, folder.folder, report)  # tokenizer, config.json: clients load the folder as is
        finish(report)
        from interop.variants.generation import build_generation_variants  # --compress

        build_generation_variants(config, source.module, work, folder.stem, report, *report.reference)
        folder.commit(work, report, keep_failed=config.keep_failed, all_or_nothing=config.all_or_nothing)
    return report


def run_generation(config: Any, model: Any, work: Path, stem: str, report: Report) -> None:
    from interop.support.progress import stage
    from interop.support.quiet import captured

    stage("choosing a prompt and generating in PyTorch")
    geo = cache_geometry(model)
    prompt, info, ref = choose_prompt(model, geo["vocab"], config.decode_steps, config.seed)
    report.data["generation_prompt"] = {"tokens": prompt[0].tolist(), **info}
    report.reference = (prompt, ref)  # for the --compress variants' generation check
    if info["near_uniform"] or info["min_relative_margin"] < 1e-3:
        report.data["warnings"].append("the reference's logits are near-uniform or its greedy choices near-ties "
                                       f"(smallest top-2 margin {info['min_margin']:.3g}): token agreement proves little")
    for name in config.targets:
        stage(f"building the {name} {TASK} form")
        started = time.perf_counter()
        try:
            with captured() as noise:
                path, entry, companions = _export(name, config, model, work, stem)
        except ExportError as exc:
            report.target_failed(name, str(exc), time.perf_counter() - started)
            continue
        report.data["warnings"].extend(s for s in noise.summaries if s not in report.data["warnings"])
        if entry.get("stateful_error"):
            report.data["warnings"].append(f"the model cannot be made stateful for Core ML ({entry['stateful_error']}); "
                                           "the Core ML package takes and returns the past/present cache instead")
        report.artifacts[name], report.companions[name] = path, companions
        report.data["targets"][name] = {"status": "ok", "path": None, **entry,
                                        "seconds": round(time.perf_counter() - started, 3), "error": None}
        stage(f"generating with the {name} form")
        entries = verify_artifact(name, path, model, prompt, ref, config)
        if name == "coreml":
            entries = _precision(config, model, path, report.data["targets"][name], entries, prompt, ref)
        report.data["generation"].extend(entries)


def _export(name: str, config: Any, model: Any, work: Path, stem: str) -> tuple[Path, dict, list[Path]]:
    from .export import convert_coreml, convert_coreml_stateless, export_onnx, write_genai_config

    if name == "onnx":
        path = work / f"{stem}.onnx"
        entry, beside = export_onnx(model, path, config.opset)
        return path, entry, beside + [write_genai_config(work, model, f"{stem}.onnx", config.max_context)]
    path = work / f"{stem}.mlpackage"
    try:
        return path, convert_coreml(model, path, config.max_context, config.precision), []
    except ExportError as exc:  # say why, and ship the stateless form instead
        shutil.rmtree(path, ignore_errors=True)
        entry = convert_coreml_stateless(model, path, config.max_context, config.precision)
        return path, {**entry, "stateful_error": str(exc)}, []


def _precision(config: Any, model: Any, path: Path, entry: dict, entries: list[dict], prompt: np.ndarray,
               ref: tuple) -> list[dict]:
    """The cause of a Core ML generation disagreement; at --precision auto, fp32 islands."""
    from .precision import attribute, repair

    entry["precision_mode"] = config.precision
    found = attribute(entry, entries, path, prompt, ref, model, config.max_context)
    if found.cause == "fp16-precision" and config.precision == "auto":
        return repair(config, model, path, entry, entries, prompt, ref, found.errors)
    return entries


def verify_artifact(name: str, path: Path, model: Any, prompt: np.ndarray, ref: tuple, config: Any) -> list[dict]:
    """The generation entries of one artifact (every runtime that can execute it here)."""
    from .verify import verify_coreml, verify_onnx

    if name == "onnx":
        return verify_onnx(path, model, prompt, ref, config.seed)
    return verify_coreml(path, prompt, ref, config.precision)


def start_report(config: Any, source: Any) -> Report:
    from interop.compare import DEFAULT_TOLERANCES

    geo = cache_geometry(source.module)
    report = Report({
        "interop_version": __version__, "passed": False,
        "model": {"source": source.path, "format": source.format, "parameters": source.parameters,
                  "sha256": source.sha256, "architecture": type(source.module).__name__, **geo},
        "inputs": [{"name": "input_ids", "shape": [1, PROMPT_LENGTH], "dtype": "int64",
                    "dynamic": {"1": {"name": "sequence_length", "min": 1, "max": config.max_context}}}],
        "outputs": [{"name": "logits", "shape": [1, PROMPT_LENGTH, geo["vocab"]], "dtype": "float32"}],
        "cases": [], "targets": {t: {"status": "skipped"} for t in TARGETS}, "agreement": [], "generation": [], "variants": [],
        "tolerances": DEFAULT_TOLERANCES, "warnings": [],
        "settings": {"task": TASK, "seed": config.seed, "precision": config.precision, "factory": config.factory,
                     "trust": config.trust, "targets": list(config.targets), "max_context": config.max_context,
                     "decode_steps": config.decode_steps, "all_or_nothing": config.all_or_nothing,
                     "num_samples": config.num_samples, "tolerance": list(config.tolerance), "output_names": ["logits"]},
        "platform": {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version()},
    })
    report.__class__ = GenerationReport
    return report


def finish(report: Report) -> None:
    """Each built target's verdict from its generation entries (as ``Report.finish`` does from
    agreement rows)."""
    targets = report.data["targets"]
    for name, entry in targets.items():
        if entry["status"] != "ok":
            continue
        rows = [g for g in report.data["generation"] if g["target"] == name]
        executed = [g for g in rows if g["passed"] is not None]
        entry["executed_by"] = sorted({g["runtime"] for g in executed})
        if not executed:
            entry["status"], entry["error"] = "not-executed", "no runtime available here executed the artifact"
        elif not all(g["passed"] for g in executed):
            bad = next(g for g in executed if not g["passed"])
            entry["status"] = "disagrees"
            entry["error"] = f"generation disagrees with PyTorch ({bad['runtime']}, {bad['case']}: {bad['note']})"
    built = [t for t, e in targets.items() if e["status"] != "skipped"]
    report.data["passed"] = bool(built) and all(targets[t]["status"] == "ok" for t in built)


class GenerationReport(Report):
    """A report whose evidence is the ``generation`` entries (no single-shot agreement rows)."""

    def to_markdown(self) -> str:
        from interop.support.escape import md

        lines = [super().to_markdown(), "## Generation (greedy, teacher-forced on PyTorch's tokens)", "",
                 "| target | runtime | case | steps | tokens match | first divergent step | worst rel_l2 | "
                 "worst max_rel | passed | note |", "|---|---|---|---|---|---|---|---|---|---|"]
        for g in self.data["generation"]:
            lines.append(f"| {g['target']} | {g['runtime']} | {g['case']} | {g['steps']} | {g['tokens_match']} | "
                         f"{g['first_divergent_step']} | {_f(g.get('worst_rel_l2'))} | {_f(g.get('worst_max_rel'))} | "
                         f"{'yes' if g['passed'] else ('—' if g['passed'] is None else '**NO**')} | {md(g['note'])} |")
        return "\n".join(lines) + "\n"


def _f(v: Any) -> str:
    return "—" if v is None else f"{v:.2e}"


def report_prompt(old: dict[str, Any], model: Any, config: Any) -> np.ndarray:
    """The prompt a report recorded, as data: a list of token ids inside the model's vocabulary
    (an id outside it would index past the embedding table), no longer than the context allows."""
    tokens = (old.get("generation_prompt") or {}).get("tokens") if isinstance(old.get("generation_prompt"), dict) else None
    vocab = int(model.get_input_embeddings().num_embeddings)
    limit = config.max_context - config.decode_steps - 1
    hint = "pass the report interop build wrote for this model"
    if not isinstance(tokens, list) or not tokens or not all(type(t) is int for t in tokens):
        raise SpecError("the report's generation_prompt.tokens is not a list of token ids", hint=hint)
    bad = [t for t in tokens if not 0 <= t < vocab]
    if bad:
        raise SpecError(f"the report's prompt holds token id {bad[0]}, outside the model's vocabulary of {vocab}", hint=hint)
    if len(tokens) > limit:
        raise SpecError(f"the report's prompt has {len(tokens)} tokens; --max-context {config.max_context} with "
                        f"{config.decode_steps} decode steps leaves room for {limit}", hint=hint)
    return np.asarray([tokens], np.int64)


def verify_generation(old: dict[str, Any], config: Any) -> Report:
    """``interop verify`` of a generation report: regenerate with the report's prompt in PyTorch and
    in every runtime here, for each artifact the report shipped. ``config`` is the report's settings
    as settings.from_report reads them back (trust only from verify's own --trust)."""
    import copy

    from interop import sources

    from .runs import torch_reference

    source = sources.load(config)
    report = start_report(config, source)
    report.data["targets"] = copy.deepcopy(old["targets"])
    if source.sha256 != old["model"].get("sha256"):
        report.data["warnings"].append("the source model changed since the build (sha256 differs)")
    prompt = report_prompt(old, source.module, config)
    report.data["generation_prompt"] = old["generation_prompt"]
    ref = torch_reference(source.module, prompt, np.ones_like(prompt), config.decode_steps)
    for name, entry in report.data["targets"].items():
        if entry.get("status") != "ok":
            continue
        if not entry.get("path") or not Path(entry["path"]).exists():
            entry["status"], entry["error"] = "failed", f"artifact {entry.get('path')} is missing"
            continue
        from interop.trust import check_artifact

        check_artifact(Path(entry["path"]))  # a FIFO or a package linking out: refused, never opened
        entries = verify_artifact(name, Path(entry["path"]), source.module, prompt, ref, config)
        if name == "coreml":  # a disagreement's cause, as at build time (no islands: verify changes nothing)
            from .precision import CAUSE_KEYS, attribute

            if any(e["passed"] is False for e in entries):  # this run's cause, not the build's
                for key in CAUSE_KEYS:
                    entry.pop(key, None)
            attribute(entry, entries, Path(entry["path"]), prompt, ref, source.module, config.max_context)
        report.data["generation"].extend(entries)
    finish(report)
    return report
