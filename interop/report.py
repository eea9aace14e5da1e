"""The report: JSON (machine; keys per DESIGN, add never rename), Markdown (human) and a short
console table."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from interop._version import __version__
from interop.compare import DEFAULT_TOLERANCES, OutputDiff

NOT_EXECUTED = "not executed"


class Report:
    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.artifacts: dict[str, Path] = {}
        self.suffixes: dict[str, str] = {}  # target -> its whole artifact suffix (.mlp.npz), for the commit
        self.companions: dict[str, list[Path]] = {}
        self.variant_artifacts: dict[str, Path] = {}  # "<target>:<variant>" -> compressed artifact (--compress)

    # --- assembly -------------------------------------------------------------------------------
    @classmethod
    def start(cls, config: Any, source: Any, spec: Any, names: list[str], ref: Any, all_cases: list[Any],
              target_names: list[str] | None = None) -> "Report":
        from interop import targets
        from interop.settings import recorded, tolerance_warnings

        example = ref.outputs["example"][0]
        dims = _output_dynamic(spec, ref, all_cases)
        settings, sources = recorded(config, names)
        return cls({
            "interop_version": __version__,
            "passed": False,
            "model": {"source": source.path, "format": source.format, "parameters": source.parameters,
                      "sha256": source.sha256},
            "inputs": [t.to_json() for t in spec.inputs],
            "outputs": [{"name": n, "shape": list(o.shape), "dtype": str(o.dtype), "dynamic": dims[i]}
                        for i, (n, o) in enumerate(zip(names, example))],
            "cases": [{"name": c.name, "sizes": dict(c.sizes), "samples": len(ref.samples[c.name]),
                       **({"tried": list(c.tried)} if getattr(c, "tried", ()) else {})} for c in all_cases],
            "targets": {t: {"status": "skipped"} for t in (target_names or targets.default_names())},
            "agreement": [],
            "tolerances": DEFAULT_TOLERANCES,
            "variants": [],
            "warnings": tolerance_warnings(config) + [
                f"the model fails at {c.sizes[0][0]} = {', '.join(map(str, c.tried))}; tested at "
                f"{c.sizes[0][0]} = {c.sizes[0][1]} instead" for c in all_cases if getattr(c, "tried", ())],
            "settings": settings,
            "settings_source": sources,
            "platform": {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version()},
        })

    def target_failed(self, target: str, error: str, seconds: float) -> None:
        self.data["targets"][target] = {"status": "failed", "path": None, "seconds": round(seconds, 3), "error": error}

    def target_built(self, target: str, result: Any, seconds: float) -> None:
        """A target's artifact exists in the work folder; its verdict comes from its agreement rows."""
        from interop import targets

        self.artifacts[target] = result.path
        self.suffixes[target] = targets.get(target).suffix  # looked up here, not mid-commit (a plugin import there
        self.companions[target] = list(result.companions)  # would replace the commit's SIGINT deferral)
        self.data["targets"][target] = {"status": "ok", "path": None, **result.entry, "seconds": round(seconds, 3),
                                        "error": None, "executed_by": []}
        self.add_agreement(result.diffs)
        for runtime, why in result.not_executed:
            self.not_executed(target, runtime, why)

    def set_path(self, target: str, path: Path | None) -> None:
        self.data["targets"][target]["path"] = str(path) if path else None

    def add_agreement(self, diffs: list[OutputDiff]) -> None:
        for d in diffs:
            self.data["agreement"].append(d.to_json())
            entry = self.data["targets"][d.target]
            if d.runtime not in entry.setdefault("executed_by", []):
                entry["executed_by"].append(d.runtime)

    def not_executed(self, target: str, runtime: str, why: str) -> None:
        self.data["targets"][target].setdefault("not_executed", []).append({"runtime": runtime, "why": why})
        self.data["warnings"].append(f"the {target} artifact was NOT executed by {runtime}: {why}")

    def add_noise(self, noise: Any) -> None:
        self.data["warnings"].extend(noise.summaries)
        if noise.other:
            self.data["third_party_output"] = noise.other[:50]

    def finish(self) -> None:
        """Each built target's verdict: ``ok`` (executed, every output within tolerance),
        ``disagrees`` (executed, some output is not), ``not-executed`` (no runtime here could run
        it: never a pass) or ``failed`` (not built). The build passes when every chosen target is ok."""
        targets = self.data["targets"]
        for name, entry in targets.items():
            if entry["status"] != "ok":
                continue
            rows = [a for a in self.data["agreement"] if a["target"] == name]
            if not entry.get("executed_by"):
                entry["status"] = "not-executed"
                entry["error"] = "no runtime available here executed the artifact: it is unverified"
            elif not all(a["passed"] for a in rows):
                bad = next(a for a in rows if not a["passed"])
                entry["status"] = "disagrees"
                entry["error"] = (f"disagrees with PyTorch ({bad['runtime']}, case {bad['case']}, output "
                                  f"{bad['output']}: {bad['note']})")
        built = [t for t, e in targets.items() if e["status"] != "skipped"]
        self.data["passed"] = bool(built) and all(targets[t]["status"] == "ok" for t in built)
        if any(a.get("degenerate") for a in self.data["agreement"]):
            self.data["warnings"].append("some reference outputs are degenerate (near zero or constant): agreement on "
                                         "them is not evidence that the artifact is right")

    def shippable(self) -> list[str]:
        """Targets whose artifact passed its own verdict."""
        return [t for t, e in self.data["targets"].items() if e["status"] == "ok" and t in self.artifacts]

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])

    # --- rendering ------------------------------------------------------------------------------
    def to_json_text(self) -> str:
        return json.dumps(self.data, indent=2, default=str) + "\n"

    def summary_rows(self) -> list[dict[str, Any]]:
        """Worst agreement per (target, runtime, case, output)."""
        worst: dict[tuple, dict[str, Any]] = {}
        for a in self.data["agreement"]:
            key = (a["target"], a["runtime"], a["case"], a["output"])
            cur = worst.get(key)
            if cur is None or _rel(a) > _rel(cur) or not a["passed"]:
                worst[key] = a if cur is None or cur["passed"] or not a["passed"] else cur
        return list(worst.values())

    def to_markdown(self) -> str:
        from interop.support.escape import md  # names, errors and notes are text from files: escaped

        d = self.data
        lines = [f"# interop report: {md(Path(d['model']['source']).name)}", "",
                 f"**{'PASSED' if d['passed'] else 'FAILED'}** — interop {d['interop_version']}, "
                 f"{md(d['model']['format'])} model, {d['model']['parameters']:,} parameters", "", "## Inputs", "",
                 "| name | shape | dtype | dynamic |", "|---|---|---|---|"]
        for i in d["inputs"]:
            dyn = ", ".join(f"axis {a} = {v['name']} ({v['min']}..{v['max']}"
                            f"{'/' + str(v['step']) if v.get('step', 1) > 1 else ''})" for a, v in i["dynamic"].items())
            lines.append(f"| {md(i['name'])} | {md(i['shape'])} | {md(i['dtype'])} | {md(dyn) if dyn else '—'} |")
        lines += ["", "## Outputs", "", "| name | shape | dtype |", "|---|---|---|"]
        lines += [f"| {md(o['name'])} | {md(o['shape'])} | {md(o['dtype'])} |" for o in d["outputs"]]
        lines += ["", "## Targets", ""]
        for name, t in d["targets"].items():
            lines.append(f"### {md(name)}: {md(t['status'])}")
            for key, value in t.items():
                if key not in ("status",) and value not in (None, [], ""):
                    lines.append(f"- {md(key)}: {md(value)}")
            lines.append("")
        lines += ["## Agreement with PyTorch (worst sample per case)", "",
                  "| target | runtime | case | output | max_abs | rel_l2 | cosine | PSNR dB | top-1 | limit rel_l2 | passed | note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for a in self.summary_rows():
            lines.append(f"| {md(a['target'])} | {md(a['runtime'])} | {md(a['case'])} | {md(a['output'])} | {_f(a['max_abs'])} | "
                         f"{_f(a['rel_l2'])} | {_f(a['cosine'], 6)} | {_f(a['psnr_db'], 1)} | {_f(a['top1'])} | "
                         f"{_f(a['tolerance']['rel_l2'])} | {'yes' if a['passed'] else '**NO**'} | {md(a['note'])} |")
        from interop.variants.build import markdown as variants_markdown

        lines += variants_markdown(d)
        lines += ["", "## Tolerances", ""]
        lines += [f"- {p}: rel_l2 ≤ {t['rel_l2']:g}, max |diff| ≤ {t['max_rel']:g} × max |reference|"
                  for p, t in d["tolerances"].items()]
        lines += ["- ONNX is checked at fp32 tolerances; Core ML at its --precision", ""]
        if d["warnings"]:
            lines += ["## Warnings", ""] + [f"- {md(w)}" for w in d["warnings"]] + [""]
        return "\n".join(lines)


def _rel(a: dict[str, Any]) -> float:
    v = a["rel_l2"]
    return float("inf") if isinstance(v, str) else float(v)


def _f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if digits > 2:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}e}" if abs(v) < 0.01 or abs(v) > 1e4 else f"{v:.{max(digits, 3)}g}"


def _output_dynamic(spec: Any, ref: Any, all_cases: list[Any]) -> list[dict[str, str]]:
    from interop.stages.prepare import output_dims

    return [{str(a): n for a, n in dims.items()} for dims in output_dims(spec, ref, all_cases)]
