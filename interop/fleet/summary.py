"""One model's fleet record, and the fleet summary: a models x targets (x variants) matrix with
status, agreement (the worst rel_l2 per target), seconds and artifact sizes; failures grouped by
error signature; and, against a baseline summary, what newly fails, what was fixed and which
targets lost fidelity. Written as summary.json, summary.csv, summary.md (and summary.html)."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

STATUSES = ("passed", "failed", "timeout", "out-of-memory", "crashed", "resumed")
GOOD = ("passed", "resumed")
SUMMARY_VERSION = 1


# --- one model ------------------------------------------------------------------------------------
def record_from_result(entry: Any, folder: Path, result: dict | None, exit_code: int, killed_for: str | None,
                       limits: dict[str, Any], log_tail: list[str]) -> dict[str, Any]:
    """The record of one finished child: its status and, when it made a report, its targets."""
    record: dict[str, Any] = {"name": entry.name, "model": entry.settings.get("model"), "status": "crashed",
                              "targets": {}, "variants": [], "artifacts": [], "error": None, "report": None,
                              "log": "build.log", "limits": limits, "exit_code": exit_code}
    if killed_for == "timeout":
        record["error"] = {"type": "Timeout", "message": f"no result after {limits['timeout']:g} s: killed",
                           "signature": "timeout"}
        record["status"] = "timeout"
    elif killed_for == "out-of-memory" or (result or {}).get("outcome") == "out-of-memory":
        limit = limits.get("memory_limit")
        message = f"resident memory passed the cap of {_size(limit)}: killed" if killed_for else \
            (result or {}).get("error", {}).get("message", "out of memory")
        record["error"] = {"type": "OutOfMemory", "message": message, "signature": "out-of-memory"}
        record["status"] = "out-of-memory"
    elif result is None:
        record["error"] = _no_result(exit_code, log_tail)
        record["status"] = "out-of-memory" if exit_code == -signal.SIGKILL else "crashed"
        record["error"]["signature"] = f"{record['status']} [{record['error']['type']}]"
    elif result.get("outcome") == "built":
        _from_report(record, result["report"], folder)
    else:
        record["status"] = "failed"
        record["error"] = dict(result.get("error") or {})
    if record["error"] is not None and "signature" not in record["error"]:
        record["error"]["signature"] = signature(record["error"].get("type", ""), record["error"].get("message", ""))
    return record


def _no_result(code: int, tail: list[str]) -> dict[str, Any]:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        why = " from outside interop (most often the kernel's out-of-memory killer)" if code == -signal.SIGKILL else ""
        return {"type": name, "message": f"killed by {name}{why}", "log_tail": tail}
    return {"type": f"exit {code}", "message": (tail[-1] if tail else f"exited with {code} and no result"),
            "log_tail": tail}


def _from_report(record: dict[str, Any], report: dict[str, Any], folder: Path) -> None:
    record["status"] = "passed" if report.get("passed") else "failed"
    if (report.get("settings") or {}).get("tolerance"):  # the verdict was judged by a tolerance override
        record["tolerance_source"] = (report.get("settings_source") or {}).get("tolerance")
        record["warnings"] = [w for w in report.get("warnings", []) if str(w).startswith("tolerance override")]
    for name, entry in report.get("targets", {}).items():
        if entry.get("status") == "skipped":
            continue
        rows = [a for a in report.get("agreement", []) if a.get("target") == name]
        path = entry.get("path")
        record["targets"][name] = {"status": entry.get("status"), "rel_l2": _worst(rows),
                                   "bytes": _bytes(Path(path)) if path else None,
                                   "path": _relative(path, folder), "seconds": entry.get("seconds"),
                                   "error": entry.get("error")}
        if path:
            record["artifacts"].append(_relative(path, folder))
    for v in report.get("variants", []) or []:
        record["variants"].append({k: v.get(k) for k in ("target", "variant", "passed", "psnr_db", "cosine", "bytes",
                                                         "ratio", "path")})
    failing = [(n, t) for n, t in record["targets"].items() if t["status"] != "ok"]
    if failing and record["status"] == "failed":
        name, target = failing[0]
        status, message = target["status"], target.get("error") or target["status"]
        kind = _error_type(message) if status == "failed" else status.title().replace("-", "")
        record["error"] = {"type": f"{name}: {kind}", "target": name, "message": message}
        runtime = re.search(r"disagrees with PyTorch \(([\w-]+),", message)
        if status == "disagrees" and runtime:  # one group per target and runtime, whatever the output
            record["error"]["signature"] = f"{name}: Disagrees [{runtime.group(1)}]"


def _worst(rows: list[dict[str, Any]]) -> float | None:
    values = [float("inf") if isinstance(r.get("rel_l2"), str) else r.get("rel_l2") for r in rows]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _bytes(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


def _relative(path: str | None, folder: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)


# --- error signatures -----------------------------------------------------------------------------
_OP = re.compile(r"(aten::[\w.]+|onnx::\w+|MIL op '\w+'|\bop(?:erator)? '[\w:.]+'|no kernel for [\w' ]+?'\w+')")
_TYPE = re.compile(r"\b([A-Z]\w*(?:Error|Exception|Unsupported\w*))\b")


def _error_type(message: str) -> str:
    found = _TYPE.search(message)
    return found.group(1) if found else "ExportError"


def signature(kind: str, message: str) -> str:
    """One failure group per exception type and op: ``TYPE [op]``, or ``TYPE: message`` with numbers,
    quoted names and paths blanked when no op is named."""
    inner = _TYPE.search(message or "")
    kind = kind or (inner.group(1) if inner else "error")
    op = _OP.search(message or "")
    if op:
        return f"{kind} [{op.group(1)}]"
    text = re.sub(r"(/[^\s:'\"]+)+", "<path>", (message or "").split(" (")[0])
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)
    return f"{kind}: {text[:100]}".strip()


# --- the fleet ------------------------------------------------------------------------------------
def summarise(records: list[dict[str, Any]], shard: tuple[int, int] | None = None, not_run: list[str] | None = None,
              interrupted: bool = False) -> dict[str, Any]:
    from interop._version import __version__

    models = sorted(records, key=lambda r: r["name"])
    counts = {s: sum(1 for m in models if m["status"] == s) for s in STATUSES}
    return {"summary_version": SUMMARY_VERSION, "interop_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "shard": {"index": shard[0], "count": shard[1]} if shard else None,
            "passed": not interrupted and all(m["status"] in GOOD for m in models),
            "interrupted": interrupted, "not_run": sorted(not_run or []),
            "counts": counts, "targets": targets_of(models), "variants": variants_of(models),
            "models": models, "failures": groups(models)}


def targets_of(models: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for m in models:
        names += [t for t in m.get("targets", {}) if t not in names]
    return names


def variants_of(models: list[dict[str, Any]]) -> list[str]:
    return sorted({f"{v['target']}/{v['variant']}" for m in models for v in m.get("variants", [])})


def groups(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by: dict[str, dict[str, Any]] = {}
    for m in models:
        if m["status"] in GOOD or not m.get("error"):
            continue
        sig = m["error"].get("signature") or signature(m["error"].get("type", ""), m["error"].get("message", ""))
        group = by.setdefault(sig, {"signature": sig, "status": m["status"], "models": [],
                                    "example": m["error"].get("message")})
        group["models"].append(m["name"])
    return sorted(by.values(), key=lambda g: (-len(g["models"]), g["signature"]))


def matrix(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparable core of a summary: per model, its status and per target its status (what two
    runs of the same models must agree on; seconds and dates differ)."""
    return [{"name": m["name"], "status": "passed" if m["status"] == "resumed" else m["status"],
             "targets": {t: c["status"] for t, c in m.get("targets", {}).items()}} for m in summary["models"]]


# --- against a baseline ---------------------------------------------------------------------------
def compare(current: dict[str, Any], baseline: dict[str, Any], factor: float = 2.0,
            floor: float = 1e-6) -> dict[str, Any]:
    """Newly failing and fixed models (and targets), and fidelity regressions: a target whose
    worst rel_l2 grew beyond ``factor`` times its baseline (and above ``floor``)."""
    before = {m["name"]: m for m in baseline.get("models", [])}
    newly, fixed, fidelity = [], [], []
    for m in current["models"]:
        old = before.get(m["name"])
        if old is None:
            continue
        was, now = old["status"] in GOOD, m["status"] in GOOD
        if was and not now:
            newly.append({"model": m["name"], "target": None, "before": old["status"], "after": m["status"]})
        elif now and not was:
            fixed.append({"model": m["name"], "target": None, "before": old["status"], "after": m["status"]})
        for t, cell in m.get("targets", {}).items():
            prev = old.get("targets", {}).get(t)
            if prev is None:
                continue
            if prev["status"] == "ok" and cell["status"] != "ok" and now:
                newly.append({"model": m["name"], "target": t, "before": "ok", "after": cell["status"]})
            a, b = prev.get("rel_l2"), cell.get("rel_l2")
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > max(a * factor, floor):
                fidelity.append({"model": m["name"], "target": t, "before": a, "after": b,
                                 "ratio": (b / a) if a else None})
    names = {m["name"] for m in current["models"]}
    return {"factor": factor, "floor": floor, "newly_failing": newly, "fixed": fixed, "fidelity_regressions": fidelity,
            "added": sorted(names - set(before)), "removed": sorted(set(before) - names - set(current["not_run"]))}


CSV_COLUMNS = ["model", "status", "target", "variant", "target_status", "rel_l2", "psnr_db", "bytes", "seconds",
               "peak_rss_bytes", "signature"]


def csv_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for m in summary["models"]:
        base = {"model": m["name"], "status": m["status"], "seconds": m.get("seconds"),
                "peak_rss_bytes": m.get("peak_rss_bytes"), "signature": (m.get("error") or {}).get("signature")}
        cells = [{"target": t, "target_status": c["status"], "rel_l2": c.get("rel_l2"), "bytes": c.get("bytes")}
                 for t, c in m.get("targets", {}).items()]
        cells += [{"target": v["target"], "variant": v["variant"], "target_status": "ok" if v.get("passed") else "failed",
                   "psnr_db": v.get("psnr_db"), "bytes": v.get("bytes")} for v in m.get("variants", [])]
        rows += [{**base, **c} for c in cells] or [base]
    return rows


def to_csv(summary: dict[str, Any]) -> str:
    from interop.support.escape import csv_cell  # a model name or signature is never a formula

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: csv_cell(v) for k, v in row.items()} for row in csv_rows(summary)])
    return buffer.getvalue()


def cell_text(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "—"
    parts = [str(cell["status"])]
    if cell.get("rel_l2") is not None:
        parts.append(f"{cell['rel_l2']:.1e}")
    if cell.get("bytes"):
        parts.append(_size(cell["bytes"]))
    return " ".join(parts)


def to_markdown(summary: dict[str, Any]) -> str:
    from interop.support.escape import md  # every text from a record is escaped: no forged line or verdict

    targets, c = summary["targets"], summary["counts"]
    lines = ["# interop build-many", "", f"**{'PASSED' if summary['passed'] else 'FAILED'}** — "
             + ", ".join(f"{n} {s}" for s, n in c.items() if n) + (" — INTERRUPTED" if summary["interrupted"] else ""),
             "", "| model | status | seconds | " + " | ".join(md(t) for t in targets) + " |",
             "|---|---|---|" + "---|" * len(targets)]
    for m in summary["models"]:
        cells = [md(cell_text(m.get("targets", {}).get(t))) for t in targets]
        status = md(m["status"]) + (" (tolerance from the manifest)" if m.get("tolerance_source") == "manifest" else "")
        lines.append(f"| {md(m['name'])} | {status} | {m.get('seconds') or 0:.1f} | " + " | ".join(cells) + " |")
    if summary["not_run"]:
        lines += ["", "Not run (interrupted): " + ", ".join(md(n) for n in summary["not_run"])]
    if summary["failures"]:
        lines += ["", "## Failures by signature", ""]
        for g in summary["failures"]:
            lines.append(f"- **{md(g['signature'])}** ({len(g['models'])}): {', '.join(md(n) for n in g['models'])}")
    lines += baseline_markdown(summary.get("baseline"))
    return "\n".join(lines) + "\n"


def baseline_markdown(diff: dict[str, Any] | None, esc: Any = None) -> list[str]:
    """The baseline diff as Markdown lines (``esc``: the escaper of the medium, Markdown's by default)."""
    if not diff:
        return []
    lines = ["", "## Against the baseline", ""]
    from interop.support.escape import md

    md = esc or md

    for key, title in (("newly_failing", "Newly failing"), ("fixed", "Fixed")):
        for d in diff[key]:
            lines.append(f"- {title}: {md(d['model'])}{'/' + md(d['target']) if d['target'] else ''} "
                         f"({md(d['before'])} → {md(d['after'])})")
    for d in diff["fidelity_regressions"]:
        lines.append(f"- Fidelity regression: {md(d['model'])}/{md(d['target'])} rel_l2 {d['before']:.2e} → {d['after']:.2e}")
    if len(lines) == 3:
        lines.append("- no change in status or fidelity")
    return lines


def _size(n: int | None) -> str:
    if not n:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def load(path: Path) -> dict[str, Any]:
    """A summary.json from disk (a merge input, a baseline): read by the one reader (regular file,
    bounded size and depth) and checked against the summary schema; else one line, exit 2."""
    from interop.fleet.records import Summary
    from interop.support import safe_io

    return safe_io.read_json(path, "summary", schema=Summary, hint="pass a summary.json written by build-many")
