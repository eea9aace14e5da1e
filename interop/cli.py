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


from interop import patches  # noqa: E402  (light: declares third-party patches, imports none of them)

patches.install("typer-help-flag")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors.")) -> None:
    _STATE["debug"] = debug


# Every setting `build` and `check` take, in --help order: (BuildConfig field, type, default,
# flag, help). One list for both commands, so they cannot drift. A new setting is a field appended
# to settings.BuildConfig and one line appended here; its value reaches the library as
# BuildConfig(<field>=value) only when the user gave the flag (see settings.resolve).
BUILD_OPTIONS: list[tuple[str, Any, Any, str, str]] = [
    ("inputs", List[str], [], "--input", "NAME:SHAPE[:DTYPE[:LOW..HIGH]][:KIND[=REF]], e.g. x:1x3x224x224; "
                                         "kinds: offsets=IN, index=IN:AXIS, lengths=IN:AXIS, mask, arange"),
    ("dynamic", List[str], [], "--dynamic", "NAME:AXIS=DIM[:MIN..MAX], e.g. x:0=batch:1..64"),
    ("output_names", List[str], [], "--output-name", "Name of each output, in order."),
    ("out", Optional[str], None, "--out", "Output folder (default: the model's folder)."),
    ("targets", Optional[str], None, "--targets", "Comma-separated: onnx,coreml"),
    ("precision", Optional[str], None, "--precision", "Core ML compute precision: fp16 (default), fp32, or auto (fp16 with fp32 islands for the ops that drift)"),
    ("config", Optional[str], None, "--config", "interop.toml or pyproject.toml with [tool.interop]"),
    ("factory", Optional[str], None, "--factory", "MODULE:FN building the model for a state_dict "
                                                  "(imports and runs that code from the current folder)"),
    ("trust", bool, False, "--trust", "Run code from the model file: unpickle a torch.save'd module, ops outside "
                                      "tensor computation (files, print, custom ops)."),
    ("samples", Optional[str], None, "--samples", ".npz of input arrays named after the inputs (example case) or "
                                                  "<input>@<case> (e.g. x@batch=3) for other cases"),
    ("exporter", Optional[str], None, "--exporter", "ONNX exporter: auto, torchscript, dynamo"),
    ("opset", Optional[int], None, "--opset", "ONNX opset (default 20)"),
    ("deployment_target", Optional[str], None, "--deployment-target", "Core ML target, e.g. iOS16"),
    ("coreml_shapes", Optional[str], None, "--coreml-shapes", "range (default) or enumerated"),
    ("tolerance", List[str], [], "--tolerance", "NAME:rel_l2=1e-3[,max_rel=...] per output ('*' all)"),
    ("keep_failed", bool, False, "--keep-failed", "Keep rejected artifacts as <stem>.FAILED.*"),
    ("num_samples", Optional[int], None, "--num-samples", "Seeded samples per shape case (default 2)"),
    ("labels", Optional[str], None, "--labels", "Class labels file, one per line: a classifier"),
    ("image", Optional[str], None, "--image", "Input that takes raw image pixels (RGB, 0..255)"),
    ("mean", Optional[str], None, "--mean", "Per-channel mean, e.g. 0.485,0.456,0.406"),
    ("std", Optional[str], None, "--std", "Per-channel std, e.g. 0.229,0.224,0.225"),
    ("pixel_scale", Optional[float], None, "--pixel-scale", "Pixels are divided by this first (255)"),
    ("coreml_capture", Optional[str], None, "--coreml-capture", "auto, trace or export"),
    ("allow_trace_warnings", bool, False, "--allow-trace-warnings",
     "Build although tracing hit data-dependent control flow."),
    ("all_or_nothing", bool, False, "--all-or-nothing", "Ship no target unless every chosen target passed."),
    ("sampler", Optional[str], None, "--sampler", "MODULE:FN drawing input values: FN(shapes, rng) -> {name: array}, "
                                                  "called for tracing, export and every case; imports and runs code "
                                                  "from the current folder, like a MODULE:FN model"),
    ("compress", Optional[str], None, "--compress", "Compressed variants, e.g. int8,int4,palettize4,palettize6,"
                                                    "palettize8,fp16,int8-static"),
    ("calibration", Optional[str], None, "--calibration", ".npz of calibration samples (int8-static)"),
    ("gate", List[str], [], "--gate", "VARIANT:psnr=30[,cosine=..,top1=..,top5=..] ('*' all)"),
    ("task", Optional[str], None, "--task", "auto (default: text-generation for a causal LM), text-generation or default"),
    ("max_context", Optional[int], None, "--max-context", "text-generation: Core ML cache positions (512)"),
    ("decode_steps", Optional[int], None, "--decode-steps", "text-generation: greedy steps checked (16)"),
    ("no_torchscript", bool, False, "--no-torchscript", "TorchScript-free: ONNX through the dynamo exporter and "
                                                        "Core ML through torch.export, one capture shared "
                                                        "(also INTEROP_NO_TORCHSCRIPT=1)"),
    ("compare_where", List[str], [], "--compare-where", "OUTPUT:INPUT compares OUTPUT only where INPUT != 0 "
                                                        "(OUTPUT:!INPUT where it is 0, e.g. a padding mask)"),
]


def _settings_command(model_help: str) -> Callable[[Callable[[Any, bool], int]], Callable[..., None]]:
    """A command taking MODEL, every option of BUILD_OPTIONS and --json; the decorated
    ``fn(config, json_out) -> exit code`` gets the flags the user gave as a BuildConfig (flags
    left out stay unset, so the --config file, the model folder's interop.toml or the default
    decide them: settings.resolve)."""
    import inspect

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("model", kind, annotation=str, default=typer.Argument(..., help=model_help))]
    params += [inspect.Parameter(name, kind, annotation=annotation, default=typer.Option(default, flag, help=text))
               for name, annotation, default, flag, text in BUILD_OPTIONS]
    params.append(inspect.Parameter("json_out", kind, annotation=bool, default=typer.Option(
        False, "--json", help="Print exactly the JSON result on stdout, nothing else.")))

    def decorate(fn: Callable[[Any, bool], int]) -> Callable[..., None]:
        def command(**values: Any) -> None:
            json_out = values.pop("json_out")

            def run() -> int:
                from interop.settings import BuildConfig

                given = {k: v for k, v in values.items() if not _left_out(v)}
                for key in ("targets", "compress"):  # comma-separated lists
                    if key in given:
                        given[key] = [t.strip() for t in given[key].split(",") if t.strip()]
                return fn(BuildConfig(**given), json_out)

            raise typer.Exit(_guard(run, json_out))

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        return command

    return decorate


def _left_out(value: Any) -> bool:
    """An option the user did not give: None, an empty list, a flag not set (``0`` is given)."""
    return value is None or value is False or (isinstance(value, (list, tuple)) and not value)


@app.command()
@_settings_command("Model file (.pt TorchScript / torch.save, .pt2 ExportedProgram, .onnx) or MODULE:FN "
                   "(imports and runs that Python code from the current folder).")
def build(config: Any, json_out: bool) -> int:
    """Export MODEL to ONNX and Core ML and check both against PyTorch."""
    from interop.stages.pipeline import build as run_build

    report = _with_progress(lambda: run_build(config), quiet=json_out)
    if json_out:
        sys.stdout.write(report.to_json_text())
    else:
        from interop.console import render_build

        render_build(report)
    return 0 if report.passed else 1


@app.command()
@_settings_command("Model file or MODULE:FN (as for build).")
def check(config: Any, json_out: bool) -> int:
    """Preflight only: ops neither target translates (with module paths), trace hazards. Takes
    every build option and reads the settings as build does."""
    from interop.commands.check import check_model

    result = _with_progress(lambda: check_model(config), quiet=json_out)
    _emit(result, json_out, lambda r: _console().render_check(r))
    return 1 if result["would_fail"] else 0


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
    print("third-party patches (interop/patches.py):")
    for p in info["patches"]:
        seen = "" if p["matches"] else f"  [checked against {p['checked_against']}, installed {p['installed']}]"
        print(f"  {p['name']:32s} {p['library']}: {p['scope']}{seen}")
    nots = info.get("no_torchscript") or {}
    if nots:
        state = f"on ({nots['env']}={nots['env_value']})" if nots.get("env_value") else f"off unless --no-torchscript or {nots['env']}=1"
        print(f"TorchScript-free mode: {state}; still needs TorchScript:")
        for line in nots["still_needs_torchscript"]:
            print(f"  - {line}")


@app.command()
def inspect(artifact: str = typer.Argument(..., help=".onnx file or .mlpackage folder"),
            json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Inputs, outputs, shapes and metadata of an artifact."""

    def run() -> int:
        from interop.commands.inspect import inspect_artifact

        _emit(inspect_artifact(artifact), json_out, lambda info: _console().render_inspect(info))
        return 0

    raise typer.Exit(_guard(run, json_out))


@app.command()
def bench(artifact: str = typer.Argument(..., help=".onnx, .mlpackage or .report.json of a build"),
          runs: int = typer.Option(100, "--runs", help="Timed runs per runtime, after the warm-up."),
          warmup: int = typer.Option(10, "--warmup", help="Untimed runs first."),
          slow_runs: int = typer.Option(5, "--slow-runs", help="Timed runs of the Core ML reference runtime."),
          threads: Optional[int] = typer.Option(None, "--threads", help="ONNX Runtime intra-op threads."),
          no_unsimplified: bool = typer.Option(False, "--no-unsimplified",
                                               help="Skip re-exporting the source to time the unsimplified export."),
          json_out: bool = typer.Option(False, "--json", help="Print JSON."),
          trust: bool = typer.Option(False, "--trust", help="Let the re-export load a source that runs code "
                                                            "(a report never grants trust).")) -> None:
    """Latency of the built artifacts: ONNX Runtime (p50/p90) vs the unsimplified export, Core ML."""

    def run() -> int:
        from interop.commands.bench import bench as run_bench
        from interop.commands.bench import render

        # no spinner: its refresh thread would compete with the timed runs
        _emit(run_bench(artifact, warmup, runs, slow_runs, threads, not no_unsimplified, trust), json_out, render)
        return 0

    raise typer.Exit(_guard(run, json_out))


@app.command()
def verify(report_path: str = typer.Argument(..., metavar="REPORT.json"),
           json_out: bool = typer.Option(False, "--json", help="Print the new JSON report."),
           trust: bool = typer.Option(False, "--trust", help="Allow loading a source model that runs code "
                                                             "(a report never grants trust)."),
           tolerance: List[str] = typer.Option([], "--tolerance", help="NAME:rel_l2=... to apply; a report's tolerance "
                                               "looser than the default applies only when repeated here.")) -> None:
    """Re-run the agreement checks of the artifacts a report lists against its source model."""

    def run() -> int:
        from interop.commands.verify import verify_report

        report = _with_progress(lambda: verify_report(report_path, trust, tolerance), quiet=json_out)
        if json_out:
            sys.stdout.write(report.to_json_text())
        else:
            from interop.console import render_build

            render_build(report, verb="verify")
        return 0 if report.passed else 1

    raise typer.Exit(_guard(run, json_out))


@app.command("build-many")
def build_many(
    manifest: str = typer.Argument(..., metavar="MANIFEST.toml", help="[[model]] tables, or a folder of model folders."),
    out: str = typer.Option("interop-fleet", "--out", help="Output folder: <out>/<name>/ per model, summary.* here."),
    jobs: Optional[int] = typer.Option(None, "--jobs", help="Models built at once (default: from cores and free memory)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N (0-based), or auto[/N] from Kubernetes / Slurm."),
    resume: bool = typer.Option(False, "--resume", help="Skip models whose inputs are unchanged and passed before."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="An earlier summary.json to compare with."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per model (manifest: timeout = ...)."),
    memory_limit: Optional[str] = typer.Option(None, "--memory-limit", help="Per model, e.g. 4GiB (memory_limit = ...)."),
    trust: bool = typer.Option(False, "--trust", help="Allow unpickling torch.save'd modules of every model."),
    factor: float = typer.Option(2.0, "--regression-factor", help="Fidelity regression: rel_l2 grew beyond this factor."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary JSON on stdout, nothing else."),
) -> None:
    """Build every model of a manifest, each in its own process; one summary of all."""

    def run() -> int:
        from interop.fleet import build_many as run_many
        from interop.fleet.live import live

        if jobs is not None and jobs < 1:
            from interop.errors import SpecError

            raise SpecError(f"--jobs {jobs} is not a positive number", hint="e.g. --jobs 2")
        with live(quiet=json_out) as listen:
            result = run_many(manifest, out, jobs, shard, resume, baseline, timeout, memory_limit, trust, factor,
                              listen)
        return _fleet_done(result, out, json_out)

    raise typer.Exit(_guard(run))


@app.command()
def merge(
    folders: List[str] = typer.Argument(..., metavar="DIR...", help="--out folders (or summary.json files) of shards."),
    out: str = typer.Option(..., "--out", help="Folder for the merged summary.*"),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="An earlier summary.json to compare with."),
    factor: float = typer.Option(2.0, "--regression-factor", help="Fidelity regression: rel_l2 grew beyond this factor."),
    json_out: bool = typer.Option(False, "--json", help="Print the merged summary JSON on stdout."),
) -> None:
    """Combine the summaries of build-many shards into one."""

    def run() -> int:
        from interop.fleet.merge import merge as run_merge

        return _fleet_done(run_merge(folders, out, baseline, factor), out, json_out)

    raise typer.Exit(_guard(run))


def _fleet_done(result: dict, out: str, json_out: bool) -> int:
    if json_out:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        from interop.fleet.live import render_summary

        render_summary(result, out)
    return 130 if result["interrupted"] else 0 if result["passed"] else 1


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


_RESOURCE_ERRNOS = {28, 27, 122, 30}  # ENOSPC, EFBIG, EDQUOT, EROFS


def _guard(fn, json_out: bool = False) -> int:
    """Run a command; an error is one red line on stderr (and, with --json, one JSON object on
    stdout: ``{"passed": false, "error": {"kind", "message", "hint"}}``) and its exit code."""
    from interop.errors import InteropError, first_line

    try:
        return fn()
    except InteropError as exc:
        if _STATE["debug"]:
            raise
        _red(f"interop: {exc.line()}")
        _json_error(json_out, exc.kind, exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        _red("interop: interrupted; previous artifacts are untouched")
        _json_error(json_out, "interrupted", "interrupted", "previous artifacts are untouched")
        return 130
    except Exception as exc:  # a bug in interop or a library: one line, traceback with --debug
        if _STATE["debug"]:
            raise
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:  # disk full, file-size limit, read-only
            _red(f"interop: cannot write {exc.filename or 'a file'}: {exc.strerror} — free space or raise the "
                 "limit, or pass another --out; previous artifacts are untouched")
            _json_error(json_out, "resource", f"cannot write {exc.filename or 'a file'}: {exc.strerror}",
                        "free space or raise the limit, or pass another --out")
            return 2
        first = first_line(exc)
        _red(f"interop: internal error {first} — rerun with --debug and report it")
        _json_error(json_out, "internal", first, "rerun with --debug and report it")
        return 1


def _json_error(json_out: bool, kind: str, message: str, hint: str | None) -> None:
    if json_out:
        from interop._version import __version__

        sys.stdout.write(json.dumps({"passed": False, "interop_version": __version__,
                                     "error": {"kind": kind, "message": message, "hint": hint}}, indent=2) + "\n")


def _red(line: str) -> None:
    line = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in line)  # names cannot forge lines
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
