"""`doit plan`: what `doit deploy` would deploy, and why, without deploying anything."""

from __future__ import annotations

import sys

from doit.cmd_base import DoitCmdBase

from phasedoit import graph
from phasedoit.stack import Verdict


class Plan(DoitCmdBase):  # type: ignore[misc]
    name = "plan"
    doc_purpose = "show which services `deploy` would deploy, and why, without deploying"
    doc_usage = "[stage=STAGE] [force=SERVICE,...]"
    doc_description = None
    cmd_options = ()

    def _execute(self, pos_args: list[str] | None = None) -> int:
        tasks = {task.name: task for task in self.task_list}
        services = [task for task in self.task_list if task.name.startswith("deploy:") and task.meta]
        lines: list[str] = []
        deploying: set[str] = set()
        phase = None
        for task in services:  # in phase order, as phasedoit defines them
            verdict: Verdict = task.meta["phasedoit"]
            if verdict.phase != phase:
                phase = verdict.phase
                lines.append(f"{phase}\n")
            self.dep_manager.get_status(task, tasks)  # runs phasedoit's check, which fills the verdict
            if verdict.error:
                sys.stderr.write(f"{verdict.error}\n")
                return 1
            lines.append(_line(verdict, deploying))
        total = f"{len(services)} service{'s' * (len(services) != 1)}"
        self.outstream.write(f"{len(deploying)} of {total} would deploy\n" + "".join(lines))
        return 0


def _line(verdict: Verdict, deploying: set[str]) -> str:
    service, reasons = verdict.service, verdict.reasons
    deployed = [upstream for upstream in verdict.upstreams if upstream in deploying]
    waits = graph.labels(deployed, verdict.conditional)
    if verdict.skipped:
        status = f"skipped: {verdict.skipped}"
    elif reasons:
        deploying.add(service)
        status = f"deploys: {'; '.join(reasons)}"
    elif waits:
        status = f"up to date, unless the exports of {', '.join(waits)} change"
    else:
        status = "up to date"
    notes = "".join(f"  {'':<22} {note}\n" for note in verdict.notes if reasons)
    return f"  {service:<22} {status}\n{notes}"
