"""The live board on a terminal, drawn by rich: phases as sections, a row per service, a footer.

Each row: the service's state (waiting, packaging, deploying, created, updated, unchanged, up to date,
skipped, failed, …), its elapsed time and its latest stack event. The footer counts what is done,
in progress and waiting, and the total time. At the end the board stays on screen in its final state,
followed by the failures, the services they kept from starting, and the summary.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from phasedoit.runstate import Event, RunState, ServiceState, not_started

REFRESH = 0.25  # seconds: the elapsed times tick, a new event shows at once
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
STYLES = {
    "waiting": ("·", "dim"),
    "packaging": ("", "yellow"),
    "deploying": ("", "yellow"),
    "removing": ("", "yellow"),
    "created": ("✔", "green"),
    "updated": ("✔", "green"),
    "deployed": ("✔", "green"),
    "removed": ("✔", "green"),
    "gone": ("✔", "dim green"),
    "unchanged": ("=", "dim"),
    "up to date": ("=", "dim"),
    "skipped": ("-", "dim"),
    "failed": ("✘", "bold red"),
    "interrupted": ("✘", "red"),
    "not started": ("-", "red"),
}


class LiveBoard:
    """A reporter view (see reporter.View) that redraws the board in place."""

    def __init__(self, stream: TextIO) -> None:
        self.console = Console(file=stream, force_terminal=True, highlight=False, soft_wrap=False)
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.drawn = 0.0
        self.changed = False

    def show(self, event: Event, state: RunState) -> None:
        # drawn from the first service's event on: before it, a protected stage's removal may ask a question
        if not self.live.is_started and "service" in event:
            self.live.start()
        self.changed = True

    def tick(self, state: RunState) -> None:
        now = time.time()
        if self.live.is_started and (self.changed or now - self.drawn >= REFRESH):
            self.live.update(render(state, now, height=self.console.size.height), refresh=True)
            self.drawn, self.changed = now, False

    def text(self, text: str) -> None:
        self.console.print(Text(text))  # above the board

    def finish(self, state: RunState | None, errors: list[str]) -> None:
        now = time.time()
        if state and state.services:
            self.live.start()  # no-op when started: a run without a service event still shows its end
            self.live.vertical_overflow = "visible"  # the final board whole, however tall
            self.live.update(render(state, now, final=True), refresh=True)
            self.live.stop()
        for error in errors:
            self.console.print(Text(error, style="bold red"))
        if state:
            for text in not_started(state):
                self.console.print(Text(text, style="red"))
            style = "bold red" if state.failed() else "bold green"
            self.console.print(Text(state.summary(now), style=style))


def render(state: RunState, now: float, final: bool = False, height: int | None = None) -> RenderableType:
    """The board; taller than `height` lines, each phase shows only its services at work or failed, and
    counts the others on its header line (the final board shows every service)."""
    width = max((len(name) for name in state.services), default=0)
    title = Text(f"{state.app} · {state.stage} · {state.verb}", style="bold")
    parts: list[RenderableType] = [title]
    compact = height is not None and 2 + len(state.phases) + len(state.services) > height
    for label, names in state.phases:
        shown, header = names, label
        if compact:
            shown = [n for n in names if state.services[n].active or state.services[n].state == "failed"]
            counts = Counter(state.services[n].state for n in names if n not in shown)
            header += "".join(f" · {count} {name}" for name, count in counts.items())
        parts.append(Text(header, style="bold cyan"))
        if shown:
            parts.append(_phase(state, shown, width, now))
    if not final:
        parts.append(Text(state.footer(now), style="bold"))
    return Group(*parts)


def _phase(state: RunState, names: list[str], width: int, now: float) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(width=2, no_wrap=True)  # indent and icon
    table.add_column(width=width, no_wrap=True)
    table.add_column(width=11, no_wrap=True)
    table.add_column(width=7, justify="right", no_wrap=True)
    table.add_column(no_wrap=True, overflow="ellipsis")
    for name in names:
        service = state.services[name]
        icon, style = STYLES.get(service.state, ("?", ""))
        if service.active:
            icon = SPINNER[int(now * 10) % len(SPINNER)]
        table.add_row(
            Text(f" {icon}", style=style),
            Text(name, style="bold" if service.active else ""),
            Text(service.state, style=style),
            Text(_elapsed(service, now), style="dim"),
            _latest(service),
        )
    return table


def _elapsed(service: ServiceState, now: float) -> str:
    if service.started is None or service.state in ("up to date", "skipped"):
        return ""
    return f"{(service.ended or now) - service.started:.1f}s"


def _latest(service: ServiceState) -> Text:
    if service.state == "failed":
        return Text(service.detail.splitlines()[0] if service.detail else "", style="red")
    if service.state in ("skipped", "not started"):
        return Text(service.detail, style="dim")
    if service.state == "up to date":
        return Text("")
    return Text(service.latest, style="dim" if service.done else "")
