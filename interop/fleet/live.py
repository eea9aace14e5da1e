"""What build-many shows people: a live table of every model's state and an ETA while it runs
(only when stderr is a terminal), then the summary's counts, failure groups and baseline diff."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable, Iterator

Listener = Callable[[str, str, Any], None]


class Board:
    """Per-model state (queued is implicit; building; the final status) and the ETA: the mean time of
    the models built so far, times those left, over the models building at once."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.seconds: list[float] = []
        self.total = 0

    def __call__(self, event: str, name: str, record: Any) -> None:
        if event == "start":
            self.state[name], self.started[name] = "building", time.monotonic()
        elif event == "done":
            self.state[name] = record["status"]
            if record["status"] != "resumed" and record.get("seconds"):
                self.seconds.append(record["seconds"])

    def eta(self) -> float | None:
        building = [n for n, s in self.state.items() if s == "building"]
        left = max(0, self.total - len(self.state)) + len(building)
        if not self.seconds or not building:
            return None
        return sum(self.seconds) / len(self.seconds) * left / len(building)

    def render(self) -> Any:
        from rich.table import Table

        done = sum(1 for s in self.state.values() if s != "building")
        eta = self.eta()
        table = Table(title=f"interop build-many: {done} done" + (f" / {self.total}" if self.total else "")
                      + (f", ETA {eta:.0f} s" if eta is not None else ""), title_justify="left")
        table.add_column("model")
        table.add_column("state")
        now = time.monotonic()
        rows = sorted(self.state.items(), key=lambda kv: (kv[1] != "building", kv[0]))
        for name, state in rows[:30]:
            extra = f" {now - self.started[name]:.0f} s" if state == "building" else ""
            table.add_row(name, state + extra)
        return table


@contextlib.contextmanager
def live(quiet: bool) -> Iterator[Listener | None]:
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.live import Live

    board = Board()
    with Live(board.render(), console=Console(stderr=True), refresh_per_second=2, transient=True) as view:
        def listen(event: str, name: str, record: Any) -> None:
            if event == "total":
                board.total = record
            else:
                board(event, name, record)
            view.update(board.render())

        yield listen


def render_summary(summary: dict[str, Any], out: str) -> None:
    from rich.console import Console

    from interop.fleet.summary import baseline_markdown

    from interop.support.escape import terminal  # names and errors from records: no escape sequence, no new line

    console = Console(highlight=False)
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items() if n) or "no models"
    verdict = "INTERRUPTED" if summary["interrupted"] else "PASSED" if summary["passed"] else "FAILED"
    for g in summary["failures"]:
        console.print(f"✗ {terminal(g['signature'])}: {', '.join(terminal(n) for n in g['models'])}", markup=False)
    for line in baseline_markdown(summary.get("baseline"), esc=terminal)[3:]:
        console.print(line, markup=False)
    if summary["not_run"]:
        console.print(f"not run: {', '.join(terminal(n) for n in summary['not_run'])}", markup=False)
    console.print(f"{verdict}: {counts} — {terminal(out)}/summary.md, summary.html", markup=False)
