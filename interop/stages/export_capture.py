"""The one ``torch.export`` capture of a build, shared by the ONNX dynamo exporter
(``torch.onnx.export(ExportedProgram)``) and the Core ML torch.export path (``ct.convert`` of the
same program, run through ``run_decompositions({})``), the way the default path shares one
``torch.jit.trace`` (stages/prepare.Trace). Made lazily, once per shape mode (the spec's dynamic
dims; the example shapes only for Core ML's fixed-shape fallback), its failure kept and re-raised
to every route that asks.

The capture is the ONNX exporter's own first strategy (non-strict ``torch.export`` with
deferred runtime asserts, size-oblivious 0/1 dims, the while-loop shape rules for ``aten::lstm``
/ ``aten::gru`` so a dynamic sequence length is not specialised, and one retry with the dims
torch suggests), so handing its program to ``torch.onnx.export`` changes nothing for ONNX but the
second capture it no longer makes. The recurrent ops stay single ``aten.lstm.input`` /
``aten.gru.input`` nodes in the program: the while-loop rules only compute their output shapes.

``--no-torchscript`` (``INTEROP_NO_TORCHSCRIPT=1``): no ``torch.jit.trace`` is made at all
(``NoTrace`` stands in for the shared trace); a TorchScript *source* (the user's own archive) is
turned into an ExportedProgram by torch's ``TS2EPConverter``, which reads the archive's graph
and runs no tracer or scripter.
"""

from __future__ import annotations

import time
from typing import Any

from interop.errors import ExportError, first_line
from interop.support.quiet import Noise, captured

ENV = "INTEROP_NO_TORCHSCRIPT"
NO_TRACE = "--no-torchscript: torch.jit.trace is not used (TorchScript-free build)"


class NoTrace:
    """The shared trace of a TorchScript-free build: there is none. Routes that need it
    (the TorchScript ONNX exporter, the Core ML trace path) get one clear error; the hazards
    the trace would report do not exist (torch.export refuses data-dependent control flow
    itself instead of baking a branch in)."""

    hazards: list = []
    error: Exception | None = None
    traced: Any = None

    def __call__(self) -> Any:
        raise ExportError(NO_TRACE, hint="build without --no-torchscript (and INTEROP_NO_TORCHSCRIPT unset) for "
                                         "the TorchScript routes")


class ExportCapture:
    """``program(dynamic)``: the model's ExportedProgram (training IR), captured once per shape
    mode; ``coreml_program(dynamic)``: the same after ``run_decompositions({})`` (what coremltools
    converts), also once. ``seconds`` is the time spent capturing, for the report."""

    def __init__(self, module: Any, args: tuple, spec: Any, noise: Noise):
        self.module, self.args, self.spec, self.noise = module, args, spec, noise
        self._programs: dict[tuple[str, bool], Any] = {}
        self.seconds = 0.0
        self.source = "torch.export"  # or "TorchScript -> TS2EPConverter -> torch.export"
        self.captures = 0  # torch.export calls made (a test pins that both targets share one)

    def program(self, dynamic: bool = True) -> Any:
        return self._cached(("program", dynamic), lambda: self._capture(dynamic))

    def coreml_program(self, dynamic: bool = True) -> Any:
        def decompose() -> Any:
            program = self.program(dynamic)
            try:
                return program.run_decompositions({})
            except Exception as exc:
                raise ExportError(f"torch.export's run_decompositions failed: {first_line(exc)}",
                                  hint="report this with the model") from exc

        return self._cached(("decomposed", dynamic), decompose)

    def _cached(self, key: tuple[str, bool], make: Any) -> Any:
        if key not in self._programs:
            started = time.perf_counter()
            try:
                with captured(self.noise):
                    self._programs[key] = make()
            except ExportError as exc:
                self._programs[key] = exc
            finally:
                self.seconds += time.perf_counter() - started
        value = self._programs[key]
        if isinstance(value, Exception):
            raise value
        return value

    def _capture(self, dynamic: bool) -> Any:
        import torch

        from interop.stages.spec import export_dim

        module = self._exportable()
        dims: dict[str, Any] = {}
        shapes = tuple({a: export_dim(d, dims) for a, d in t.dynamic.items()} or None
                       for t in self.spec.inputs) if dynamic else ()
        wanted = (shapes,) if any(shapes) else None
        self.captures += 1
        try:
            with torch.no_grad():
                return export_program(module, self.args, wanted)
        except Exception as exc:
            raise ExportError(f"torch.export cannot capture the model: {_export_failure(exc)}",
                              hint="`interop check` lists what blocks it; make the failing line export-friendly "
                                   "(torch.cond / torch._check for data-dependent code)") from exc

    def _exportable(self) -> Any:
        """The prepared module, or (a TorchScript source, alone or inside interop's preprocessing
        wrapper) the same with the archive converted to an ExportedProgram's module."""
        import copy

        import torch

        module = self.module
        if isinstance(module, torch.jit.ScriptModule):
            self.source = "TorchScript -> TS2EPConverter -> torch.export"
            return from_torchscript(module, self.args)
        inner = getattr(module, "inner", None)
        if isinstance(inner, torch.jit.ScriptModule):
            self.source = "TorchScript -> TS2EPConverter -> torch.export"
            outer = copy.copy(module)
            outer._modules = dict(module._modules)  # noqa: SLF001 - the copy's own children
            outer.inner = from_torchscript(inner, self.args)
            return outer
        return module

    def op_paths(self, op: str) -> list[str]:
        """Module paths where ``aten::op`` occurs in the captured program (empty when none was made)."""
        program = next((p for k, p in self._programs.items() if k[0] == "program" and not isinstance(p, Exception)),
                       None)
        return export_ops(program).get(f"aten::{op}", []) if program is not None else []


def export_program(module: Any, args: tuple, dynamic_shapes: Any) -> Any:
    """torch.export as the ONNX exporter's first capture strategy does it (see the module doc)."""
    import torch
    from torch.export._patches import register_gru_while_loop_decomposition, register_lstm_while_loop_decomposition

    def export(shapes: Any) -> Any:
        return torch.export.export(module, args, dynamic_shapes=shapes, strict=False,
                                   prefer_deferred_runtime_asserts_over_guards=True)

    with register_lstm_while_loop_decomposition(), register_gru_while_loop_decomposition(), \
            torch.fx.experimental._config.patch(backed_size_oblivious=True):
        try:
            return export(dynamic_shapes)
        except torch._dynamo.exc.UserError as exc:
            try:
                refined = torch.export.dynamic_shapes.refine_dynamic_shapes_from_suggested_fixes(exc.msg,
                                                                                               dynamic_shapes)
            except Exception:
                raise exc from None
            return export(refined)


def from_torchscript(module: Any, args: tuple) -> Any:
    """A TorchScript archive as an nn.Module torch.export takes: torch's TS2EPConverter (reads the
    archive's graph; experimental) at the export sizes, outputs flattened."""
    import torch
    from torch._export.converter import TS2EPConverter

    from interop.targets import flatten_outputs

    try:
        program = TS2EPConverter(module, args).convert()
    except Exception as exc:
        raise ExportError(f"torch's TorchScript -> ExportedProgram converter failed: {first_line(exc)}",
                          hint="build from the nn.Module (a .pt2, a pickled module or MODULE:FN), or without "
                               "--no-torchscript") from exc

    class Flat(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> tuple:
            return tuple(flatten_outputs(self.inner(*inputs)))

    flat = Flat(program.module())
    flat.training = False
    return flat


def export_ops(program: Any) -> dict[str, list[str]]:
    """``aten::name`` -> module paths (from ``nn_module_stack``) of every op call in ``program``."""
    uses: dict[str, list[str]] = {}
    for node in program.graph.nodes:
        if node.op != "call_function" or not hasattr(node.target, "_schema"):
            continue
        kind = node.target._schema.name  # "aten::lstm"
        stack = node.meta.get("nn_module_stack") or {}
        path = next(reversed(stack.values()))[0] if stack else "(top level forward)"
        where = uses.setdefault(kind, [])
        if path not in where:
            where.append(path)
    return uses


def _export_failure(exc: Exception) -> str:
    """torch.export's first meaningful line (its messages open with a blank or a banner)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if len(lines) > 1 and text.endswith(("!", ":")):
        text = f"{text} {lines[1]}"
    return f"{type(exc).__name__}: {text}"[:400]


def enabled(config: Any) -> bool:
    """Whether a build is TorchScript-free (``--no-torchscript``, resolved with the environment)."""
    return bool(getattr(config, "no_torchscript", False))


STILL_NEEDS_TORCHSCRIPT = (
    "loading a TorchScript archive (.pt saved with torch.jit.save): the user's own file, read with torch.jit.load "
    "and turned into an ExportedProgram by torch's TS2EPConverter",
    "--task text-generation (stateful Core ML decoders are traced): refused with --no-torchscript",
    "--exporter torchscript and --coreml-capture trace: refused with --no-torchscript",
)
