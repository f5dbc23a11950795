"""The doit actions: module-level functions of plain data, so that doit's `-n` workers can unpickle them."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from phasedoit import framework
from phasedoit.errors import PhasedoitError
from phasedoit.stack import FINGERPRINT_TAG, StackSpec, Target, value_hash

# Outputs are kept in doit's state file; account ids (inside ARNs and queue URLs) must not be.
ACCOUNT_ID = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")


def deploy_service(
    service: str, stack: StackSpec, target: Target, run: str, task: Any
) -> dict[str, Any] | TaskFailed:
    """Deploy one service's stack, tagged with the fingerprint its uptodate check computed.

    The task's values: outputs (account ids masked), and each export's value hash with this run's id, so
    that its importers' checks later in this run see what it exports now.
    """
    from phasedoit import cloudformation  # boto3 loads in the workers, not when doit lists tasks

    meta = task.meta["phasedoit"]
    fingerprint = {FINGERPRINT_TAG: meta["fingerprint"]} if "fingerprint" in meta else {}
    say = _say(service)
    started = time.monotonic()
    try:
        cfn = cloudformation.client(resolve_target(target))
        result = cloudformation.deploy_stack(cfn, replace(stack, tags={**stack.tags, **fingerprint}), say)
    except PhasedoitError as e:
        return TaskFailed(f"{service}: {e}")
    say(f"{result.action} {stack.name} in {time.monotonic() - started:.1f}s")
    return {
        "run": run,
        "outputs": {key: ACCOUNT_ID.sub("<account>", value) for key, value in result.outputs.items()},
        "exports": {name: value_hash(value) for name, value in result.exports.items()},
    }


def remove_service(service: str, stack_name: str, target: Target) -> TaskFailed | None:
    from phasedoit import cloudformation

    try:
        cfn = cloudformation.client(resolve_target(target))
        removed = cloudformation.remove_stack(cfn, stack_name, _say(service))
    except PhasedoitError as e:
        return TaskFailed(f"{service}: {e}")
    _say(service)(f"removed {stack_name}" if removed else f"{stack_name} is already gone")
    return None


def deploy_serverless(
    service: str, sls: framework.ServerlessRun, target: Target, run: str
) -> dict[str, Any] | TaskFailed:
    """Deploy a Serverless Framework service with `serverless deploy`, in its folder.

    Its values hold no exports: its importers' checks in this run see them as the run's first listing did.
    """
    say = _say(service)
    refused = _refuse_endpoint(service, sls, "deploy", target)
    if refused:
        return refused
    started = time.monotonic()
    argv = framework.arguments(sls.stage, target.region)
    failed = framework.serverless("deploy", service, sls, argv, say)
    if failed:
        return TaskFailed(failed)
    say(f"deployed {sls.stack_name} with the Serverless Framework in {time.monotonic() - started:.1f}s")
    return {"run": run}


def remove_serverless(service: str, sls: framework.ServerlessRun, target: Target) -> TaskFailed | None:
    refused = _refuse_endpoint(service, sls, "remove", target)
    if refused:
        return refused
    argv = framework.arguments(sls.stage, target.region)
    failed = framework.serverless("remove", service, sls, argv, _say(service))
    if failed:
        return TaskFailed(failed)
    _say(service)(f"removed {sls.stack_name} with the Serverless Framework")
    return None


def _refuse_endpoint(
    service: str, sls: framework.ServerlessRun, verb: str, target: Target
) -> TaskFailed | None:
    """`serverless` takes no endpoint: run with one, it would reach the real AWS account instead."""
    if not (target.local or target.endpoint):
        return None
    where = "the embedded local endpoint" if target.local else f"endpoint {target.endpoint}"
    return TaskFailed(
        f"{service}: cannot {verb} {sls.config} at {where}: the Serverless Framework works on AWS only"
    )


def check_exports(imports: list[tuple[str, str]], target: Target) -> TaskFailed | None:
    """Imports from outside the app must exist before anything deploys: one ListExports listing."""
    from phasedoit import cloudformation, graph

    try:
        existing = cloudformation.export_names(cloudformation.client(resolve_target(target)))
    except PhasedoitError as e:
        return TaskFailed(str(e))
    missing = graph.missing_external_imports(imports, existing)
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
