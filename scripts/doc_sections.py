"""What the coverage scripts share: a zoo model's worker run in its own subprocess, and a
generated section of a doc page replaced between its ``<!-- NAME:begin -->`` / ``:end`` markers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_worker(module: str, call: str, timeout: int) -> tuple[dict[str, Any] | None, str | None]:
    """``module.worker`` called as ``call`` (Python text, e.g. ``worker('cnn', 'fp16')``) in a fresh
    interpreter: its JSON result, or (None, why there is none: a timeout or its last stderr line)."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
            f"from {module} import worker; print('RESULT ' + json.dumps({call}))")
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), None
    return None, (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]


def replace_section(doc: Path, begin: str, end: str, section: str) -> None:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) in place of the page's
    block between those markers, or at its end."""
    text = doc.read_text() if doc.exists() else ""
    if begin in text and end in text:
        text = text[: text.index(begin)] + section.rstrip("\n") + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    doc.write_text(text)
