"""Ctrl-C that cannot be lost. coremltools (and any library with a ``__del__``) can swallow the
KeyboardInterrupt Python raises for SIGINT ("Exception ignored in ..."); while a build writes, the
handler below also records the interrupt, and every stage boundary and the final commit raise it
again, so an interrupted build always stops with exit 130 and commits nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

_state = {"interrupted": False}


def _on_sigint(signum: int, frame: object) -> None:
    _state["interrupted"] = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def recorded() -> Iterator[None]:
    """Record SIGINT for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _state["interrupted"] = False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _state["interrupted"] = False


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived (even one a library swallowed)."""
    if _state["interrupted"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Block SIGINT (delivered when the block ends): for steps that must not stop half-way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def test_hook(text: str) -> None:
    """Test-only: ``INTEROP_TEST_SIGNAL_AT="<stage text fragment>[:SIGNAME]"`` makes the process
    send itself the signal (default SIGINT) when a stage containing the fragment starts, so tests
    interrupt a build at a chosen point without timing."""
    wanted = os.environ.get("INTEROP_TEST_SIGNAL_AT")
    if not wanted:
        return
    fragment, _, name = wanted.partition(":")
    if fragment and fragment in text:
        os.environ.pop("INTEROP_TEST_SIGNAL_AT", None)
        os.kill(os.getpid(), getattr(signal, name or "SIGINT"))
