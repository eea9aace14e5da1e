#!/usr/bin/env python
"""Where `interop build`'s time and memory go, stage by stage (used by bench_build.py --phases).

Each build runs in a fresh process with timers patched around the pipeline's stages, wherever
the pipeline currently looks them up (measurement only: nothing behaves differently; names the
pipeline no longer has are skipped). Imports are timed first, in the order a build needs them.
Per stage: self wall and CPU time (a stage's time excludes the timed stages inside it), calls,
and the process's peak RSS when the stage first ended; per call, the RSS on entry, the peak RSS
inside it and the RSS after (Linux), and the process's peak.

    python scripts/profile_build.py samples/lstm_sum.pt
    python scripts/profile_build.py scripts.scaling:bert_base --input input_ids:1x32:int64:0..30521 \
        --input attention_mask:1x32:int64:1..1 --targets onnx --allow-trace-warnings
    python scripts/profile_build.py samples/lstm_sum.pt --lazy-imports   # memory as in the CLI

With ``--lazy-imports`` the libraries are not imported (nor timed) up front and calls into them
are not timed: each is imported where the build first needs it, as in the CLI, so the memory
timeline matches a real build's (imports first costs ~60 MB early: coremltools).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def phases(models: list[tuple[str, str, tuple[str, ...]]]) -> None:
    """One instrumented build per (name, source, flags), each in a fresh process; prints seconds
    and peak memory per stage."""
    for name, source, flags in models:
        with tempfile.TemporaryDirectory(prefix="interop-phases-") as tmp:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--phase-child", source, tmp, *flags]
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PHASES:")), None)
            if line is None:
                print(f"{name}: failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            print_phases(name, json.loads(line[len("PHASES:"):]))


def print_phases(name: str, data: dict[str, Any]) -> None:
    print(f"\n{name}: {data['total']:.1f}s wall, {data['cpu']:.1f}s CPU in-process (passed={data['passed']}, "
          f"onnx via {data['exporter']}, Core ML via {data['capture']}); self time per stage, and the peak RSS "
          "when the stage first raised it")
    for label, (wall, cpu, calls, rss) in sorted(data["phases"].items(), key=lambda kv: -kv[1][1]):
        if cpu >= 0.03 or wall >= 0.1:
            print(f"  {label:40s} {wall:7.2f}s wall {cpu:7.2f}s cpu  x{calls:<3d} peak {rss:6.0f} MB")
    for rejected in data.get("rejected") or []:
        for r in rejected or []:
            print(f"  rejected {r.get('exporter') or r.get('path')}: {r['reason'][:160]}")
    steps, last = [], 0.0
    for label, (_, _, _, rss) in sorted(data["phases"].items(), key=lambda kv: kv[1][3]):
        if rss - last >= 20:
            steps.append(f"{label} {rss:.0f}")
            last = rss
    print("  peak RSS MB as it grew: " + " -> ".join(steps))
    if data.get("timeline"):
        print(f"  memory per stage call, MB (RSS on entry -> peak inside -> RSS after); process peak "
              f"{data.get('peak_mb', 0):.0f} MB:")
        for label, rss_in, peak, rss_out in data["timeline"]:
            if peak - rss_in >= 20 or abs(rss_out - rss_in) >= 20:
                print(f"    {label:40s} {rss_in:6.0f} -> {peak:6.0f} (+{peak - rss_in:4.0f}) -> {rss_out:6.0f}")
    groups: dict[str, float] = {}
    for label, (_, cpu, _, _) in data["phases"].items():
        group = "imports" if label.startswith("import") else label.split(":")[0] if ":" in label else "prepare/other"
        groups[group] = groups.get(group, 0.0) + cpu
    print("  CPU by group: " + ", ".join(f"{g} {c:.1f}s" for g, c in sorted(groups.items(), key=lambda kv: -kv[1])))


def phase_child(source: str, out: str, flags: list[str]) -> None:
    """Build ``source`` in this process with timers around the pipeline's stages (self time:
    a stage's time excludes the timed stages it calls). Imports are timed first, separately, in
    the order a build first needs them."""
    started, cpu0 = time.perf_counter(), time.process_time()
    timer = _Timer()
    lazy = "--lazy-imports" in flags  # as the CLI does: each library imported where first needed
    for name in () if lazy else ("torch", "onnx", "torch.onnx", "onnxruntime", "onnxsim", "coremltools"):
        with timer.span(f"import {name}"):
            __import__(name)
    with timer.span("import interop (pipeline, mil runtime)"):
        import importlib

        for module in ("interop.stages.pipeline", "interop.runtimes.mil"):
            importlib.import_module(module)
    _instrument(timer, libraries=not lazy)
    from interop.settings import BuildConfig
    from interop.stages.pipeline import build

    sys.path.insert(0, str(REPO))
    options = {"inputs": [], "dynamic": []}
    for flag, value in zip(flags, flags[1:]):
        if flag in ("--input", "--dynamic"):
            options["inputs" if flag == "--input" else "dynamic"].append(value)
        elif flag == "--targets":
            options["targets"] = value.split(",")
    report = build(BuildConfig(model=source, out=out, allow_trace_warnings="--allow-trace-warnings" in flags,
                               **options))
    targets = report.data["targets"]
    data = {"total": time.perf_counter() - started, "cpu": time.process_time() - cpu0, "passed": report.passed,
            "exporter": targets["onnx"].get("exporter"), "capture": targets["coreml"].get("capture"),
            "rejected": [targets["onnx"].get("rejected"), targets["coreml"].get("rejected")],
            "phases": timer.totals, "timeline": timer.timeline,
            "peak_mb": max(timer.peak_mb, _status_mb("VmHWM"))}
    print("PHASES:" + json.dumps(data), flush=True)


class _Timer:
    """Self time (wall, CPU) per label; the process's peak RSS when the label first ended; and, per
    call, the RSS on entry and the peak RSS reached inside it (the kernel's high-water mark,
    re-armed through /proc/self/clear_refs at every span boundary, so each span sees its own peak;
    the process-wide peak is kept here, as ``peak_mb``)."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}
        self.stack: list[list[float]] = []  # [child wall, child cpu, peak MB] per open span
        self.timeline: list[tuple[str, float, float, float]] = []  # (label, rss in, peak inside, rss out) MB
        self.peak_mb = 0.0

    def _observe(self) -> float:
        """The high-water mark since the last re-arm, folded into every open span; then re-arm."""
        hwm = _status_mb("VmHWM")
        self.peak_mb = max(self.peak_mb, hwm)
        for entry in self.stack:
            entry[2] = max(entry[2], hwm)
        _rearm_hwm()
        return hwm

    def span(self, label: str) -> Any:
        import resource

        timer = self

        class _Span:
            def __enter__(self) -> None:
                timer._observe()
                self.rss = _status_mb("VmRSS")
                self.t, self.c = time.perf_counter(), time.process_time()
                timer.stack.append([0.0, 0.0, self.rss])

            def __exit__(self, *exc: Any) -> None:
                wall, cpu = time.perf_counter() - self.t, time.process_time() - self.c
                timer._observe()
                child = timer.stack.pop()
                timer.timeline.append((label, self.rss, child[2], _status_mb("VmRSS")))
                peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, timer.peak_mb)
                entry = timer.totals.setdefault(label, [0.0, 0.0, 0, peak])
                entry[0] += wall - child[0]
                entry[1] += cpu - child[1]
                entry[2] += 1
                if timer.stack:
                    timer.stack[-1][0] += wall
                    timer.stack[-1][1] += cpu

        return _Span()

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.span(label):
                return fn(*args, **kwargs)

        setattr(owner, attr, timed)


def _status_mb(key: str) -> float:
    """A field of /proc/self/status in MB (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _rearm_hwm() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


STAGES = [  # (attribute, label): patched in every interop module that holds the name
    ("load_source", "load model"), ("resolve_spec", "resolve spec"), ("reference", "PyTorch reference outputs"),
    ("single_image_cases", "coreml: image-case reference"), ("trace_with_warnings", "trace (warnings capture)"),
    ("trace_consistency", "trace consistency check"), ("_export_args", "export args"),
    ("export_once", "onnx: export"), ("name_dims", "onnx: name dims"), ("save", "onnx: save"),
    ("session", "onnx: ORT session create"), ("run_onnx", "onnx: ORT run"), ("simplify", "onnx: onnxsim"),
    ("simplify_stored", "onnx: onnxsim (weightless)"), ("attach", "onnx: store exported weights"),
    ("write", "onnx: write artifact"), ("store_weights", "onnx: store simplified weights"),
    ("release", "malloc_trim"),
    ("full_check", "onnx: onnx.checker full"), ("check_declared_shapes", "onnx: check declared shapes"),
    ("first_onnx_departure", "onnx: localise departure"), ("deployment_target", "coreml: deployment target"),
    ("_convert", "coreml: ct.convert"), ("_renamed", "coreml: rename features"),
    ("first_coreml_departure", "coreml: localise departure"),
]


def _instrument(timer: _Timer, libraries: bool = True) -> None:
    """Timers around the stages, patched where the pipeline looks them up (measurement only: no
    behaviour changes). Names the pipeline no longer has are skipped. ``libraries``: also around
    calls into torch, onnx, onnxsim and coremltools (which imports them; without it, as with
    --lazy-imports, they are imported where the build first needs them, as in the CLI)."""
    import importlib

    from interop.stages.outdir import OutputFolder
    from interop.runtimes import mil

    modules = []
    for name in ("interop.stages.pipeline", "interop.stages.prepare", "interop.stages.preflight", "interop.targets.onnx.target",
                 "interop.targets.onnx.weights",
                 "interop.targets.coreml.target", "interop.runtimes.onnxruntime", "interop.runtimes.torch_ref",
                 "interop.sources.torch_files", "interop.stages.resolve"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
    for attr, label in STAGES:
        for module in modules:
            if callable(getattr(module, attr, None)):
                timer.wrap(module, attr, label)
    timer.wrap(OutputFolder, "commit", "commit output folder")
    if libraries:
        import coremltools as ct
        import onnx
        import onnxsim
        import torch

        for owner, attr, label in [(onnx, "load", "onnx: onnx.load"),
                                   (ct.models.MLModel, "save", "coreml: save package"),
                                   (onnxsim, "simplify", "onnx: onnxsim.simplify"),
                                   (torch.jit, "trace", "torch.jit.trace"),
                                   (torch.export, "export", "torch.export.export")]:
            timer.wrap(owner, attr, label)
    original = mil.load_model

    def load_model(*args: Any, **kwargs: Any) -> Any:
        with timer.span("coreml: mil load package"):
            loaded = original(*args, **kwargs)
        timer.wrap(loaded, "predict", "coreml: mil predict")
        return loaded

    mil.load_model = load_model


def main(argv: list[str]) -> int:
    if argv[:1] == ["--phase-child"]:  # --phase-child SOURCE OUT [FLAG...]: the instrumented process
        phase_child(argv[1], argv[2], argv[3:])
        return 0
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    source = argv[0]
    name = Path(source).stem if ":" not in source else source.split(":")[1]
    phases([(name, source, tuple(argv[1:]))])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
