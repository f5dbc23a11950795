"""What doit prints during a phasedoit run: plain lines, or a live board on a terminal; then a summary.

The workers' progress reaches this reporter, in doit's main process, through the run's record (see
runrecord): a thread follows the record as it grows and shows each new event. The reporter's own events
(services up to date or skipped, failures, services not started) go through the record too, so that the
screen and the record tell one story, in one order.

Plain lines when stdout is not a terminal or CI is set: as phasedoit always printed them (what a service's
deploy says on stderr, the rest on stdout), plus a line per CloudFormation stack event, never a colour or a
carriage return. On a terminal, the live board of board.py. `PHASEDOIT_PROGRESS=plain|live` overrides.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

from doit.reporter import ConsoleReporter

from phasedoit import runrecord
from phasedoit.errors import PhasedoitError
from phasedoit.runrecord import Follower, Record
from phasedoit.runstate import Event, RunState, line, not_started
from phasedoit.stack import Verdict

MODES = ("plain", "live")
POLL = 0.1  # seconds between two reads of the record: how late a worker's line shows


def progress_mode(environ: Mapping[str, str], stream: Any) -> str:
    """`live` on a terminal outside CI, else `plain`; PHASEDOIT_PROGRESS chooses either."""
    chosen = environ.get("PHASEDOIT_PROGRESS", "")
    if chosen:
        if chosen not in MODES:
            raise PhasedoitError(f"PHASEDOIT_PROGRESS: expected 'plain' or 'live', got {chosen!r}")
        return chosen
    if environ.get("CI", "").lower() not in ("", "0", "false"):
        return "plain"
    terminal = hasattr(stream, "isatty") and stream.isatty() and environ.get("TERM") != "dumb"
    return "live" if terminal else "plain"


class View(Protocol):
    def show(self, event: Event, state: RunState) -> None: ...
    def tick(self, state: RunState) -> None: ...
    def text(self, text: str) -> None: ...
    def finish(self, state: RunState | None, errors: list[str]) -> None: ...


class Reporter(ConsoleReporter):  # type: ignore[misc]
    desc = "phasedoit: a live board on a terminal, else a line per service and stack event; a summary"

    def __init__(self, outstream: TextIO, options: Any) -> None:
        super().__init__(outstream, options)
        self.errstream = sys.stderr  # doit's threads swap sys.stderr while their actions run
        self.lock = threading.RLock()
        self.state: RunState | None = None
        self.record: Record | None = None
        self.follower: Follower | None = None
        self.view: View = Plain(outstream, self.errstream)
        self.stopping = threading.Event()
        self.ticker: threading.Thread | None = None

    def write(self, text: str) -> None:
        with self.lock:
            self.view.text(text.rstrip("\n"))

    def initialize(self, tasks: Mapping[str, Any], selected_tasks: list[str]) -> None:
        services = run_services(tasks, selected_tasks)
        if not services:
            return
        verdicts: list[Verdict] = [task.meta["phasedoit"] for task in services]
        verb = services[0].name.split(":")[0]
        deploy = tasks.get("deploy") if verb == "deploy" else None
        schedule = str((deploy.meta or {}).get("schedule", "")) if deploy is not None else ""
        first = _first_event(verb, verdicts, schedule)
        if isinstance(self.view, Plain) and schedule:
            # with `schedule: dependencies` phases interleave: no headers, each line names its service
            self.view.phased = schedule != "dependencies"
        self.state = RunState()
        self.record = next((v.record for v in verdicts if v.record), None)
        if self.record:
            try:
                runrecord.start(self.record, first)
                self.follower = Follower(self.record.path)
            except OSError as e:
                self.errstream.write(f"warning: cannot record this run in {e.filename}: {e.strerror}\n")
                self.record = None
        if self.follower is None:  # the workers print their own lines then: no board over them
            self.state.apply({"t": time.time(), **first})
        elif progress_mode(os.environ, self.outstream) == "live":
            from phasedoit.board import LiveBoard

            self.view = LiveBoard(self.outstream)
        self.ticker = threading.Thread(target=self._tick, name="phasedoit-reporter", daemon=True)
        self.ticker.start()

    def execute_task(self, task: Any) -> None:
        verdict = _verdict(task)
        if verdict is None:
            if task.actions and not task.name.startswith("_"):  # phasedoit's own checks run unseen
                self.write(f"{task.name}: {task.doc}\n")
        elif self.state and self.follower is None:  # no record: what its worker would have recorded
            verb = task.name.split(":")[0]
            started = {"service": verdict.service, "phase": verdict.phase, "reasons": verdict.reasons}
            self._emit({"event": "started", "verb": verb, **started})

    def skip_uptodate(self, task: Any) -> None:
        verdict = _verdict(task)
        if verdict:
            reason = verdict.skipped or "up to date"
            self._emit(
                {"event": "skipped", "service": verdict.service, "phase": verdict.phase, "reason": reason}
            )

    def add_success(self, task: Any) -> None:
        verdict = _verdict(task)
        if verdict and self.state and self.follower is None:  # no record: its worker said its own lines
            action = {"deploy": "deployed", "remove": "removed"}[task.name.split(":")[0]]
            self.state.apply(
                {"t": time.time(), "event": "finished", "service": verdict.service, "action": action}
            )

    def add_failure(self, task: Any, fail: Any) -> None:
        self.failures.append({"task": task, "exception": fail})
        verdict = _verdict(task)
        if verdict is None or self.state is None:
            return
        with self.lock:
            self._pump()
            if fail.get_name() == "UnmetDependency":
                event = {"event": "not started", "service": verdict.service, "reason": self._why_not()}
            else:
                event = {"event": "failed", "service": verdict.service, "message": _message(task, fail)}
            self._emit(event)

    def complete_run(self) -> None:
        self.stopping.set()
        if self.ticker:
            self.ticker.join()
        with self.lock:
            if self.state:
                self._pump()
                for service in self.state.services.values():
                    if service.state == "waiting":
                        self._emit(
                            {"event": "not started", "service": service.name, "reason": self._why_not()}
                        )
                self._emit({"event": "end", "seconds": round(time.time() - self.state.started, 3)})
            if self.follower:
                self.follower.close()
            errors = [f["exception"].get_msg().rstrip("\n") for f in self.failures if _failed(f)]
            self.view.finish(self.state, errors + [str(error) for error in self.runtime_errors])

    def _why_not(self) -> str:
        failed = [s.name for s in self.state.failed()] if self.state else []
        return f"{', '.join(failed)} failed" if failed else "the run stopped"

    def _emit(self, event: Event) -> None:
        """An event seen by the main process: into the record, and shown in the record's order."""
        with self.lock:
            if self.record and runrecord.append(self.record.path, event):
                self._pump()
            elif self.state:
                stamped = {"t": time.time(), **event}
                self.state.apply(stamped)
                self.view.show(stamped, self.state)

    def _pump(self) -> None:
        if self.follower and self.state:
            for event in self.follower.read():
                self.state.apply(event)
                self.view.show(event, self.state)

    def _tick(self) -> None:
        while not self.stopping.wait(POLL):
            with self.lock:
                self._pump()
                if self.state:
                    self.view.tick(self.state)


class Plain:
    """Lines: what a service's deploy says on stderr, phase headers and the rest on stdout."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.phase: str | None = None
        self.phased = True  # a header when the phase changes

    def show(self, event: Event, state: RunState) -> None:
        if self.phased and event["event"] in ("started", "skipped"):
            phase = state.services[event["service"]].phase
            if phase != self.phase:
                self.phase = phase
                self.text(phase)
        shown = line(event)
        if shown:
            stream, text = shown
            self._write(self.out if stream == "out" else self.err, text)

    def tick(self, state: RunState) -> None:
        pass

    def text(self, text: str) -> None:
        self._write(self.out, text)

    def finish(self, state: RunState | None, errors: list[str]) -> None:
        for error in errors:
            self._write(self.err, error)
        if state is None:
            return
        for text in not_started(state):
            self.text(text)
        self.text(state.summary(time.time()))

    def _write(self, stream: TextIO, text: str) -> None:
        stream.write(f"{text}\n")
        stream.flush()  # stdout and stderr keep their order when both go to one pipe


def run_services(tasks: Mapping[str, Any], selected: list[str] | None) -> list[Any]:
    """The service tasks this run may execute: the selected ones and what they depend on, in task order."""
    seen: set[str] = set()
    todo = list(selected or [])
    while todo:
        name = todo.pop()
        if name in seen or name not in tasks:
            continue
        seen.add(name)
        todo += [*tasks[name].task_dep, *tasks[name].setup_tasks]
    return [task for name, task in tasks.items() if name in seen and _verdict(task)]


def _first_event(verb: str, verdicts: list[Verdict], schedule: str = "") -> Event:
    record = next((v.record for v in verdicts if v.record), None)
    phases: dict[str, list[dict[str, Any]]] = {}
    for v in verdicts:
        service = {"service": v.service, "upstreams": list(v.upstreams), "after": list(v.after)}
        phases.setdefault(v.phase, []).append(service)
    return {
        "event": "run",
        "app": record.app if record else "",
        "stage": record.stage if record else "",
        "run": record.run if record else "",
        "verb": verb,
        "schedule": schedule,
        "phases": [{"label": label, "services": services} for label, services in phases.items()],
    }


def _message(task: Any, fail: Any) -> str:
    """A failure's message without its `service: ` prefix; of a traceback, its last line."""
    message: str = fail.get_msg().strip()
    if fail.get_name() != "TaskFailed":
        message = message.splitlines()[-1] if message else fail.get_name()
    service = task.name.split(":", 1)[-1]
    return message.removeprefix(f"{service}: ")


def _failed(failure: dict[str, Any]) -> bool:
    return bool(failure["exception"].get_name() != "UnmetDependency")


def _verdict(task: Any) -> Verdict | None:
    verdict = (task.meta or {}).get("phasedoit")
    return verdict if isinstance(verdict, Verdict) else None
