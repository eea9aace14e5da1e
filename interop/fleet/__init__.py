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
    from interop.support import safe_io

    entries = fleet_manifest.load(manifest)
    fleet_manifest.refuse_code_without_trust(entries, trust)  # a manifest's factory / sampler runs code
    if isinstance(shard, str) or shard is None:
        shard = fleet_manifest.parse_shard(shard, dict(os.environ))
    if shard is not None:
        entries = fleet_manifest.select_shard(entries, *shard)
    limit = fleet_manifest.parse_size(memory_limit) if memory_limit is not None else None
    timeout = fleet_manifest.seconds(timeout, "--timeout")  # finite and positive: NaN would mean no limit
    base = fleet_summary.load(Path(baseline)) if baseline is not None else None  # bad baseline: before any build
    if jobs is not None and not 1 <= jobs <= runner.MAX_JOBS:
        from interop.errors import SpecError

        raise SpecError(f"--jobs {jobs} is outside 1..{runner.MAX_JOBS}", hint="e.g. --jobs 2")
    opts = runner.Options(Path(out), jobs or runner.default_jobs(limit), timeout, limit, resume, trust)
    opts.out.mkdir(parents=True, exist_ok=True)
    with safe_io.folder_lock(opts.out, LOCK, "build-many"):  # one fleet per --out at a time
        for e in entries:  # a model folder that is a symlink (or a file) is refused before any build
            safe_io.real_folder(opts.out / e.name, opts.out)
        records, not_run = runner.run(entries, opts, listen)
        return _summarise(records, not_run, shard, base, factor, opts.out)


LOCK = ".interop-build-many.lock"


def _summarise(records: list, not_run: list, shard: Any, base: Any, factor: float, out: Path) -> dict[str, Any]:
    from interop.fleet import summary as fleet_summary
    from interop.fleet.files import write

    result = fleet_summary.summarise(records, shard, not_run, interrupted=bool(not_run))
    if base is not None:
        result["baseline"] = fleet_summary.compare(result, base, factor)
    write(result, out)
    return result
