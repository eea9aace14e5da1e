"""Stage announcements for long steps. The library calls ``stage("...")``; the CLI installs a
listener that shows it in a rich status line (nothing is printed when no listener is set). A stage
boundary is also where an interrupt a library swallowed is raised again (support/interrupts.py)."""

from __future__ import annotations

from typing import Callable

from interop.support import interrupts

_listener: Callable[[str], None] | None = None


def listen(fn: Callable[[str], None] | None) -> None:
    global _listener
    _listener = fn


def stage(text: str) -> None:
    interrupts.test_hook(text)
    interrupts.check()
    if _listener is not None:
        _listener(text)
