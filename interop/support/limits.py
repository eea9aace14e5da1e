"""Bounded work: absurd requests are refused before any work starts, with the limit in the message
(sample counts, sample tensors larger than this machine's memory), and user sample files are
checked for what cannot be a model input (strings, objects, NaN/Inf, no samples at all)."""

from __future__ import annotations

import os
from typing import Any

from interop.errors import SpecError

MAX_SAMPLES = 1000  # seeded samples per shape case


MAX_DECODE_STEPS = 4096  # greedy tokens a generation check decodes
MAX_CONTEXT = 32768  # tokens of KV cache a generation export sizes its state for


def check_generation_bounds(decode_steps: Any, max_context: Any) -> None:
    """``--decode-steps`` and ``--max-context`` within bounds (a file or a report may set them:
    10^9 decode steps would run unbounded, a 10^9-token context allocates terabytes)."""
    for flag, value, limit in (("--decode-steps", decode_steps, MAX_DECODE_STEPS),
                               ("--max-context", max_context, MAX_CONTEXT)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise SpecError(f"{flag} {value!r} is outside 1..{limit}", hint=f"use {flag} between 1 and {limit}")


def memory_bytes() -> int:
    """Physical memory of this machine (8 GiB where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def check_sample_count(count: Any) -> None:
    if isinstance(count, bool) or not isinstance(count, int):
        raise SpecError(f"--num-samples must be a whole number, not {count!r}", hint="e.g. --num-samples 2")
    if count < 1:
        raise SpecError("--num-samples must be at least 1", hint="e.g. --num-samples 2")
    if count > MAX_SAMPLES:
        raise SpecError(f"--num-samples {count} is above the limit of {MAX_SAMPLES} per shape case",
                        hint=f"use at most {MAX_SAMPLES} (2 is the default)")





def check_user_arrays(arrays: dict[str, Any], path: str) -> None:
    """Arrays of a ``--samples`` file: numbers or bools, finite, and at least one sample."""
    import numpy as np

    from interop.trust import shown

    for name, arr in arrays.items():
        if arr.dtype.kind not in "biuf":
            raise SpecError(f"sample {shown(name)!r} in {shown(path)} holds {arr.dtype} values, not numbers",
                            hint="write numeric arrays with numpy.savez")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise SpecError(f"sample {shown(name)!r} in {shown(path)} holds NaN or Inf",
                            hint="agreement on non-finite inputs proves nothing; give finite samples")
        if arr.size == 0:
            raise SpecError(f"sample {shown(name)!r} in {shown(path)} is empty (shape {arr.shape})",
                            hint="give at least one sample")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
