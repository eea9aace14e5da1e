"""Rich console rendering of reports and inspections (stdout)."""

from __future__ import annotations

from typing import Any


REPORT_ONLY = ("coremltools has not been tested with this torch version",)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:.2e}"


def _safe(text: Any) -> str:
    """Text from files (paths, errors naming them) as printed: control characters escaped and
    rich markup neutralised, so a file name cannot forge lines, colours or markup."""
    from rich.markup import escape

    from interop.trust import shown

    return escape(shown(text))


def render_build(report: Any, verb: str = "build") -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    d = report.data
    for line in target_lines(d):
        console.print(line)
    table = Table(title="agreement with PyTorch (worst sample)", show_lines=False)
    for col in ("target", "runtime", "case", "output", "rel_l2", "max_abs", "top-1", "ok"):
        table.add_column(col)
    for a in report.summary_rows():
        table.add_row(a["target"], a["runtime"], a["case"], a["output"], _fmt(a["rel_l2"]), _fmt(a["max_abs"]),
                      _fmt(a["top1"]) if a["top1"] is None else f"{a['top1']:.2f}",
                      "[green]yes[/]" if a["passed"] else "[red]NO[/]")
    if report.summary_rows():
        console.print(table)
    for v in d.get("variants") or []:  # --compress
        from interop.variants.build import console_line

        console.print(console_line(v))
    if d.get("generation"):
        _render_generation(console, d["generation"])
    for w in d["warnings"]:
        if w.startswith(REPORT_ONLY):  # in the report and `interop doctor`, not on every build
            continue
        console.print(f"[yellow]! {_safe(w)}[/]")
    console.print("[bold green]PASSED[/]" if report.passed else "[bold red]FAILED[/]" + _shipped_summary(d))


def target_lines(d: dict[str, Any]) -> list[str]:
    """One line per chosen target: shipped where, or why not (its own failure, or --all-or-nothing)."""
    lines = []
    failed = [n for n, t in d["targets"].items() if t["status"] not in ("ok", "skipped")]
    for name, t in d["targets"].items():
        if t["status"] == "ok":
            how = f"[dim]{t.get('exporter') or t.get('capture') or ''} {t.get('seconds', '')}s[/]"
            if t.get("shipped", t.get("path") is not None):
                lines.append(f"[green]✓[/] {name}: shipped {_safe(t['path'])}  {how}")
                fallback = next((n for n in t.get("notes") or [] if n.startswith("FALLBACK")), None)
                if fallback:
                    lines.append(f"  [bold yellow]! {fallback}[/]")
            else:
                lines.append(f"[yellow]✗ {name} passed but was not shipped: --all-or-nothing and "
                             f"{', '.join(failed) or 'another target'} did not pass[/]")
        elif t["status"] != "skipped":
            kept = f" (rejected artifact kept as {_safe(t['path'])})" if t.get("path") else ""
            lines.append(f"[red]✗ {name} {t['status']}: {_safe(t.get('error'))} — not shipped{kept}[/]")
            if t.get("hint"):
                lines.append(f"  [dim]hint: {t['hint']}[/]")
    return lines


def _shipped_summary(d: dict[str, Any]) -> str:
    shipped = [n for n, t in d["targets"].items() if t.get("shipped")]
    if not shipped:
        return " — nothing shipped; the previous artifacts are untouched"
    return f" — shipped {', '.join(shipped)} only (exit 1)"


def _render_generation(console: Any, entries: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="greedy generation vs PyTorch (per step)")
    for col in ("target", "runtime", "case", "steps", "tokens", "first diverging", "worst rel_l2", "ok"):
        table.add_column(col)
    for g in entries:
        ok = "—" if g["passed"] is None else ("[green]yes[/]" if g["passed"] else "[red]NO[/]")
        tokens = "—" if g["tokens_match"] is None else ("identical" if g["tokens_match"] else "differ")
        first = g["first_divergent_step"]
        table.add_row(g["target"], g["runtime"], g["case"], str(g["steps"]), tokens,
                      "—" if first is None else str(first), _fmt(g["worst_rel_l2"]), ok)
    console.print(table)


def render_inspect(info: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    console.print(f"[bold]{_safe(info['path'])}[/] ({info['format']})")
    from interop.support.escape import terminal  # names and metadata are the file's text

    for kind in ("inputs", "outputs"):
        console.print(f"{kind}:")
        for t in info[kind]:
            console.print(terminal(f"  {t['name']}: {t['type']} {t['shape']}"), markup=False)
    if info.get("metadata"):
        console.print("metadata:")
        for k, v in info["metadata"].items():
            console.print(terminal(f"  {k}: {str(v)[:200]}"), markup=False)


def render_check(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"[bold]{result['model']}[/] ({result['format']}), checked in {result['seconds']}s")
    if result.get("trace_error"):
        console.print(f"[yellow]! torch.jit.trace fails: {result['trace_error']} (the dynamo / torch.export routes remain)[/]")
    if result["ops"]:
        table = Table(title="ops that need attention")
        names = result.get("targets") or []
        for col in ["op", "where"] + names:
            table.add_column(col)
        for u in result["ops"]:
            where = ", ".join(u["where"][:3]) + (" …" if len(u["where"]) > 3 else "")
            table.add_row(u["op"], where or "—", *[u.get(n, "ok") for n in names])
        console.print(table)
    else:
        console.print("[green]every traced op has a translation on both targets[/]")
    for u in result.get("onnx_ops") or []:
        console.print(f"[red]ONNX op {u['op']} ({u['domain']}) x{u['count']}: {u['converter']} cannot convert it "
                      f"(nodes {', '.join(u['nodes'])}); Core ML cannot be built from this graph[/]")
    conversion = result.get("conversion")
    if conversion and not conversion.get("passed") and not result.get("onnx_ops"):
        console.print(f"[red]conversion: {conversion.get('problem')}[/]")
    for h in result["hazards"]:
        console.print(f"[red]trace hazard: {h}[/]")
    from interop.support.escape import terminal

    for h in result.get("hints") or []:
        console.print(terminal(f"hint: {h}"), style="yellow", markup=False)
    console.print("[bold red]would fail[/]" if result["would_fail"] else "[bold green]no blocking problem found[/]")
