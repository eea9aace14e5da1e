"""The error kinds of interop.

Library code raises one of these; only ``interop.cli`` turns them into one red line and an exit
code. Every message says what went wrong *and* what to do next.
"""

from __future__ import annotations


class InteropError(Exception):
    """Base of every error interop raises on purpose.

    ``exit_code`` follows the CLI contract: 2 for bad usage or input, 1 for a target that failed
    or disagreed.
    """

    exit_code = 2
    kind = "error"

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        """The one line the user sees: what was wrong, then what to do."""
        if self.hint:
            return f"{self.message} — {self.hint}"
        return self.message


class LoadError(InteropError):
    """The model file cannot be read as a model."""

    kind = "load"


class SpecError(InteropError):
    """The input specification (flags, config, samples) is malformed or does not fit the model."""

    kind = "spec"


class ExportError(InteropError):
    """A target could not be produced."""

    exit_code = 1
    kind = "export"


class UnsupportedOpError(ExportError):
    """An op has no translation (for a target) or no kernel (in a runtime)."""

    kind = "unsupported-op"


def first_line(exc: BaseException, typed: bool = True) -> str:
    """``Type: first line`` of an exception (``typed=False``: the line alone), digging through
    wrappers (torch.onnx's TorchExportError explains nothing itself; its ``__cause__`` does;
    TorchScript's interpreter puts the real error after its traceback header). ANSI colours removed.
    When the user's code raised it (or called what did), `` (at file:line `code`)`` follows
    (support/causes.py). Every message that quotes an exception goes through here."""
    from interop.support import causes

    while exc.__cause__ is not None and type(exc).__name__ in ("TorchExportError", "ConversionError", "OnnxExporterError"):
        exc = exc.__cause__
    line = causes.text(exc)
    out = f"{type(exc).__name__}: {line}" if typed else line
    where = causes.user_location(exc)
    return f"{out} (at {where})" if where and where.split(" ")[0] not in out else out
