"""Move the compressed variants into the output folder (called by ``OutputFolder.commit``).

A variant ships as ``<stem>.<variant><suffix>`` when its base target ships and it passed its
gate; otherwise it is dropped, or kept as ``<stem>.<variant>.FAILED<suffix>`` with
``--keep-failed``. Variants the previous build in this folder shipped and this one does not are
removed, so the folder never pairs a new base artifact with an old variant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def stage_variants(folder: Any, report: Any, ship: list[str], staged: Path, keep_failed: bool
                   ) -> tuple[list[str], list[str]]:
    """Move the variants into ``staged`` (the commit's staging folder: the output folder's
    transaction moves them with the rest of the set). Returns (file names staged, file names of
    the previous build's variants to remove)."""
    import os

    previous = _previous_variants(folder) if ship else []
    names: list[str] = []
    for row in report.data.get("variants", []):
        path = getattr(report, "variant_artifacts", {}).get(f"{row['target']}:{row['variant']}")
        if path is None or not path.exists():
            continue
        suffix = path.name[len(folder.work_stem) + len(row["variant"]) + 1:]  # <stem>.<variant><suffix>
        row["shipped"] = bool(row["passed"]) and row["target"] in ship
        if row["shipped"]:
            final = folder.final(f".{row['variant']}{suffix}")
        elif keep_failed:
            final = folder.final(f".{row['variant']}.FAILED{suffix}")
        else:
            row["path"] = None
            continue
        os.replace(path, staged / final.name)
        names.append(final.name)
        row["path"] = str(final)
    removals = [n for n in previous if n not in names and n.startswith(folder.stem + ".") and ".FAILED" not in n]
    return names, removals


def _previous_variants(folder: Any) -> list[str]:
    """File names of the variants the previous report in this folder says it shipped."""
    try:
        data = json.loads(folder.final(".report.json").read_text())
        return [Path(r["path"]).name for r in data.get("variants", []) if isinstance(r, dict) and
                isinstance(r.get("path"), str) and r.get("shipped")]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
