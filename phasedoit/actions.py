"""The doit actions: module-level functions of plain data, so that doit's `-n` workers can unpickle them.

They never ask which kind of service they hold: the plan names its deployer.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

import phasedoit.workers  # noqa: F401 (for its hooks: a `-P process` worker, which runs these, ends with doit)
from phasedoit import deployers
from phasedoit.errors import PhasedoitError
from phasedoit.planning import ServicePlan
from phasedoit.runrecord import Record, Recorder
from phasedoit.stack import Target, Verdict, value_hash

# Outputs are kept in doit's state file; account ids (inside ARNs and queue URLs) must not be.
ACCOUNT_ID = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")


def deploy_service(plan: ServicePlan, target: Target, run: str, task: Any) -> dict[str, Any] | TaskFailed:
    """Send the service's rendered request, tagged with the fingerprint its uptodate check computed.

    The task's values: outputs (account ids masked), and each export's value hash with this run's id, so
    that its importers' checks later in this run see what it exports now.
    """
    verdict: Verdict = task.meta["phasedoit"]
    record = Recorder(verdict.record, plan.name)
    record.emit("started", phase=verdict.phase, verb="deploy", reasons=verdict.reasons)
    if verdict.error:
        return TaskFailed(f"{plan.name}: {verdict.error}")
    if verdict.fingerprint is None:  # doit's --always-execute skips the uptodate check
        why = f"doit ran it without phasedoit's check: use force={plan.name} instead of -a"
        return TaskFailed(f"{plan.name}: {why}")
    started = time.monotonic()
    deployer = deployers.get(plan.deployer)
    try:
        where = resolve_target(target)
        deployer.guard(plan, where, "deploy")
        result = deployer.deploy(plan, where, verdict.fingerprint, record.say, record.progress)
    except PhasedoitError as e:
        return TaskFailed(f"{plan.name}: {e}")
    seconds = round(time.monotonic() - started, 3)
    record.emit("finished", action=result.action, stack=plan.stack, seconds=seconds)
    return {
        "run": run,
        "outputs": {key: ACCOUNT_ID.sub("<account>", value) for key, value in result.outputs.items()},
        "exports": {name: value_hash(value) for name, value in result.exports.items()},
    }


def remove_service(
    plan: ServicePlan, target: Target, alone: bool, record: Record | None = None
) -> TaskFailed | None:
    recorder = Recorder(record, plan.name)
    if plan.skip:
        recorder.emit("skipped", phase=plan.phase.label, reason=plan.skip)
        return None
    recorder.emit("started", phase=plan.phase.label, verb="remove", reasons=[])
    started = time.monotonic()
    deployer = deployers.get(plan.deployer)
    try:
        where = resolve_target(target)
        deployer.guard(plan, where, "remove")
        removed = deployer.remove(plan, where, recorder.say, alone, recorder.progress)
    except PhasedoitError as e:
        return TaskFailed(f"{plan.name}: {e}")
    seconds = round(time.monotonic() - started, 3)
    recorder.emit("finished", action="removed" if removed else "gone", stack=plan.stack, seconds=seconds)
    return None


def check_exports(
    imports: list[tuple[str, str]], target: Target, exports: dict[str, str] | None = None
) -> TaskFailed | None:
    """Imports from outside the app must exist before anything deploys: one ListExports listing.

    `exports`: the app's own, by name, with their services (for near misses).
    """
    from phasedoit import cloudformation, graph

    try:
        existing = cloudformation.export_names(cloudformation.client(resolve_target(target)))
    except PhasedoitError as e:
        return TaskFailed(str(e))
    missing = graph.missing_external_imports(imports, existing, exports)
    return TaskFailed("\n".join(missing)) if missing else None


def resolve_target(target: Target) -> Target:
    """The embedded endpoint's address is known only once it runs: start it (or find it) here."""
    if not target.local or target.endpoint:
        return target
    from phasedoit import local

    return replace(target, endpoint=local.ensure_endpoint(Path(target.local)))
