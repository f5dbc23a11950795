"""What doit prints during a phasedoit run: phase headers, a line per service, failures, then a summary."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

from doit.reporter import ConsoleReporter

from phasedoit.stack import Verdict

DONE = {"deploy": "deployed", "remove": "removed"}


class Reporter(ConsoleReporter):  # type: ignore[misc]
    desc = "phasedoit: phase headers, a line per service, a summary"

    def __init__(self, outstream: Any, options: Any) -> None:
        super().__init__(outstream, options)
        self.started = time.monotonic()
        self.phase: str | None = None
        self.counts: Counter[str] = Counter()

    def write(self, text: str) -> None:
        # the actions' progress goes to stderr from doit's workers: keep the two streams in order
        self.outstream.write(text)
        self.outstream.flush()

    def execute_task(self, task: Any) -> None:
        service = _service(task)
        if service:
            self._header(service)
            if service.reasons:
                self.write(f"{service.service}: deploying ({'; '.join(service.reasons)})\n")
        elif task.actions and not task.name.startswith("_"):  # phasedoit's own checks run unseen
            self.write(f"{task.name}: {task.doc}\n")

    def skip_uptodate(self, task: Any) -> None:
        service = _service(task)
        if service:
            self._header(service)
            if service.skipped:
                self.write(f"{service.service}: skipped ({service.skipped})\n")
                self.counts["skipped"] += 1
            else:
                self.write(f"{service.service}: up to date\n")
                self.counts["up to date"] += 1

    def add_success(self, task: Any) -> None:
        if _service(task):
            self.counts[DONE[task.name.split(":")[0]]] += 1

    def add_failure(self, task: Any, fail: Any) -> None:
        self.failures.append({"task": task, "exception": fail})
        if _service(task):
            self.counts["not started" if fail.get_name() == "UnmetDependency" else "failed"] += 1

    def complete_run(self) -> None:
        for failure in self.failures:
            if failure["exception"].get_name() != "UnmetDependency":
                sys.stderr.write(failure["exception"].get_msg().rstrip("\n") + "\n")
        for error in self.runtime_errors:
            sys.stderr.write(f"{error}\n")
        if self.counts:
            order = ["deployed", "removed", "up to date", "skipped", "failed", "not started"]
            parts = [f"{self.counts[key]} {key}" for key in order if key in self.counts]
            self.write(f"{', '.join(parts)} ({time.monotonic() - self.started:.1f}s)\n")

    def _header(self, service: Verdict) -> None:
        if service.phase != self.phase:
            self.phase = service.phase
            self.write(f"{self.phase}\n")


def _service(task: Any) -> Verdict | None:
    verdict = (task.meta or {}).get("phasedoit")
    return verdict if isinstance(verdict, Verdict) else None
