"""The `interop` command: parse -> call the library -> render. The one error boundary: an
InteropError becomes one red line on stderr and its exit code (2 bad input, 1 target failed);
``--debug`` shows tracebacks."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="One PyTorch model in; an ONNX model and a Core ML package out, proven to agree.")
_STATE = {"debug": False}


def _lazy_help_flag() -> None:
    """typer (0.29) coerces every parameter value through a pydantic TypeAdapter, including the
    implicit --help flag's ``None`` on every run where --help is not given: importing pydantic
    for that costs ~0.12 s CPU, half of `interop doctor`. That value only feeds the help callback,
    which ignores ``None``; pass it through. A no-op where typer has no such hook."""
    param = getattr(sys.modules.get("typer.core"), "_TyperParameter", None)
    original = getattr(param, "process_value", None)
    if original is None:
        return

    def process_value(self, ctx, value):
        if value is None and self.name == "help":
            return None
        return original(self, ctx, value)

    param.process_value = process_value


_lazy_help_flag()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors.")) -> None:
    _STATE["debug"] = debug


@app.command()
def build(
    model: str = typer.Argument(..., help="Model file (.pt TorchScript / torch.save, .pt2 ExportedProgram) or MODULE:FN."),
    input: List[str] = typer.Option([], "--input", help="NAME:SHAPE[:DTYPE[:LOW..HIGH]], e.g. x:1x3x224x224"),
    dynamic: List[str] = typer.Option([], "--dynamic", help="NAME:AXIS=DIM[:MIN..MAX], e.g. x:0=batch:1..64"),
    output_name: List[str] = typer.Option([], "--output-name", help="Name of each output, in order."),
    out: Optional[str] = typer.Option(None, "--out", help="Output folder (default: the model's folder)."),
    targets: Optional[str] = typer.Option(None, "--targets", help="Comma-separated: onnx,coreml"),
    precision: Optional[str] = typer.Option(None, "--precision", help="Core ML compute precision: fp16 (default) or fp32"),
    config: Optional[str] = typer.Option(None, "--config", help="interop.toml or pyproject.toml with [tool.interop]"),
    factory: Optional[str] = typer.Option(None, "--factory", help="MODULE:FN building the model for a state_dict"),
    trust: bool = typer.Option(False, "--trust", help="Allow unpickling a torch.save'd module (runs code from the file)."),
    samples: Optional[str] = typer.Option(None, "--samples", help=".npz of input arrays named after the inputs"),
    json_out: bool = typer.Option(False, "--json", help="Print exactly the JSON report on stdout, nothing else."),
    exporter: Optional[str] = typer.Option(None, "--exporter", help="ONNX exporter: auto, torchscript, dynamo"),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default 20)"),
    deployment_target: Optional[str] = typer.Option(None, "--deployment-target", help="Core ML target, e.g. iOS16"),
    coreml_shapes: Optional[str] = typer.Option(None, "--coreml-shapes", help="range (default) or enumerated"),
    tolerance: List[str] = typer.Option([], "--tolerance", help="NAME:rel_l2=1e-3[,max_rel=...] per output ('*' all)"),
    keep_failed: bool = typer.Option(False, "--keep-failed", help="Keep rejected artifacts as <stem>.FAILED.*"),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", help="Seeded samples per shape case (default 2)"),
    labels: Optional[str] = typer.Option(None, "--labels", help="Class labels file, one per line: a classifier"),
    image: Optional[str] = typer.Option(None, "--image", help="Input that takes raw image pixels (RGB, 0..255)"),
    mean: Optional[str] = typer.Option(None, "--mean", help="Per-channel mean, e.g. 0.485,0.456,0.406"),
    std: Optional[str] = typer.Option(None, "--std", help="Per-channel std, e.g. 0.229,0.224,0.225"),
    pixel_scale: Optional[float] = typer.Option(None, "--pixel-scale", help="Pixels are divided by this first (255)"),
    coreml_capture: Optional[str] = typer.Option(None, "--coreml-capture", help="auto, trace or export"),
    allow_trace_warnings: bool = typer.Option(False, "--allow-trace-warnings",
                                              help="Build although tracing hit data-dependent control flow."),
    task: Optional[str] = typer.Option(None, "--task", help="auto (default), text-generation or default"),
    max_context: Optional[int] = typer.Option(None, "--max-context", help="text-generation: Core ML cache positions (512)"),
    decode_steps: Optional[int] = typer.Option(None, "--decode-steps", help="text-generation: greedy steps checked (16)"),
) -> None:
    """Export MODEL to ONNX and Core ML and check both against PyTorch."""

    def run() -> int:
        from interop.settings import merge, read_config_file
        from interop.stages.pipeline import build as run_build

        cli = {"model": model, "inputs": input, "dynamic": dynamic, "output_names": output_name, "out": out,
               "targets": [t.strip() for t in targets.split(",") if t.strip()] if targets is not None else None,
               "precision": precision, "factory": factory, "trust": trust or None, "samples": samples,
               "exporter": exporter, "opset": opset, "deployment_target": deployment_target,
               "coreml_shapes": coreml_shapes, "tolerance": tolerance, "keep_failed": keep_failed or None,
               "num_samples": num_samples, "labels": labels, "image": image, "mean": mean, "std": std,
               "pixel_scale": pixel_scale, "coreml_capture": coreml_capture,
               "allow_trace_warnings": allow_trace_warnings or None,
               "task": task, "max_context": max_context, "decode_steps": decode_steps}
        cfg = merge(cli, read_config_file(config))
        report = _with_progress(lambda: run_build(cfg), quiet=json_out)
        if json_out:
            sys.stdout.write(report.to_json_text())
        else:
            from interop.console import render_build

            render_build(report)
        return 0 if report.passed else 1

    raise typer.Exit(_guard(run))


@app.command()
def check(
    model: str = typer.Argument(..., help="Model file or MODULE:FN (as for build)."),
    input: List[str] = typer.Option([], "--input", help="NAME:SHAPE[:DTYPE[:LOW..HIGH]]"),
    dynamic: List[str] = typer.Option([], "--dynamic", help="NAME:AXIS=DIM[:MIN..MAX]"),
    config: Optional[str] = typer.Option(None, "--config", help="interop.toml or pyproject.toml"),
    factory: Optional[str] = typer.Option(None, "--factory", help="MODULE:FN for a state_dict"),
    trust: bool = typer.Option(False, "--trust", help="Allow unpickling a torch.save'd module."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset to check against (default 20)"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Preflight only: ops neither target translates (with module paths), trace hazards."""

    def run() -> int:
        from interop.commands.check import check_model
        from interop.settings import merge, read_config_file

        cli = {"model": model, "inputs": input, "dynamic": dynamic, "factory": factory, "trust": trust or None,
               "opset": opset}
        result = _with_progress(lambda: check_model(merge(cli, read_config_file(config))), quiet=json_out)
        _emit(result, json_out, lambda r: _console().render_check(r))
        return 1 if result["would_fail"] else 0

    raise typer.Exit(_guard(run))


@app.command()
def doctor(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Platform, versions, runtimes available here, and known-bad combinations."""
    from interop.commands.doctor import diagnose

    _emit(diagnose(), json_out, _print_doctor)


def _print_doctor(info: dict) -> None:
    print(f"platform: {info['platform']}  python {info['python']}")
    for name, version in info["versions"].items():
        print(f"  {name:12s} {version or 'not installed'}")
    print("runtimes:")
    for name, ok in info["runtimes"].items():
        print(f"  {'yes' if ok else 'no ':3s}  {name}")
    print("known problems:" if info["problems"] else "known problems: none")
    for p in info["problems"]:
        print(f"  - {p}")


@app.command()
def inspect(artifact: str = typer.Argument(..., help=".onnx file or .mlpackage folder"),
            json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Inputs, outputs, shapes and metadata of an artifact."""

    def run() -> int:
        from interop.commands.inspect import inspect_artifact

        _emit(inspect_artifact(artifact), json_out, lambda info: _console().render_inspect(info))
        return 0

    raise typer.Exit(_guard(run))


@app.command()
def bench(artifact: str = typer.Argument(..., help=".onnx, .mlpackage or .report.json of a build"),
          runs: int = typer.Option(100, "--runs", help="Timed runs per runtime, after the warm-up."),
          warmup: int = typer.Option(10, "--warmup", help="Untimed runs first."),
          slow_runs: int = typer.Option(5, "--slow-runs", help="Timed runs of the Core ML reference runtime."),
          threads: Optional[int] = typer.Option(None, "--threads", help="ONNX Runtime intra-op threads."),
          no_unsimplified: bool = typer.Option(False, "--no-unsimplified",
                                               help="Skip re-exporting the source to time the unsimplified export."),
          json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Latency of the built artifacts: ONNX Runtime (p50/p90) vs the unsimplified export, Core ML."""

    def run() -> int:
        from interop.commands.bench import bench as run_bench
        from interop.commands.bench import render

        # no spinner: its refresh thread would compete with the timed runs
        _emit(run_bench(artifact, warmup, runs, slow_runs, threads, not no_unsimplified), json_out, render)
        return 0

    raise typer.Exit(_guard(run))


@app.command()
def verify(report_path: str = typer.Argument(..., metavar="REPORT.json"),
           json_out: bool = typer.Option(False, "--json", help="Print the new JSON report.")) -> None:
    """Re-run the agreement checks of the artifacts a report lists against its source model."""

    def run() -> int:
        from interop.commands.verify import verify_report

        report = _with_progress(lambda: verify_report(report_path), quiet=json_out)
        if json_out:
            sys.stdout.write(report.to_json_text())
        else:
            from interop.console import render_build

            render_build(report, verb="verify")
        return 0 if report.passed else 1

    raise typer.Exit(_guard(run))


def _emit(data: Any, json_out: bool, render: Callable[[Any], None]) -> None:
    """A command's result: indented JSON on stdout with --json, else as ``render`` shows it."""
    if json_out:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        render(data)


def _console() -> Any:
    """interop.console (rich), imported only when a result is rendered for people."""
    from interop import console

    return console


def _with_progress(fn, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return fn()
    from rich.console import Console

    from interop.support import progress

    with Console(stderr=True).status("interop: starting…") as status:
        progress.listen(lambda text: status.update(f"interop: {text}…"))
        try:
            return fn()
        finally:
            progress.listen(None)


def _guard(fn) -> int:
    from interop.errors import InteropError

    try:
        return fn()
    except InteropError as exc:
        if _STATE["debug"]:
            raise
        _red(f"interop: {exc.line()}")
        return exc.exit_code
    except KeyboardInterrupt:
        _red("interop: interrupted; previous artifacts are untouched")
        return 130
    except Exception as exc:  # a bug in interop or a library: one line, traceback with --debug
        if _STATE["debug"]:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        _red(f"interop: internal error {type(exc).__name__}: {first} — rerun with --debug and report it")
        return 1


def _red(line: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[31m{line}\x1b[0m\n")
    else:
        sys.stderr.write(line + "\n")


def main() -> None:
    """Run the command. One that loaded torch ends the process without the interpreter's teardown
    (finalising torch, coremltools, onnx and their thread pools costs ~1 s of CPU on every
    build); output is flushed first, and the artifacts were complete before the command returned."""
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if "torch" not in sys.modules:
        sys.exit(code)
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
