"""Giving freed memory back to the operating system between a build's stages.

glibc's malloc keeps memory a program frees (ONNX Runtime's copy of the weights when a session
closes, coremltools' working copies when a conversion returns) in its arenas for reuse, so the
process's resident size stays at its high-water mark; the next stage then starts from there and
its own peak lands on top. ``malloc_trim(0)`` returns the free pages of every arena. Elsewhere
(macOS, Windows, musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release(collect: bool = False) -> bool:
    """Return freed heap memory to the OS; True when something was returned. ``collect`` first
    runs Python's cycle collector, for objects that refer to each other (coremltools' MIL
    programs: ops, vars and blocks point at each other) and so outlive their last reference."""
    if collect:
        gc.collect()
    trim = _trim()
    return bool(trim(0)) if trim is not None else False
