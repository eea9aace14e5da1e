"""A fleet summary written out: summary.json, .csv, .md and .html, each through the one writer
(support/safe_io: temp files created exclusively, never written through a link, replaced atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interop.fleet.html import render
from interop.fleet.summary import to_csv, to_markdown
from interop.support import safe_io


def write(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    safe_io.write_json(out / "summary.json", summary, root=out)
    for name, text in (("summary.csv", to_csv(summary)), ("summary.md", to_markdown(summary)),
                       ("summary.html", render(summary))):
        safe_io.write_text(out / name, text, root=out)
