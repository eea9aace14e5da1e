"""The cause of a failure, for the one line a user reads: the underlying exception's own first
line (not a wrapper's boilerplate, such as TorchScript's "The following operation failed in the
TorchScript interpreter.") and, when the failure is in the user's code, that code's file:line.

The user's code is any frame outside installed packages, the standard library and interop itself:
the deepest such frame of the innermost exception that has one is where the model went wrong."""

from __future__ import annotations

import linecache
import re
import sysconfig
import traceback
from pathlib import Path

_BOILERPLATE = re.compile(r"^(The following operation failed in the TorchScript interpreter\.|"
                          r"Traceback of TorchScript|Traceback \(most recent call last\)|"
                          r"File \"|\w+\.py\(\d+\): |\s*~*\^+~*\s*$)")
_INTEROP = str(Path(__file__).resolve().parent.parent)


def text(exc: BaseException) -> str:
    """The first line of ``exc`` that says something (TorchScript's interpreter puts the real error
    last, after its traceback header), ANSI colours removed, at most 300 characters."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not _BOILERPLATE.match(ln)]
    if lines and useful and useful[0] != lines[0]:  # a wrapper's header: the real error is the last line
        return re.sub(rf"^{type(exc).__name__}: ", "", useful[-1])[:300]
    return (lines[0] if lines else "")[:300]


def is_user_file(filename: str) -> bool:
    """Code the user wrote: not an installed package, the standard library, interop or generated code."""
    if not filename or filename.startswith("<") or "site-packages" in filename or "dist-packages" in filename:
        return False
    resolved = str(Path(filename).resolve())
    paths = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    return not resolved.startswith(_INTEROP) and not any(resolved.startswith(p) for p in paths if p)


def user_location(exc: BaseException) -> str:
    """``path:line `source``` of the deepest frame in the user's code, of the innermost exception in
    ``exc``'s chain that passed through such code; "" when none did (the failure is in a library
    working on a graph, not in the model's Python)."""
    found, seen, current = "", set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        here = [(f.f_code.co_filename, line) for f, line in traceback.walk_tb(current.__traceback__)
                if is_user_file(f.f_code.co_filename)]
        if here:
            found = location(*here[-1])
        current = current.__cause__ or current.__context__
    return found


def location(filename: str, lineno: int) -> str:
    line = linecache.getline(filename, lineno).strip()
    return f"{filename}:{lineno}" + (f" `{line[:120]}`" if line else "")


def describe(exc: BaseException) -> str:
    """``Type: first line`` of the innermost exception of a wrapped chain, plus `` (at file:line
    `code`)`` when the user's code raised it or called what did."""
    inner = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    out = f"{type(inner).__name__}: {text(inner)}"
    where = user_location(exc)
    if where and where.split(" ")[0] not in out:
        out += f" (at {where})"
    return out
