"""Rich console rendering of reports and inspections (stdout)."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:.2e}"


def render_build(report: Any, verb: str = "build") -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    d = report.data
    for name, t in d["targets"].items():
        if t["status"] == "ok":
            how = t.get("exporter") or t.get("capture") or ""
            where = t["path"] or "(not kept: another target failed and --all-or-nothing was given)"
            console.print(f"[green]✓[/] {name}: {where}  [dim]{how} {t.get('seconds', '')}s[/]")
        elif t["status"] != "skipped":
            console.print(f"[red]✗ {name} {t['status']}: {t.get('error')} — not shipped[/]")
    table = Table(title="agreement with PyTorch (worst sample)", show_lines=False)
    for col in ("target", "runtime", "case", "output", "rel_l2", "max_abs", "top-1", "ok"):
        table.add_column(col)
    for a in report.summary_rows():
        table.add_row(a["target"], a["runtime"], a["case"], a["output"], _fmt(a["rel_l2"]), _fmt(a["max_abs"]),
                      _fmt(a["top1"]) if a["top1"] is None else f"{a['top1']:.2f}",
                      "[green]yes[/]" if a["passed"] else "[red]NO[/]")
    if report.summary_rows():
        console.print(table)
    if d.get("generation"):
        _render_generation(console, d["generation"])
    for w in d["warnings"]:
        console.print(f"[yellow]! {w}[/]")
    console.print("[bold green]PASSED[/]" if report.passed else "[bold red]FAILED[/]")


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
    console.print(f"[bold]{info['path']}[/] ({info['format']})")
    for kind in ("inputs", "outputs"):
        console.print(f"{kind}:")
        for t in info[kind]:
            console.print(f"  {t['name']}: {t['type']} {t['shape']}")
    if info.get("metadata"):
        console.print("metadata:")
        for k, v in info["metadata"].items():
            console.print(f"  {k}: {str(v)[:200]}")


def render_check(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"[bold]{result['model']}[/] ({result['format']}), checked in {result['seconds']}s")
    if result.get("trace_error"):
        console.print(f"[yellow]! torch.jit.trace fails: {result['trace_error']} (the dynamo / torch.export routes remain)[/]")
    if result["ops"]:
        table = Table(title="ops that need attention")
        names = result.get("targets") or ["onnx", "coreml"]
        for col in ["op", "where"] + names:
            table.add_column(col)
        for u in result["ops"]:
            where = ", ".join(u["where"][:3]) + (" …" if len(u["where"]) > 3 else "")
            table.add_row(u["op"], where or "—", *[u.get(n, "ok") for n in names])
        console.print(table)
    else:
        console.print("[green]every traced op has a translation on both targets[/]")
    for h in result["hazards"]:
        console.print(f"[red]trace hazard: {h}[/]")
    console.print("[bold red]would fail[/]" if result["would_fail"] else "[bold green]no blocking problem found[/]")
