"""`doit plan`: what `doit deploy` would deploy, and why, without deploying anything.

As text (default), JSON for CI and reviews, or Markdown a CI job can post on a pull request
(`doit plan --format json|markdown`): the three say the same, service by service.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from doit.cmd_base import DoitCmdBase

from phasedoit import graph
from phasedoit.stack import Verdict

FORMATS = ("text", "json", "markdown")
OPT_FORMAT = {
    "name": "format",
    "short": "",
    "long": "format",
    "type": str,
    "default": "text",
    "choices": [(f, "") for f in FORMATS],
    "help": "text (default), json, or markdown (a summary to post on a pull request)",
}


@dataclass(frozen=True)
class ServiceLine:
    service: str
    phase: str
    status: str  # deploys, up to date, skipped
    text: str  # as the text plan says it: `deploys: changed files: template.yml`
    reasons: list[str] = field(default_factory=list)
    waits_for: list[str] = field(default_factory=list)  # its upstreams that deploy first, in this run
    upstreams: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what rendering decided that the user did not write


class Plan(DoitCmdBase):  # type: ignore[misc]
    name = "plan"
    doc_purpose = "show which services `deploy` would deploy, and why, without deploying"
    doc_usage = "[stage=STAGE] [force=SERVICE,...] [--format text|json|markdown]"
    doc_description = None
    cmd_options = (OPT_FORMAT,)

    def _execute(self, format: str = "text", pos_args: list[str] | None = None) -> int:
        tasks = {task.name: task for task in self.task_list}
        services = [task for task in self.task_list if task.name.startswith("deploy:") and task.meta]
        verdicts: list[Verdict] = []
        for task in services:  # in phase order, as phasedoit defines them
            verdict: Verdict = task.meta["phasedoit"]
            self.dep_manager.get_status(task, tasks)  # runs phasedoit's check, which fills the verdict
            if verdict.error:
                sys.stderr.write(f"{verdict.error}\n")
                return 1
            verdicts.append(verdict)
        record = next((v.record for v in verdicts if v.record), None)
        app, stage = (record.app, record.stage) if record else ("", "")
        schedule = str((tasks["deploy"].meta or {}).get("schedule", "")) if "deploy" in tasks else ""
        self.outstream.write(RENDER[format](plan_lines(verdicts), app, stage, schedule))
        return 0


def plan_lines(verdicts: list[Verdict]) -> list[ServiceLine]:
    lines: list[ServiceLine] = []
    deploying: set[str] = set()
    for verdict in verdicts:
        waits = [upstream for upstream in verdict.upstreams if upstream in deploying]
        named = graph.labels(waits, verdict.conditional)  # `alert (conditional)`
        if verdict.skipped:
            status, text = "skipped", f"skipped: {verdict.skipped}"
        elif verdict.reasons:
            deploying.add(verdict.service)
            status, text = "deploys", f"deploys: {'; '.join(verdict.reasons)}"
        elif waits:
            status, text = "up to date", f"up to date, unless the exports of {', '.join(named)} change"
        else:
            status, text = "up to date", "up to date"
        lines.append(
            ServiceLine(
                verdict.service,
                verdict.phase,
                status,
                text,
                list(verdict.reasons),
                waits,
                list(verdict.upstreams),
                list(verdict.notes) if verdict.reasons else [],
            )
        )
    return lines


def summary(lines: list[ServiceLine], schedule: str = "") -> str:
    deploying, total = sum(line.status == "deploys" for line in lines), len(lines)
    scheduled = f" (schedule: {schedule})" if schedule else ""
    return f"{deploying} of {total} service{'s' * (total != 1)} would deploy{scheduled}"


def _phases(lines: list[ServiceLine]) -> dict[str, list[ServiceLine]]:
    phases: dict[str, list[ServiceLine]] = {}
    for line in lines:
        phases.setdefault(line.phase, []).append(line)
    return phases


def to_text(lines: list[ServiceLine], app: str, stage: str, schedule: str = "") -> str:
    out = [summary(lines, schedule)]
    for phase, members in _phases(lines).items():
        out.append(phase)
        for line in members:
            out += [f"  {line.service:<22} {line.text}", *(f"  {'':<22} {note}" for note in line.notes)]
    return "\n".join(out) + "\n"


def to_json(lines: list[ServiceLine], app: str, stage: str, schedule: str = "") -> str:
    document: dict[str, Any] = {
        "app": app,
        "stage": stage,
        "schedule": schedule,
        "summary": summary(lines, schedule),
        "deploys": sum(line.status == "deploys" for line in lines),
        "services": len(lines),
        "phases": [
            {"phase": phase, "services": [_fields(line) for line in members]}
            for phase, members in _phases(lines).items()
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def _fields(line: ServiceLine) -> dict[str, Any]:
    fields = asdict(line)
    del fields["phase"]
    return fields


def to_markdown(lines: list[ServiceLine], app: str, stage: str, schedule: str = "") -> str:
    out = [
        f"### phasedoit plan: {_cell(app)}, stage {_cell(stage)}",
        "",
        f"**{summary(lines, schedule)}**",
        "",
    ]
    out += ["| phase | service | plan |", "| --- | --- | --- |"]
    for line in lines:
        text = _cell(line.text)
        if line.status == "deploys":
            text = f"**deploys**{text.removeprefix('deploys')}"
        notes = "".join(f"<br>{_cell(note)}" for note in line.notes)
        out.append(f"| {_cell(line.phase)} | `{line.service}` | {text}{notes} |")
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    """Text in a Markdown table cell: a `|` would end the cell, a newline the row."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


RENDER = {"text": to_text, "json": to_json, "markdown": to_markdown}
