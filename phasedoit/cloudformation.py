"""The one boto3 user: deploy and remove stacks, wait for them, and say why they failed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from phasedoit import aws
from phasedoit.aws import message as _message
from phasedoit.aws import translated as _translated
from phasedoit.errors import PhasedoitError
from phasedoit.stack import (
    DEPLOYED,
    FINGERPRINT_TAG,
    Deployed,
    RemoteStack,
    StackSpec,
    Target,
    value_hash,
)

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_cloudformation.type_defs import StackEventTypeDef, StackTypeDef

Say = Callable[[str], None]
# A failed first create leaves a stack that cannot be updated, only deleted and created again.
RECREATE = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "REVIEW_IN_PROGRESS"}
NO_UPDATES = "No updates are to be performed."


@dataclass(frozen=True)
class Waiting:
    """Polling: an immediate first look (a local endpoint is done at once), then backing off to `most`."""

    first: float = 0.5
    most: float = 15.0
    timeout: float = 3 * 3600.0

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay
            delay = min(delay * 1.5, self.most)


def client(target: Target) -> CloudFormationClient:
    client: CloudFormationClient = aws.client(target, "cloudformation")
    return client


def describe(cfn: CloudFormationClient, name: str) -> StackTypeDef | None:
    try:
        return cfn.describe_stacks(StackName=name)["Stacks"][0]
    except botocore.exceptions.ClientError as e:
        if "does not exist" in _message(e):
            return None
        raise


def deploy_stack(
    cfn: CloudFormationClient, spec: StackSpec, say: Say, waiting: Waiting = Waiting()
) -> Deployed:
    with _translated():
        stack = describe(cfn, spec.name)
        if (
            stack
            and stack["StackStatus"].endswith("_IN_PROGRESS")
            and stack["StackStatus"] != "REVIEW_IN_PROGRESS"
        ):
            say(f"waiting for {spec.name} ({stack['StackStatus']})")
            stack = _settle(cfn, stack["StackId"], waiting)
        if stack and stack["StackStatus"] in RECREATE:
            say(f"deleting {spec.name} ({stack['StackStatus']}) to create it again")
            _delete(cfn, stack["StackId"], waiting)
            stack = None
        if stack is None:
            say(f"creating {spec.name}")
            stack_id = _create(cfn, spec)
            action = "created"
        else:
            say(f"updating {spec.name}")
            stack_id = stack["StackId"]
            action = "updated" if _update(cfn, spec) else "unchanged"
        final = _settle(cfn, stack_id, waiting)
        if final["StackStatus"] not in DEPLOYED:
            raise PhasedoitError(_failure(cfn, final))
        return Deployed(action, *_outputs(final))


def remove_stack(cfn: CloudFormationClient, name: str, say: Say, waiting: Waiting = Waiting()) -> bool:
    """Delete the stack and wait until it is gone; False if there was none."""
    with _translated():
        stack = describe(cfn, name)
        if stack is None:
            return False
        say(f"deleting {name}")
        _delete(cfn, stack["StackId"], waiting)
        return True


def list_stacks(cfn: CloudFormationClient) -> dict[str, RemoteStack]:
    """Every stack of the target, from one paginated DescribeStacks listing."""
    with _translated():
        return {
            stack["StackName"]: RemoteStack(
                stack["StackStatus"],
                _tags(stack).get(FINGERPRINT_TAG),
                {name: value_hash(value) for name, value in _outputs(stack)[1].items()},
            )
            for page in cfn.get_paginator("describe_stacks").paginate()
            for stack in page["Stacks"]
        }


def export_names(cfn: CloudFormationClient) -> set[str]:
    with _translated():
        return {e["Name"] for page in cfn.get_paginator("list_exports").paginate() for e in page["Exports"]}


def _create(cfn: CloudFormationClient, spec: StackSpec) -> str:
    return cfn.create_stack(StackName=spec.name, **_arguments(spec))["StackId"]


def _update(cfn: CloudFormationClient, spec: StackSpec) -> bool:
    """False when CloudFormation finds nothing to update (the same template, parameters and tags)."""
    try:
        cfn.update_stack(StackName=spec.name, **_arguments(spec))
    except botocore.exceptions.ClientError as e:
        if _message(e) != NO_UPDATES:
            raise
        return False
    return True


def _arguments(spec: StackSpec) -> dict[str, Any]:
    return {
        "TemplateBody": spec.body,
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(spec.parameters.items())],
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(spec.tags.items())],
        "Capabilities": list(spec.capabilities),
    }


def _delete(cfn: CloudFormationClient, stack_id: str, waiting: Waiting) -> None:
    cfn.delete_stack(StackName=stack_id)
    final = _settle(cfn, stack_id, waiting)
    if final["StackStatus"] != "DELETE_COMPLETE":
        raise PhasedoitError(_failure(cfn, final))


def _settle(cfn: CloudFormationClient, stack_id: str, waiting: Waiting) -> StackTypeDef:
    """Poll by stack id (a deleted stack stays visible by id) until no operation is in progress."""
    deadline = time.monotonic() + waiting.timeout
    for delay in waiting.delays():
        stack = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            return stack
        time.sleep(delay)
    raise AssertionError("unreachable: delays() never ends")


def _failure(cfn: CloudFormationClient, stack: StackTypeDef) -> str:
    """The first failed resource of the last operation and its reason, else the stack's own reason."""
    status = stack["StackStatus"]
    for event in _last_operation_events(cfn, stack["StackId"]):
        reason = event.get("ResourceStatusReason", "")
        if event["ResourceStatus"].endswith("_FAILED") and event["LogicalResourceId"] != stack["StackName"]:
            return f"{event['LogicalResourceId']} ({event['ResourceType']}): {reason} [{status}]"
    return f"{stack.get('StackStatusReason') or 'failed'} [{status}]"


def _last_operation_events(cfn: CloudFormationClient, stack_id: str) -> list[StackEventTypeDef]:
    """Events of the stack's last operation, oldest first."""
    events: list[StackEventTypeDef] = []
    for page in cfn.get_paginator("describe_stack_events").paginate(StackName=stack_id):
        for event in page["StackEvents"]:
            events.append(event)
            if (
                event["LogicalResourceId"] == event["StackName"]
                and event.get("ResourceStatusReason") == "User Initiated"
            ):
                return events[::-1]
    return events[::-1]


def _outputs(stack: StackTypeDef) -> tuple[dict[str, str], dict[str, str]]:
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    exports = {o["ExportName"]: o["OutputValue"] for o in stack.get("Outputs", []) if o.get("ExportName")}
    return outputs, exports


def _tags(stack: StackTypeDef) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in stack.get("Tags", [])}
