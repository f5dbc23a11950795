"""The one boto3 user: deploy and remove stacks, wait for them, and say why they failed."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from phasedoit import aws, states
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
    StackEvent,
    StackSpec,
    Target,
    digest,
    value_hash,
)

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_cloudformation.type_defs import StackEventTypeDef, StackTypeDef

Say = Callable[[str], None]
OnEvent = Callable[[StackEvent], None]
NO_UPDATES = "No updates are to be performed."
# How long phasedoit waits for a stack's operation (CloudFormation's own default is no limit)
STACK_TIMEOUT_ENV, DEFAULT_STACK_TIMEOUT = "PHASEDOIT_STACK_TIMEOUT", 3 * 3600.0
NOT_CANCELLABLE = "CancelUpdateStack cannot be called from current stack status"
OWNER_TAGS = (APP_TAG, STAGE_TAG, SERVICE_TAG)
# How many stacks are described by name at once when that is cheaper than listing the region's stacks.
POOL = 8


@dataclass(frozen=True)
class Waiting:
    """Polling: an immediate first look (a local endpoint is done at once), then again after `share` of the
    time waited so far, at least `first`, at most `most`: a stack done in between is seen at most a fifth
    of its time (or `most`) late, and a phase boundary waits that much, not half of it as when each delay
    was half as long again as the one before."""

    first: float = 0.5
    most: float = 10.0
    share: float = 0.2
    timeout: float = 3 * 3600.0

    def delays(self) -> Iterator[float]:
        waited = 0.0
        while True:
            delay = min(max(self.first, waited * self.share), self.most)
            yield delay
            waited += delay


def stack_waiting() -> Waiting:
    return Waiting(timeout=aws.positive_number(STACK_TIMEOUT_ENV, DEFAULT_STACK_TIMEOUT))


def client(target: Target) -> CloudFormationClient:
    stack_waiting()  # a wrong PHASEDOIT_STACK_TIMEOUT stops the run at its first call, not at a deploy
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
    cfn: CloudFormationClient,
    spec: StackSpec,
    say: Say,
    waiting: Waiting | None = None,
    adopt: bool = False,
    *,
    on_event: OnEvent | None = None,
) -> Deployed:
    """Create or update the stack as `spec` says; its tags say who owns it (`check_owner`).

    `on_event` gets each new stack event of the operations it waits for, as polling sees them (a no-op
    update starts none: no events are read).
    """
    waiting = waiting or stack_waiting()
    with _translated():
        stack = _ready(cfn, spec, say, waiting, adopt, on_event=on_event)
        if stack is None:
            say(f"creating {spec.name}")
            stack_id = _create(cfn, spec)
            final = _finish(cfn, stack_id, waiting, DEPLOYED, _watch(cfn, stack_id, on_event))
            return Deployed("created", *_outputs(final))
        say(f"updating {spec.name}")
        if not _update(cfn, spec):
            return Deployed("unchanged", *_outputs(stack))  # "No updates" from any stable status
        final = _finish(cfn, stack["StackId"], waiting, DEPLOYED, _watch(cfn, stack["StackId"], on_event))
        return Deployed("updated", *_outputs(final))


def _ready(
    cfn: CloudFormationClient,
    spec: StackSpec,
    say: Say,
    waiting: Waiting,
    adopt: bool,
    *,
    on_event: OnEvent | None,
) -> StackTypeDef | None:
    """The stack, in a status an update can start from; None when there is none to update: create it."""
    stack = describe(cfn, spec.name)
    if stack is None:
        return None
    if states.action(stack["StackStatus"]) == states.REVIEW:
        if not _ours(stack, spec.tags):  # another actor's change set: never ours to delete
            raise PhasedoitError(states.review(spec.name))
    else:
        check_owner(stack, spec.tags, adopt)
    if states.action(stack["StackStatus"]) == states.WAIT:
        stack = _wait_for_others(cfn, stack, say, waiting, on_event)
        if stack["StackStatus"] == "DELETE_COMPLETE":
            return None  # deleted by someone else while phasedoit waited
    status = stack["StackStatus"]
    kind = states.action(status)
    if kind in (states.RECREATE, states.REVIEW):
        say(f"deleting {spec.name} ({status}) to create it again")
        _delete(cfn, stack, waiting, on_event)
        return None
    if kind != states.UPDATE:
        raise PhasedoitError(_stuck(cfn, stack))
    return stack


def _wait_for_others(
    cfn: CloudFormationClient, stack: StackTypeDef, say: Say, waiting: Waiting, on_event: OnEvent | None
) -> StackTypeDef:
    name, status = stack["StackName"], stack["StackStatus"]
    say(f"waiting for {name}: another operation is in progress ({status})")
    settled = _settle(cfn, stack["StackId"], waiting, _watch(cfn, stack["StackId"], on_event))
    if states.in_progress(settled["StackStatus"]):
        raise PhasedoitError(
            f"{name} is still {settled['StackStatus']} after {waiting.timeout:g} s ({STACK_TIMEOUT_ENV}):"
            " another operation is in progress; nothing was done"
        )
    return settled


def remove_stack(
    cfn: CloudFormationClient,
    name: str,
    owner: Mapping[str, str],
    say: Say,
    waiting: Waiting | None = None,
    *,
    adopt: bool = False,
    alone: bool = False,
    on_event: OnEvent | None = None,
) -> bool:
    """Delete the stack, by its id once its tags say it is `owner`'s, and wait until it is gone.

    False if there was none. `alone`: refused while any stack imports one of its exports (the whole
    stage's removal checks that for all of its stacks at once, and removes importers first).
    """
    waiting = waiting or stack_waiting()
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
        if states.action(stack["StackStatus"]) == states.WAIT:
            stack = _wait_for_others(cfn, stack, say, waiting, on_event)
            if stack["StackStatus"] == "DELETE_COMPLETE":
                return False  # someone else deleted it meanwhile
        say(f"deleting {name}")
        _delete(cfn, stack, waiting, on_event)
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


def _ours(stack: StackTypeDef, owner: Mapping[str, str]) -> bool:
    try:
        check_owner(stack, owner, adopt=False)
    except PhasedoitError:
        return False
    return True


def exports_of(cfn: CloudFormationClient, stacks: list[str]) -> dict[str, str]:
    """The exports of those of `stacks` that exist: export name -> stack name."""
    return {export: name for name, stack in read_stacks(cfn, stacks).items() for export in stack.exports}


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


def read_stacks(cfn: CloudFormationClient, names: Collection[str]) -> dict[str, RemoteStack]:
    """The stacks named `names` that exist, from the region's listing or by name, whichever is cheaper.

    The listing takes a call per 50 stacks of the region, one after the other; describing stacks by name
    takes a call each, POOL at a time. The listing goes on while, at the rate its pages have been showing
    the stacks wanted, the rest would take no more pages than rounds of calls by name; otherwise the rest
    are described by name. An app alone in its region costs its pages; beside thousands of other stacks,
    a page and a round per POOL of its stacks.
    """
    wanted, found = set(names), dict[str, RemoteStack]()
    with _translated():
        page = cfn.describe_stacks()
        for pages in itertools.count(1):
            found |= {s["StackName"]: _remote(s) for s in page["Stacks"] if s["StackName"] in wanted}
            missing = sorted(wanted - found.keys())
            if "NextToken" not in page or not missing:
                return found
            rounds = -(-len(missing) // POOL)
            if len(missing) * pages > len(found) * rounds:  # pages still to read, at the rate so far
                break
            page = cfn.describe_stacks(NextToken=page["NextToken"])
        with ThreadPoolExecutor(min(POOL, len(missing))) as pool:
            described = list(pool.map(lambda name: describe(cfn, name), missing))
        return found | {stack["StackName"]: _remote(stack) for stack in described if stack is not None}


def _remote(stack: StackTypeDef) -> RemoteStack:
    exports = {name: value_hash(value) for name, value in _outputs(stack)[1].items()}
    tags = _tags(stack)
    return RemoteStack(stack["StackStatus"], tags.get(FINGERPRINT_TAG), exports, tags.get(EXPORTS_TAG))


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
    template = {"TemplateURL": spec.template_url} if spec.template_url else {"TemplateBody": spec.body}
    return {
        **template,
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(spec.parameters.items())],
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(spec.tags.items())],
        "Capabilities": list(spec.capabilities),
    }


def _delete(
    cfn: CloudFormationClient, stack: StackTypeDef, waiting: Waiting, on_event: OnEvent | None = None
) -> None:
    cfn.delete_stack(StackName=stack["StackId"], ClientRequestToken=_token())
    watch = _watch(cfn, stack["StackId"], on_event)
    _finish(cfn, stack["StackId"], waiting, frozenset({"DELETE_COMPLETE"}), watch)


def _finish(
    cfn: CloudFormationClient,
    stack_id: str,
    waiting: Waiting,
    done: frozenset[str],
    watch: Events | None = None,
) -> StackTypeDef:
    """Wait for phasedoit's own operation on the stack: the stack when it ends in one of `done`."""
    final = _settle(cfn, stack_id, waiting, watch)
    if final["StackStatus"] == "UPDATE_IN_PROGRESS":
        final = _cancel(cfn, final, waiting)
    status = final["StackStatus"]
    if status in done:
        return final
    if states.in_progress(status):
        raise PhasedoitError(
            f"{final['StackName']} is still {status} after {waiting.timeout:g} s ({STACK_TIMEOUT_ENV}):"
            " left to CloudFormation; the next run waits for it"
        )
    raise PhasedoitError(_stuck(cfn, final))


def _cancel(cfn: CloudFormationClient, stack: StackTypeDef, waiting: Waiting) -> StackTypeDef:
    """An update that outlasts the wait is cancelled: CloudFormation rolls it back, as Sceptre does it."""
    name = stack["StackName"]
    try:
        cfn.cancel_update_stack(StackName=stack["StackId"], ClientRequestToken=_token())
    except botocore.exceptions.ClientError as e:
        if _message(e) != NOT_CANCELLABLE:
            raise
        return cfn.describe_stacks(StackName=stack["StackId"])["Stacks"][0]  # it ended meanwhile
    raise PhasedoitError(
        f"{name} was still UPDATE_IN_PROGRESS after {waiting.timeout:g} s ({STACK_TIMEOUT_ENV}):"
        " the update is cancelled, CloudFormation rolls it back"
    )


def _settle(
    cfn: CloudFormationClient, stack_id: str, waiting: Waiting, watch: Events | None = None
) -> StackTypeDef:
    """Poll by stack id (a deleted stack stays visible by id) until no operation is in progress.

    Past the deadline, the stack is returned as it is, still in progress.
    """
    deadline = time.monotonic() + waiting.timeout
    for delay in waiting.delays():
        stack = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
        if watch:
            watch.poll()  # in the same loop: one page of events per poll
        left = deadline - time.monotonic()
        if not states.in_progress(stack["StackStatus"]) or left <= 0:
            return stack
        time.sleep(min(delay, left))
    raise AssertionError("unreachable: delays() never ends")


class Events:
    """The new events of one stack operation: one DescribeStackEvents page (newest first) per poll.

    The first poll keeps the events from the operation's `User Initiated` start on; later ones, the events
    not seen yet. More than a page (100 events) between two polls are not all seen: polls are seconds
    apart, and resources take longer than that.
    """

    def __init__(self, cfn: CloudFormationClient, stack_id: str, on_event: OnEvent) -> None:
        self.cfn, self.stack_id, self.on_event = cfn, stack_id, on_event
        self.seen: set[str] = set()

    def poll(self) -> None:
        new: list[StackEventTypeDef] = []
        for event in self.cfn.describe_stack_events(StackName=self.stack_id)["StackEvents"]:
            if event["EventId"] in self.seen:
                break
            new.append(event)
            if not self.seen and _starts_operation(event):
                break
        for event in reversed(new):
            self.seen.add(event["EventId"])
            self.on_event(
                StackEvent(
                    event["LogicalResourceId"],
                    event.get("ResourceType", ""),
                    event.get("ResourceStatus", ""),
                    event.get("ResourceStatusReason", ""),
                    event["Timestamp"].isoformat(),
                )
            )


def _watch(cfn: CloudFormationClient, stack_id: str, on_event: OnEvent | None) -> Events | None:
    return Events(cfn, stack_id, on_event) if on_event else None


def _starts_operation(event: StackEventTypeDef) -> bool:
    return (
        event["LogicalResourceId"] == event["StackName"]
        and event.get("ResourceStatusReason") == "User Initiated"
    )


def _stuck(cfn: CloudFormationClient, stack: StackTypeDef) -> str:
    """The one line that says why the stack is not deployed, and what to do."""
    name, status = stack["StackName"], stack["StackStatus"]
    kind = states.action(status)
    if kind == states.UNKNOWN:
        return states.unknown(name, status)
    events = _last_operation_events(cfn, stack["StackId"])
    if kind == states.STUCK_ROLLBACK:
        return states.stuck_rollback(name, status, events)
    if kind == states.DELETE_FAILED:
        return states.delete_failed(name, events)
    return states.failure(status, events, stack.get("StackStatusReason"))


def _last_operation_events(cfn: CloudFormationClient, stack_id: str) -> list[StackEventTypeDef]:
    """Events of the stack's last operation, oldest first."""
    events: list[StackEventTypeDef] = []
    for page in cfn.get_paginator("describe_stack_events").paginate(StackName=stack_id):
        for event in page["StackEvents"]:
            events.append(event)
            if _starts_operation(event):
                return events[::-1]
    return events[::-1]


def _outputs(stack: StackTypeDef) -> tuple[dict[str, str], dict[str, str]]:
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    exports = {o["ExportName"]: o["OutputValue"] for o in stack.get("Outputs", []) if o.get("ExportName")}
    return outputs, exports


def _tags(stack: StackTypeDef) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in stack.get("Tags", [])}
