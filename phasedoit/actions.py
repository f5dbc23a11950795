"""The doit actions: module-level functions of plain data, so that doit's `-n` workers can unpickle them.

They never ask which kind of service they hold: the plan names its deployer.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from phasedoit import deployers
from phasedoit.errors import PhasedoitError
from phasedoit.planning import ServicePlan
from phasedoit.stack import Target, Verdict, value_hash

# Outputs are kept in doit's state file; account ids (inside ARNs and queue URLs) must not be.
ACCOUNT_ID = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")


def deploy_service(plan: ServicePlan, target: Target, run: str, task: Any) -> dict[str, Any] | TaskFailed:
    """Send the service's rendered request, tagged with the fingerprint its uptodate check computed.

    The task's values: outputs (account ids masked), and each export's value hash with this run's id, so
    that its importers' checks later in this run see what it exports now.
    """
    verdict: Verdict = task.meta["phasedoit"]
    if verdict.error:
        return TaskFailed(f"{plan.name}: {verdict.error}")
    if verdict.fingerprint is None:  # doit's --always-execute skips the uptodate check
        why = f"doit ran it without phasedoit's check: use force={plan.name} instead of -a"
        return TaskFailed(f"{plan.name}: {why}")
    say = _say(plan.name)
    started = time.monotonic()
    deployer = deployers.get(plan.deployer)
    try:
        where = resolve_target(target)
        deployer.guard(plan, where, "deploy")
        result = deployer.deploy(plan, where, verdict.fingerprint, say)
    except PhasedoitError as e:
        return TaskFailed(f"{plan.name}: {e}")
    say(f"{result.action} {plan.stack} in {time.monotonic() - started:.1f}s")
    return {
        "run": run,
        "outputs": {key: ACCOUNT_ID.sub("<account>", value) for key, value in result.outputs.items()},
        "exports": {name: value_hash(value) for name, value in result.exports.items()},
    }


def remove_service(plan: ServicePlan, target: Target, alone: bool) -> TaskFailed | None:
    say = _say(plan.name)
    if plan.skip:
        say(f"skipped ({plan.skip})")
        return None
    deployer = deployers.get(plan.deployer)
    try:
        where = resolve_target(target)
        deployer.guard(plan, where, "remove")
        removed = deployer.remove(plan, where, say, alone)
    except PhasedoitError as e:
        return TaskFailed(f"{plan.name}: {e}")
    say(f"removed {plan.stack}" if removed else f"{plan.stack} is already gone")
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


def _say(service: str) -> Callable[[str], None]:
    def say(message: str) -> None:
        sys.stderr.write(f"{service}: {message}\n")  # one write: lines of parallel workers stay whole
        sys.stderr.flush()

    return say
