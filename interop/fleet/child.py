"""The process one fleet model builds in: ``python -m interop.fleet.child JOB.json``.

It reads the job (BuildConfig keyword arguments and where to write its result), runs
``interop.build`` and writes one result JSON atomically: the report's data when a report was made,
else the error (kind, exception type, message). A MemoryError, or an allocator's failure under the
memory cap, is written as ``out-of-memory``. Anything that kills the process before the result is
written (a hang, a signal, the kernel) is judged by the parent from the outside.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

_ALLOC = ("can't allocate memory", "cannot allocate memory", "bad_alloc", "out of memory", "failed to allocate")


def run(job: dict[str, Any]) -> dict[str, Any]:
    from interop.stages.pipeline import build
    from interop.errors import InteropError, first_line
    from interop.settings import BuildConfig

    try:
        if job.get("verify"):  # --resume: re-run verify's checks on the artifacts, no conversion
            from interop.commands.verify import verify_report

            report = verify_report(job["verify"], bool(job.get("trust")), job["config"].get("tolerance"))
        else:
            report = build(manifest_config(job))
    except MemoryError:
        return {"outcome": "out-of-memory", "error": {"type": "MemoryError", "message": "MemoryError"}}
    except InteropError as exc:
        return {"outcome": "error", "error": {"kind": exc.kind, "type": type(exc).__name__, "message": exc.message,
                                              "hint": exc.hint}}
    except Exception as exc:  # a bug in interop or a library is this model's failure, not the fleet's
        line = first_line(exc)
        outcome = "out-of-memory" if any(a in line.lower() for a in _ALLOC) else "error"
        return {"outcome": outcome, "error": {"kind": "internal", "type": type(exc).__name__, "message": line}}
    return {"outcome": "built", "report": report.data}


def manifest_config(job: dict[str, Any]) -> Any:
    """The build's settings, those the manifest set recorded as coming from ``manifest`` (not
    ``flag``: a manifest is a file, and its tolerance is the verdict limit the report names)."""
    from interop.settings import BuildConfig, resolve

    config = resolve(BuildConfig(**job["config"]))
    for key in job.get("from_manifest") or []:
        if config.provenance.get(key) == "flag":
            config.provenance[key] = "manifest"
    return config


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    from interop.support import safe_io

    safe_io.write_json(path, data)  # temp created exclusively, never through a symlink, renamed


def guard(parent: int | None, rlimit_data: int | None) -> None:
    """Before anything heavy: die with the parent (Linux PR_SET_PDEATHSIG; if the parent is already
    gone, now), and the RLIMIT_DATA backstop of the memory cap."""
    if parent and sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
    if rlimit_data:
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (rlimit_data, rlimit_data))


def main(argv: list[str]) -> None:
    job = json.loads(Path(argv[0]).read_text())
    paths = job.get("paths") or {}
    sys.path[:0] = paths.get("prepend", [])  # --trust: the model's folder first, as before
    sys.path += paths.get("append", [])  # a MODULE:FN model's folder, after the standard library
    guard(job.get("parent"), job.get("rlimit_data"))
    result = run(job)
    write_atomic(Path(job["result"]), result)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip torch's teardown, as `interop build` does


if __name__ == "__main__":
    main(sys.argv[1:])
