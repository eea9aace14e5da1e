"""Stage announcements for long steps. The library calls ``stage("...")``; the CLI installs a
listener that shows it in a rich status line (nothing is printed when no listener is set)."""

from __future__ import annotations

from typing import Callable

_listener: Callable[[str], None] | None = None


def listen(fn: Callable[[str], None] | None) -> None:
    global _listener
    _listener = fn


def stage(text: str) -> None:
    if _listener is not None:
        _listener(text)
