"""`interop merge DIR... --out DIR`: the shard summaries of one fleet as one summary, as if one
machine had built every model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interop.errors import SpecError
from interop.fleet import summary as fleet_summary
from interop.fleet.files import write


def merge(folders: list[str | Path], out: str | Path, baseline: str | Path | None = None,
          factor: float = 2.0) -> dict[str, Any]:
    """Combine the summary.json of each folder (each a shard, or any disjoint set of models) and
    write the merged summary files into ``out``. A model in two summaries is an error."""
    if not folders:
        raise SpecError("no summaries to merge", hint="pass the --out folders of the shards")
    records: dict[str, dict[str, Any]] = {}
    not_run: list[str] = []
    shards: set[tuple[int, int]] = set()
    interrupted = False
    for folder in folders:
        path = Path(folder) / "summary.json" if Path(folder).is_dir() else Path(folder)
        part = fleet_summary.load(path)
        for model in part["models"]:
            if model["name"] in records:
                raise SpecError(f"model {model['name']} is in more than one summary ({path})",
                                hint="merge the summaries of disjoint shards of one manifest")
            records[model["name"]] = model
        not_run += part.get("not_run", [])
        interrupted = interrupted or bool(part.get("interrupted"))
        if part.get("shard"):
            shards.add((part["shard"]["index"], part["shard"]["count"]))
    merged = fleet_summary.summarise(list(records.values()), not_run=not_run, interrupted=interrupted)
    merged["merged_from"] = [str(f) for f in folders]
    counts = {c for _, c in shards}
    if len(counts) == 1:
        count = counts.pop()
        merged["missing_shards"] = sorted(set(range(count)) - {i for i, _ in shards})
        merged["passed"] = merged["passed"] and not merged["missing_shards"]
    if baseline is not None:
        merged["baseline"] = fleet_summary.compare(merged, fleet_summary.load(Path(baseline)), factor)
    write(merged, Path(out))
    return merged
