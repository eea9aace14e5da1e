"""One escaper per medium, so text from files (model names, error messages, output names, metadata)
reaches people and spreadsheets as text and can never forge a verdict, a link, a formula or a line.

* ``html``: ``html.escape`` with quotes, for element text and attribute values alike;
* ``md`` (a table cell or an inline span): every Markdown-active character backslash-escaped,
  line breaks and control characters made visible, so no input can end a cell, start a line,
  open a heading or a list, or set bold text such as a forged **PASSED**;
* ``csv_cell``: a string starting with ``=``, ``+``, ``-``, ``@``, tab or CR (a formula to
  Excel, LibreOffice and Google Sheets) gets a leading ``'`` so it is shown as text;
* ``terminal``: control characters (C0, DEL, C1: ANSI escape sequences, carriage returns,
  backspaces, new lines) written as visible escapes.
"""

from __future__ import annotations

import html as _html
import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# what acts inside a line of Markdown: emphasis, code, links / images, HTML, table cells, strikes,
# entities; ``_`` only where it can open or close emphasis (not inside a word such as mlp_0)
_MD_ACTIVE = re.compile(r"([\\`*\[\]<>|~&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _visible(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1] if match.group() not in "\u2028\u2029" else "\\u%04x" % ord(match.group())


def terminal(text: Any) -> str:
    """``text`` with every control character (and bidi override) written as a visible escape."""
    return _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()) if ord(m.group()) < 0x100 else "\\u%04x" % ord(m.group()),
                        str(text))


def html(text: Any) -> str:
    return _html.escape(terminal(text), quote=True)


def md(text: Any) -> str:
    """``text`` safe inside a Markdown table cell or after the start of a line: kept on one line
    (so it never starts one), with nothing Markdown acts on inline."""
    return _MD_ACTIVE.sub(r"\\\1", terminal(text))


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: strings that would start a formula get a ``'``."""
    if isinstance(value, str):
        value = terminal(value) if any(c in value for c in "\n\x00") else value
        if value.startswith(FORMULA_START):
            return "'" + value
    return value
