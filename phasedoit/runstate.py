"""A run as its record tells it: each service's state and times, the counts, and each event as a line.

Pure: events in (see runrecord), a `RunState` out. The reporter, the live board and the timeline all read
a run through it, so the lines, the board and the picture of one run always agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from phasedoit.stack import StackEvent

Event = dict[str, Any]  # one line of a run's record (see runrecord)

ACTIVE = {"deploy": "deploying", "remove": "removing"}
# Each final state, and what the summary counts it as.
SUMMARY = {
    "created": "deployed",
    "updated": "deployed",
    "unchanged": "deployed",
    "deployed": "deployed",
    "removed": "removed",
    "gone": "removed",
    "up to date": "up to date",
    "skipped": "skipped",
    "failed": "failed",
    "interrupted": "interrupted",
    "not started": "not started",
}
ORDER = ["deployed", "removed", "up to date", "skipped", "failed", "interrupted", "not started"]
UP_TO_DATE = "up to date"


@dataclass
class ServiceState:
    name: str
    phase: str
    upstreams: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # what phases.yml's `after:` deploys it after
    state: str = "waiting"  # waiting, packaging, deploying, removing, or a final state of SUMMARY
    reasons: list[str] = field(default_factory=list)  # why it deploys
    started: float | None = None
    ended: float | None = None
    stack: str = ""
    latest: str = ""  # its latest stack event, or line
    detail: str = ""  # why it was skipped, failed or not started

    @property
    def active(self) -> bool:
        return self.state in ("packaging", *ACTIVE.values())

    @property
    def done(self) -> bool:
        return self.state in SUMMARY

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@dataclass
class RunState:
    app: str = ""
    stage: str = ""
    run: str = ""
    verb: str = "deploy"
    schedule: str = ""  # a deploy's: phases or dependencies (empty in a record made before it was kept)
    started: float = 0.0
    ended: float | None = None
    phases: list[tuple[str, list[str]]] = field(default_factory=list)  # (label, services), in order
    services: dict[str, ServiceState] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        kind = event["event"]
        if kind == "run":
            self._begin(event)
        elif kind == "end":
            self.ended = event["t"]
            for service in self.services.values():
                if service.active:
                    service.state, service.ended = "interrupted", event["t"]
        elif "service" in event:
            _apply(self._service(event), event, self.verb)

    def _begin(self, event: Event) -> None:
        self.app, self.stage, self.run = event["app"], event["stage"], event["run"]
        self.verb, self.started = event["verb"], event["t"]
        self.schedule = event.get("schedule", "")
        for phase in event["phases"]:
            names = [s["service"] for s in phase["services"]]
            self.phases.append((phase["label"], names))
            for s in phase["services"]:
                self.services[s["service"]] = ServiceState(
                    s["service"], phase["label"], tuple(s["upstreams"]), tuple(s.get("after", ()))
                )

    def _service(self, event: Event) -> ServiceState:
        name = event["service"]
        if name not in self.services:  # not announced by the run's first event: its phase says where
            phase = event.get("phase", "")
            if phase not in (label for label, _ in self.phases):
                self.phases.append((phase, []))
            next(names for label, names in self.phases if label == phase).append(name)
            self.services[name] = ServiceState(name, phase)
        return self.services[name]

    def counts(self) -> Counter[str]:
        return Counter(SUMMARY[s.state] for s in self.services.values() if s.done)

    def summary(self, now: float) -> str:
        """`2 deployed, 1 failed, 3 not started (12.3s)`."""
        counts = self.counts()
        parts = [f"{counts[key]} {key}" for key in ORDER if counts[key]]
        return f"{', '.join(parts) or 'nothing to do'} ({(self.ended or now) - self.started:.1f}s)"

    def footer(self, now: float) -> str:
        """`4/9 done, 2 deploying, 3 waiting, 1 failed · 12.3s`."""
        states = Counter(s.state for s in self.services.values())
        parts = [f"{sum(s.done for s in self.services.values())}/{len(self.services)} done"]
        parts += [f"{states[state]} {state}" for state in ("packaging", *ACTIVE.values()) if states[state]]
        parts += [f"{states['waiting']} waiting"] if states["waiting"] else []
        parts += [f"{states['failed']} failed"] if states["failed"] else []
        return f"{', '.join(parts)} · {(self.ended or now) - self.started:.1f}s"

    def failed(self) -> list[ServiceState]:
        return [s for s in self.services.values() if s.state == "failed"]

    def not_started(self) -> list[ServiceState]:
        return [s for s in self.services.values() if s.state in ("waiting", "not started")]


def not_started(state: RunState) -> list[str]:
    """`not started because billing-job failed: audit-job, email-job`."""
    waiting = [s.name for s in state.not_started()]
    failed = state.failed()
    if not waiting or not failed:
        return []
    return [f"not started because {_names(failed)} failed: {', '.join(waiting)}"]


def _names(services: list[ServiceState]) -> str:
    return ", ".join(s.name for s in services)


def _apply(service: ServiceState, event: Event, verb: str) -> None:
    kind, t = event["event"], event["t"]
    if kind == "started":
        service.state, service.started = ACTIVE[event.get("verb", verb)], t
        service.reasons = list(event.get("reasons", []))
    elif kind == "packaging":
        service.state, service.latest = "packaging", event["text"]
    elif kind == "packaged":
        service.state, service.latest = ACTIVE[verb], event["text"]
    elif kind == "message":
        service.latest = event["text"]
    elif kind == "resource":
        service.latest = stack_event(event).text
    elif kind == "finished":
        service.state, service.ended, service.stack = event["action"], t, event.get("stack", "")
    elif kind == "skipped":
        service.state = UP_TO_DATE if event["reason"] == UP_TO_DATE else "skipped"
        service.detail, service.started, service.ended = event["reason"], t, t
    elif kind == "failed":
        service.state, service.detail, service.ended = "failed", event["message"], t
        service.started = service.started if service.started is not None else t
    elif kind == "not started":
        service.state, service.detail = "not started", event.get("reason", "")


def stack_event(event: Event) -> StackEvent:
    return StackEvent(event["logical_id"], event["type"], event["status"], event.get("reason", ""))


def fold(events: Iterable[Event]) -> RunState:
    state = RunState()
    for event in events:
        state.apply(event)
    return state


def line(event: Event) -> tuple[str, str] | None:
    """The plain line of an event and its stream (`out` or `err`, as phasedoit has always split them)."""
    kind = event["event"]
    if kind == "started":
        deploys = event.get("reasons") and event.get("verb", "deploy") == "deploy"
        text = f"deploying ({'; '.join(event['reasons'])})" if deploys else None
    elif kind == "skipped":
        text = event["reason"] if event["reason"] == UP_TO_DATE else f"skipped ({event['reason']})"
    elif kind == "failed":
        text = f"failed: {event['message'].splitlines()[0]}" if event["message"] else "failed"
    elif kind in ("message", "packaging"):
        text = event["text"]  # a step's end (`packaged`) only moves the board on: its steps were said
    elif kind == "resource":
        text = stack_event(event).text
    elif kind == "finished":
        text = finished(event["action"], event["stack"], event.get("seconds", 0.0))
    else:
        text = None
    if text is None:
        return None
    return ("out" if kind in ("started", "skipped", "failed") else "err"), f"{event['service']}: {text}"


def finished(action: str, stack: str, seconds: float) -> str:
    if action == "removed":
        return f"removed {stack}"
    if action == "gone":
        return f"{stack} is already gone"
    return f"{action} {stack} in {seconds:.1f}s"
