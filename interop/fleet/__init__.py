"""build-many: a whole model zoo in one command, each model isolated in its own process, with
resume, shards and one summary. ``build_many`` is the library side of `interop build-many`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable


def build_many(manifest: str | Path, out: str | Path = "interop-fleet", jobs: int | None = None,
               shard: str | tuple[int, int] | None = None, resume: bool = False,
               baseline: str | Path | None = None, timeout: float | None = None,
               memory_limit: int | str | None = None, trust: bool = False, factor: float = 2.0,
               listen: Callable[[str, str, dict | None], None] | None = None) -> dict[str, Any]:
    """Build every model ``manifest`` lists (or this machine's ``shard`` of them, ``"I/N"``) into
    ``out/<name>/`` and write summary.{json,csv,md,html} into ``out``; returns the summary dict
    (``summary["passed"]``; ``summary["interrupted"]`` after Ctrl-C, with what finished)."""
    from interop.fleet import manifest as fleet_manifest
    from interop.fleet import runner
    from interop.fleet import summary as fleet_summary
    from interop.fleet.files import write

    entries = fleet_manifest.load(manifest)
    if isinstance(shard, str) or shard is None:
        shard = fleet_manifest.parse_shard(shard, dict(os.environ))
    if shard is not None:
        entries = fleet_manifest.select_shard(entries, *shard)
    limit = fleet_manifest.parse_size(memory_limit) if memory_limit is not None else None
    if timeout is not None and timeout <= 0:
        from interop.errors import SpecError

        raise SpecError(f"--timeout {timeout} is not a positive number of seconds", hint="e.g. --timeout 600")
    base = fleet_summary.load(Path(baseline)) if baseline is not None else None  # bad baseline: before any build
    opts = runner.Options(Path(out), jobs or runner.default_jobs(limit), timeout, limit, resume, trust)
    opts.out.mkdir(parents=True, exist_ok=True)
    records, not_run = runner.run(entries, opts, listen)
    result = fleet_summary.summarise(records, shard, not_run, interrupted=bool(not_run))
    if base is not None:
        result["baseline"] = fleet_summary.compare(result, base, factor)
    write(result, opts.out)
    return result
