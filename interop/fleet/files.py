"""A fleet summary written out: summary.json, .csv, .md and .html, each replaced atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interop.fleet.child import write_atomic
from interop.fleet.html import render
from interop.fleet.summary import to_csv, to_markdown


def write(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "summary.json", summary)
    for name, text in (("summary.csv", to_csv(summary)), ("summary.md", to_markdown(summary)),
                       ("summary.html", render(summary))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
