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


def place_variants(folder: Any, report: Any, ship: list[str], keep_failed: bool) -> None:
    from interop.stages.outdir import _place, _remove

    previous = _previous_variants(folder) if ship else []
    shipped: set[str] = set()
    for row in report.data.get("variants", []):
        path = getattr(report, "variant_artifacts", {}).get(f"{row['target']}:{row['variant']}")
        if path is None or not path.exists():
            continue
        suffix = path.name[len(folder.stem) + len(row["variant"]) + 1:]  # <stem>.<variant><suffix>
        row["shipped"] = bool(row["passed"]) and row["target"] in ship
        if row["shipped"]:
            final = folder.final(f".{row['variant']}{suffix}")
            shipped.add(final.name)
        elif keep_failed:
            final = folder.final(f".{row['variant']}.FAILED{suffix}")
        else:
            row["path"] = None
            continue
        _place(path, final)
        row["path"] = str(final)
    for name in previous:
        if name not in shipped and name.startswith(folder.stem + ".") and ".FAILED" not in name:
            _remove(folder.folder / name)


def _previous_variants(folder: Any) -> list[str]:
    """File names of the variants the previous report in this folder says it shipped."""
    try:
        data = json.loads(folder.final(".report.json").read_text())
        return [Path(r["path"]).name for r in data.get("variants", []) if isinstance(r, dict) and
                isinstance(r.get("path"), str) and r.get("shipped")]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
