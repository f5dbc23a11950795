"""The one boto3 user: deploy and remove stacks, wait for them, and say why they failed."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from phasedoit import aws
from phasedoit.aws import message as _message
from phasedoit.aws import translated as _translated
from phasedoit.errors import PhasedoitError
from phasedoit.stack import (
    APP_TAG,
    DEPLOYED,
    EXPORTS_TAG,
    FINGERPRINT_TAG,
    SERVICE_TAG,
    STAGE_TAG,
    Deployed,
    RemoteStack,
    StackSpec,
    Target,
    digest,
    value_hash,
)

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_cloudformation.type_defs import StackEventTypeDef, StackTypeDef

Say = Callable[[str], None]
# A failed first create leaves a stack that cannot be updated, only deleted and created again.
RECREATE = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "REVIEW_IN_PROGRESS"}
NO_UPDATES = "No updates are to be performed."
OWNER_TAGS = (APP_TAG, STAGE_TAG, SERVICE_TAG)


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
    cfn: CloudFormationClient, spec: StackSpec, say: Say, waiting: Waiting = Waiting(), adopt: bool = False
) -> Deployed:
    """Create or update the stack as `spec` says; its tags say who owns it (`check_owner`)."""
    with _translated():
        stack = describe(cfn, spec.name)
        if stack:
            check_owner(stack, spec.tags, adopt)
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


def remove_stack(
    cfn: CloudFormationClient,
    name: str,
    owner: Mapping[str, str],
    say: Say,
    waiting: Waiting = Waiting(),
    *,
    adopt: bool = False,
    alone: bool = False,
) -> bool:
    """Delete the stack, by its id once its tags say it is `owner`'s, and wait until it is gone.

    False if there was none. `alone`: refused while any stack imports one of its exports (the whole
    stage's removal checks that for all of its stacks at once, and removes importers first).
    """
    with _translated():
        stack = describe(cfn, name)
        if stack is None:
            return False
        check_owner(stack, owner, adopt)
        if stack.get("EnableTerminationProtection"):
            raise PhasedoitError(
                f"refused: {name} has termination protection: turn it off first (aws cloudformation"
                f" update-termination-protection --no-enable-termination-protection --stack-name {name})"
            )
        if alone:
            imported = {e: i for e, i in importers(cfn, sorted(_outputs(stack)[1])).items() if i}
            if imported:
                users = sorted({stack for names in imported.values() for stack in names})
                raise PhasedoitError(
                    f"refused: {', '.join(sorted(imported))} of {name} is imported by {', '.join(users)}:"
                    " remove those first; nothing was removed"
                )
        say(f"deleting {name}")
        _delete(cfn, stack["StackId"], waiting)
        return True


def check_owner(stack: StackTypeDef, owner: Mapping[str, str], adopt: bool) -> None:
    """phasedoit updates or deletes only stacks whose tags name the app, stage and service it acts for.

    A stack with none of its tags was made by someone else: it is taken over only when asked (`adopt`).
    A stack tagged by an older phasedoit (app and stage, no service) is its own.
    """
    tags = _tags(stack)
    found: dict[str, str | None] = {key: tags.get(key) for key in OWNER_TAGS}
    name = stack["StackName"]
    if not any(found.values()):
        if adopt:
            return
        ours = owner.get(SERVICE_TAG, "")
        raise PhasedoitError(
            f"{name} exists and was not made by phasedoit: run with adopt={ours} to take it over"
        )
    if found[SERVICE_TAG] is None:  # tagged by a phasedoit that did not tag services yet
        found[SERVICE_TAG] = owner.get(SERVICE_TAG, "")
    if found == {key: owner.get(key) for key in OWNER_TAGS}:
        return
    app, stage, service = (found[key] for key in OWNER_TAGS)
    if found[APP_TAG] != owner.get(APP_TAG):
        raise PhasedoitError(f"{name} belongs to app {app}, not to app {owner.get(APP_TAG)}")
    if found[STAGE_TAG] != owner.get(STAGE_TAG):
        raise PhasedoitError(
            f"{name} belongs to stage {stage} of app {app}, not to stage {owner.get(STAGE_TAG)}"
        )
    raise PhasedoitError(
        f"{name} belongs to service {service} of app {app}, not to service {owner.get(SERVICE_TAG)}"
    )


def exports_of(cfn: CloudFormationClient, stacks: list[str]) -> dict[str, str]:
    """The exports of those of `stacks` that exist: export name -> stack name."""
    wanted = set(stacks)
    return {
        export: name for name, stack in list_stacks(cfn).items() if name in wanted for export in stack.exports
    }


def importers(cfn: CloudFormationClient, exports: list[str]) -> dict[str, list[str]]:
    """The stacks importing each export (ListImports), by name."""
    found: dict[str, list[str]] = {}
    with _translated():
        for export in exports:
            try:
                pages = cfn.get_paginator("list_imports").paginate(ExportName=export)
                found[export] = [name for page in pages for name in page["Imports"]]
            except botocore.exceptions.ClientError as e:
                if "is not imported by any stack" not in _message(e):
                    raise
                found[export] = []
    return found


def list_stacks(cfn: CloudFormationClient) -> dict[str, RemoteStack]:
    """Every stack of the target, from one paginated DescribeStacks listing."""
    with _translated():
        return {
            stack["StackName"]: RemoteStack(
                stack["StackStatus"],
                _tags(stack).get(FINGERPRINT_TAG),
                {name: value_hash(value) for name, value in _outputs(stack)[1].items()},
                _tags(stack).get(EXPORTS_TAG),
            )
            for page in cfn.get_paginator("describe_stacks").paginate()
            for stack in page["Stacks"]
        }


def export_definitions(cfn: CloudFormationClient, name: str) -> dict[str, str]:
    """The exports of the stack as deployed: export name -> digest of its Output's Value expression.

    DescribeStacks names each output's export; GetTemplate gives the template it was deployed with.
    """
    with _translated():
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        body = cfn.get_template(StackName=stack["StackId"], TemplateStage="Original")["TemplateBody"]
    try:
        template = body if isinstance(body, dict) else json.loads(body)  # phasedoit sends JSON
    except ValueError:
        return {}  # another tool's YAML: not compared; CloudFormation itself will say what it refuses
    outputs = template.get("Outputs") if isinstance(template, dict) else None
    values = outputs if isinstance(outputs, dict) else {}
    return {
        o["ExportName"]: digest(values.get(o["OutputKey"], {}).get("Value"))
        for o in stack.get("Outputs", [])
        if o.get("ExportName")
    }


def export_names(cfn: CloudFormationClient) -> set[str]:
    with _translated():
        return {e["Name"] for page in cfn.get_paginator("list_exports").paginate() for e in page["Exports"]}


def _create(cfn: CloudFormationClient, spec: StackSpec) -> str:
    return cfn.create_stack(StackName=spec.name, ClientRequestToken=_token(), **_arguments(spec))["StackId"]


def _update(cfn: CloudFormationClient, spec: StackSpec) -> bool:
    """False when CloudFormation finds nothing to update (the same template, parameters and tags)."""
    try:
        cfn.update_stack(StackName=spec.name, ClientRequestToken=_token(), **_arguments(spec))
    except botocore.exceptions.ClientError as e:
        if _message(e) != NO_UPDATES:
            raise
        return False
    return True


def _token() -> str:
    """One per operation: botocore's retries of a call resend it, so CloudFormation does the work once."""
    return f"phasedoit-{uuid.uuid4().hex}"


def _arguments(spec: StackSpec) -> dict[str, Any]:
    return {
        "TemplateBody": spec.body,
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(spec.parameters.items())],
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(spec.tags.items())],
        "Capabilities": list(spec.capabilities),
    }


def _delete(cfn: CloudFormationClient, stack_id: str, waiting: Waiting) -> None:
    cfn.delete_stack(StackName=stack_id, ClientRequestToken=_token())
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
