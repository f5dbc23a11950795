"""The one boto3 user: deploy and remove stacks, wait for them, and say why they failed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers

from phasedoit.errors import PhasedoitError
from phasedoit.stack import DEPLOYED, FINGERPRINT_TAG, RemoteStack, StackSpec, Target, value_hash

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_cloudformation.type_defs import StackEventTypeDef, StackTypeDef

Say = Callable[[str], None]
# A failed first create leaves a stack that cannot be updated, only deleted and created again.
RECREATE = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "REVIEW_IN_PROGRESS"}
NO_UPDATES = "No updates are to be performed."
NO_REGION = "no AWS region: set AWS_REGION, or a region for the stage in phases.yml"
# moto, unlike CloudFormation, leaves these behind when it refuses a CreateStack
STUCK_AFTER_REFUSED_CREATE = {"CREATE_IN_PROGRESS", "CREATE_PENDING"}


@dataclass(frozen=True)
class Deployed:
    action: str  # created, updated or unchanged
    outputs: dict[str, str]
    exports: dict[str, str]


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


def client(target: Target, attempts: int = 10) -> CloudFormationClient:
    # standard mode retries throttling and transient errors with jittered backoff
    retries: Any = {"mode": "standard", "max_attempts": attempts}
    config = botocore.config.Config(retries=retries, user_agent_extra="phasedoit")
    # the embedded endpoint takes any credentials, and its user may have none
    key = "local" if target.local is not None else None
    with _translated():
        session = boto3.session.Session(
            aws_access_key_id=key, aws_secret_access_key=key, region_name=target.region
        )
        if target.account and target.local is None:
            _check_account(session, target, config)
        return session.client("cloudformation", endpoint_url=target.endpoint, config=config)


def _check_account(session: boto3.session.Session, target: Target, config: botocore.config.Config) -> None:
    """A stage bound to an account never deploys with another account's credentials (prod with dev's)."""
    if session.client("sts", config=config).get_caller_identity()["Account"] != target.account:
        # no account id in the message: it ends up in CI logs
        where = f"stages.{target.stage}.account"
        raise PhasedoitError(f"the AWS credentials in use are for another account than phases.yml's {where}")


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
            action = "updated" if _update(cfn, spec, stack) else "unchanged"
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
    try:
        return cfn.create_stack(StackName=spec.name, **_arguments(spec))["StackId"]
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] != "AlreadyExistsException":
            _remove_leftover(cfn, spec.name)
        raise


def _remove_leftover(cfn: CloudFormationClient, name: str) -> None:
    # CloudFormation creates nothing when it refuses a CreateStack; moto leaves a stack that never
    # settles, blocks the next create, and may even fail to describe (HTTP 500 on its outputs).
    # Looking costs real CloudFormation one describe call.
    try:
        stack = describe(cfn, name)
    except botocore.parsers.ResponseParserError:
        cfn.delete_stack(StackName=name)
        return
    if stack and stack["StackStatus"] in STUCK_AFTER_REFUSED_CREATE:
        cfn.delete_stack(StackName=stack["StackId"])


def _update(cfn: CloudFormationClient, spec: StackSpec, current: StackTypeDef) -> bool:
    try:
        cfn.update_stack(StackName=spec.name, **_arguments(spec))
    except botocore.exceptions.ClientError as e:
        if _message(e) != NO_UPDATES:
            raise
        if _tags(current) == spec.tags:
            return False
        # Only moto answers "no updates" to new tags (when parameters are passed, it compares template and
        # parameters alone); a body that differs in whitespace alone makes it apply them.
        cfn.update_stack(StackName=spec.name, **{**_arguments(spec), "TemplateBody": spec.body + "\n"})
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


def _message(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", error))


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Turns the AWS errors a user can act on into one-line PhasedoitErrors."""
    try:
        yield
    except botocore.exceptions.ClientError as e:
        raise PhasedoitError(_message(e)) from None
    except botocore.exceptions.EndpointConnectionError as e:
        raise PhasedoitError(f"cannot reach CloudFormation at {e.kwargs.get('endpoint_url')}") from None
    except botocore.parsers.ResponseParserError:
        raise PhasedoitError(
            "CloudFormation answered with an error page, not an API response (HTTP 500)"
        ) from None
    except botocore.exceptions.NoCredentialsError:
        raise PhasedoitError("no AWS credentials: set AWS_PROFILE, or run `aws configure`") from None
    except botocore.exceptions.NoRegionError:
        raise PhasedoitError(NO_REGION) from None
