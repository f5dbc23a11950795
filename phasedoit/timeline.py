"""A picture of one run, from its record: SVG, or an HTML page with the SVG inline and hover details.

Phases are bands, each service a bar from its start to its end coloured by its outcome, the run's critical
path outlined, its totals written above. Pure: a `RunState` in, text out.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from xml.sax.saxutils import escape, quoteattr

from phasedoit.runstate import RunState, ServiceState

WIDTH = 960
LABEL = 190  # the services' names, left of the bars
RIGHT = 110  # room for the label after the last bar
ROW = 22
BAND_HEAD = 22
TOP = 78
FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
COLOURS = {
    "created": "#2f9e5b",
    "updated": "#2f9e5b",
    "deployed": "#2f9e5b",
    "unchanged": "#8cc4a0",
    "removed": "#3b7dd8",
    "gone": "#9dbbe6",
    "up to date": "#aab4bf",
    "skipped": "#c9cfd6",
    "failed": "#d64545",
    "interrupted": "#e08a3c",
    "not started": "#e7a3a3",
    "waiting": "#e7a3a3",
}
EPSILON = 0.05  # seconds: a service that ended this close before another started may have held it back


def critical_path(state: RunState) -> list[str]:
    """The chain of services that set the run's length: the last to end, then, again and again, of what it
    waited for, the service that ended last before it started. What a service waits for is its schedule's:
    every service of the phases before its own, or (`schedule: dependencies`) its upstreams and `after:`."""
    phase = {name: i for i, (_, names) in enumerate(state.phases) for name in names}
    bars = [s for s in state.services.values() if _bar(s)]
    if not bars:
        return []

    def waited_for(service: ServiceState, here: ServiceState) -> bool:
        if state.schedule == "dependencies":
            return service.name in here.upstreams or service.name in here.after
        return phase[service.name] < phase[here.name]

    path = [max(bars, key=_end)]
    while True:
        here = path[-1]
        assert here.started is not None
        held = [s for s in bars if waited_for(s, here) and _end(s) <= here.started + EPSILON]
        if not held:
            return [s.name for s in reversed(path)]
        path.append(max(held, key=_end))


def _bar(service: ServiceState) -> bool:
    """It ran: it has a start and an end (an up-to-date service is skipped in an instant)."""
    return service.started is not None and service.ended is not None and service.state not in NO_BAR


NO_BAR = ("up to date", "skipped", "not started", "waiting")


def _end(service: ServiceState) -> float:
    return 0.0 if service.ended is None else float(service.ended)


def to_svg(state: RunState, titles: bool = True) -> str:
    """`titles`: each service's details as its SVG <title>, the tooltip of an SVG opened on its own."""
    critical = critical_path(state)
    end = max([state.ended or state.started, *(_end(s) for s in state.services.values())])
    span = max(end - state.started, 0.001)
    scale = (WIDTH - LABEL - RIGHT) / span
    rows = sum(len(names) for _, names in state.phases)
    height = TOP + len(state.phases) * BAND_HEAD + rows * ROW + 56
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}"'
        f' viewBox="0 0 {WIDTH} {height}" font-family="{FONT}" font-size="12">',
        f"<title>{escape(_title(state))}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="16" y="24" font-size="16" font-weight="600">{escape(_title(state))}</text>',
        f'<text x="16" y="44" fill="#444">{escape(totals(state, critical))}</text>',
    ]
    out += _axis(span, scale, height)
    y = TOP
    for index, (label, names) in enumerate(state.phases):
        band = BAND_HEAD + len(names) * ROW
        fill = "#f3f5f9" if index % 2 == 0 else "#fafbfc"
        out.append(
            f'<g class="phase" data-phase={quoteattr(label)}>'
            f'<rect x="0" y="{y}" width="{WIDTH}" height="{band}" fill="{fill}"/>'
            f'<text x="16" y="{y + 15}" font-weight="600" fill="#333">{escape(label)}</text></g>'
        )
        for row, name in enumerate(names):
            top = y + BAND_HEAD + row * ROW
            out += _service(
                state.services[name], state.started, scale, top, critical=name in critical, titles=titles
            )
        y += band
    out += _critical_line(state, critical, scale)
    out += _legend(state, y + 24)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _title(state: RunState) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(state.started))
    schedule = f" · schedule: {state.schedule}" if state.schedule else ""
    return f"{state.app} · {state.stage} · {state.verb}{schedule} · {when} · run {state.run[:8]}"


def totals(state: RunState, critical: list[str]) -> str:
    """`3 deployed (7.2s) · critical path 6.4s: checkout-api → confirmation-job`."""
    text = state.summary(state.ended or state.started)
    if critical:
        first, last = state.services[critical[0]], state.services[critical[-1]]
        length = _end(last) - (first.started or 0.0)
        text += f" · critical path {length:.1f}s: {' → '.join(critical)}"
    return text


def _axis(span: float, scale: float, height: int) -> list[str]:
    step = _tick(span)
    out = []
    for i in range(int(span / step) + 1):
        x = LABEL + i * step * scale
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 8}" x2="{x:.1f}" y2="{height - 48}" stroke="#e1e5ea"/>')
        out.append(
            f'<text x="{x:.1f}" y="{TOP - 12}" text-anchor="middle" fill="#777">{_seconds(i * step)}</text>'
        )
    return out


def _tick(span: float) -> float:
    """1, 2 or 5 times a power of ten: about eight ticks over the span."""
    rough = span / 8
    power = 10.0 ** math.floor(math.log10(rough))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= rough)


def _seconds(value: float) -> str:
    if value >= 60:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{value:g}s"


def _service(
    service: ServiceState, start: float, scale: float, top: int, *, critical: bool, titles: bool
) -> list[str]:
    colour = COLOURS.get(service.state, "#999999")
    details = quoteattr(json.dumps(_details(service), ensure_ascii=False))
    out = [
        f'<g class="service" data-service={quoteattr(service.name)} data-outcome={quoteattr(service.state)}'
        f" data-critical={quoteattr(str(critical).lower())} data-details={details}>",
        f"<title>{escape(_tooltip(service))}</title>" if titles else "",
        f'<text x="{LABEL - 8}" y="{top + 15}" text-anchor="end">{escape(service.name)}</text>',
    ]
    if _bar(service):
        assert service.started is not None
        x = LABEL + (service.started - start) * scale
        width = max(_end(service) - service.started, 0.0) * scale
        stroke = ' stroke="#111111" stroke-width="2"' if critical else ""
        out.append(
            f'<rect class="bar" x="{x:.1f}" y="{top + 3}" width="{max(width, 2):.1f}" height="{ROW - 6}"'
            f' rx="3" fill="{colour}"{stroke}/>'
        )
        label = f"{service.state} {service.seconds or 0:.1f}s"
        after = x + max(width, 2) + 4
        if after + 6.5 * len(label) > WIDTH:  # no room after the bar: at its end, inside
            place = f'x="{after - 8:.1f}" text-anchor="end" fill="#ffffff"'
        else:
            place = f'x="{after:.1f}" fill="#444"'
        out.append(f'<text {place} y="{top + 15}">{escape(label)}</text>')
    else:
        at = LABEL + ((service.started or start) - start) * scale
        out.append(f'<circle cx="{at:.1f}" cy="{top + 11}" r="4" fill="{colour}"/>')
        shown = service.state + (
            f": {service.detail}" if service.detail and service.state != "up to date" else ""
        )
        out.append(f'<text x="{at + 8:.1f}" y="{top + 15}" fill="#666">{escape(shown)}</text>')
    out.append("</g>")
    return out


def _critical_line(state: RunState, critical: list[str], scale: float) -> list[str]:
    """Dotted links from each service of the critical path to the next, over the bands."""
    if len(critical) < 2:
        return []
    rows = {name: i for i, name in enumerate(n for _, names in state.phases for n in names)}
    phase_of = {name: p for p, (_, names) in enumerate(state.phases) for name in names}

    def centre(name: str) -> float:
        return TOP + (phase_of[name] + 1) * BAND_HEAD + rows[name] * ROW + 11

    out = []
    for before, after in itertools.pairwise(critical):
        x1 = LABEL + (_end(state.services[before]) - state.started) * scale
        x2 = LABEL + ((state.services[after].started or 0.0) - state.started) * scale
        out.append(
            f'<path d="M{x1:.1f},{centre(before):.1f} L{x2:.1f},{centre(after):.1f}" fill="none"'
            ' stroke="#111111" stroke-width="1.2" stroke-dasharray="3 3"/>'
        )
    return out


def _legend(state: RunState, y: int) -> list[str]:
    shown = list(dict.fromkeys(s.state for s in state.services.values()))
    out, x = [], 16
    for outcome in shown:
        colour = COLOURS.get(outcome, "#999")
        out.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" rx="2" fill="{colour}"/>')
        out.append(f'<text x="{x + 17}" y="{y}">{escape(outcome)}</text>')
        x += 30 + 7 * len(outcome)
    outline = 'fill="#fff" stroke="#111" stroke-width="2"'
    out.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" rx="2" {outline}/>')
    out.append(f'<text x="{x + 17}" y="{y}">critical path</text>')
    return out


def _details(service: ServiceState) -> dict[str, object]:
    return {
        "service": service.name,
        "phase": service.phase,
        "outcome": service.state,
        "seconds": None if service.seconds is None else round(service.seconds, 1),
        "why": "; ".join(service.reasons),
        "latest": service.latest,
        "detail": service.detail,
    }


def _tooltip(service: ServiceState) -> str:
    parts = [f"{service.name} ({service.phase}): {service.state}"]
    if service.seconds is not None and _bar(service):
        parts.append(f"{service.seconds:.1f}s")
    parts += [f"why: {'; '.join(service.reasons)}"] if service.reasons else []
    parts += [service.detail] if service.detail else []
    parts += [f"last: {service.latest}"] if service.latest else []
    return "\n".join(parts)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: {font}; margin: 24px; color: #222; }}
.service:hover .bar {{ opacity: 0.75; }}
.service {{ cursor: default; }}
#details {{ position: fixed; pointer-events: none; display: none; max-width: 460px; padding: 8px 10px;
  background: #1f2328; color: #f6f8fa; border-radius: 6px; font-size: 12px; white-space: pre-wrap; }}
</style>
</head>
<body>
{svg}<div id="details"></div>
<script>
const box = document.getElementById("details");
for (const row of document.querySelectorAll("g.service")) {{
  const d = JSON.parse(row.dataset.details);
  const took = d.seconds === null ? "" : " in " + d.seconds + "s";
  const text = [d.service + " (" + d.phase + ")", d.outcome + took, d.why && "why: " + d.why, d.detail,
    d.latest && "last: " + d.latest].filter(Boolean).join("\\n");
  row.addEventListener("mousemove", e => {{
    box.textContent = text; box.style.display = "block";
    box.style.left = (e.clientX + 14) + "px"; box.style.top = (e.clientY + 14) + "px";
  }});
  row.addEventListener("mouseleave", () => {{ box.style.display = "none"; }});
}}
</script>
</body>
</html>
"""


def to_html(state: RunState) -> str:
    return PAGE.format(title=escape(_title(state)), font=FONT, svg=to_svg(state, titles=False))
