"""CloudFormation's behaviour where moto's differs, kept by the fault layer over moto's real server.

moto holds what is deployed (templates, parameters, tags, resources, outputs). This module holds what moto
has no notion of: a status other than moto's for a while (an operation that takes time, fails and rolls
back, or is another actor's) as an `Overlay` per stack id, and the stack events CloudFormation would have
recorded, per resource, newest first. It also refuses what CloudFormation refuses and moto does not.

Real texts and transitions, from CloudFormation users' reports:
- deleting an exporter whose export is imported: the stack goes back to its old status, with the reason
  "Export X cannot be deleted as it is in use by A and B" (aws/aws-cdk#604, boto/boto3#4192);
- an update that removes such an export rolls back (UPDATE_ROLLBACK_IN_PROGRESS "Export X cannot be
  deleted as it is in use by A", aws/aws-cdk#8671), one that changes its value too ("Cannot update export X
  as it is in use by A", the text of the recent reports; older ones read "Export X cannot be updated …");
- a create that imports a missing export is accepted and rolls back: ROLLBACK_IN_PROGRESS "No export
  named X found. Rollback requested by user.", then ROLLBACK_COMPLETE (no StackStatusReason);
- a resource failure: "<Type> … CREATE_FAILED <reason>", then "The following resource(s) failed to
  create: [Logical]. Rollback requested by user."; updates and deletes alike ("failed to update",
  "failed to delete");
- "Stack:<arn> is in <STATUS> state and can not be updated.", "Stack [<name>] cannot be deleted while in
  status <STATUS>", "Export '<name>' is not imported by any stack." (ListImports).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from tests.faults_wire import (
    Answer,
    Event,
    Stack,
    element,
    encode,
    error,
    events_of,
    flattened,
    forward,
    imports,
    listed,
    load_template,
    pairs,
    query,
    records,
    resources,
    response,
    same_template,
    serialize,
    set_child,
    stack_name,
    stacks_of,
    text,
)

WRITES = ("CreateStack", "UpdateStack", "DeleteStack")
UPDATABLE = frozenset(
    {
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
        "UPDATE_ROLLBACK_COMPLETE",
        "IMPORT_COMPLETE",
        "IMPORT_ROLLBACK_COMPLETE",
    }
)
UNDELETABLE = frozenset(
    {
        "UPDATE_IN_PROGRESS",
        "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
        "IMPORT_IN_PROGRESS",
        "IMPORT_ROLLBACK_IN_PROGRESS",
        "ROLLBACK_IN_PROGRESS",
    }
)
# a stack whose resources are gone, or were never there: it imports nothing
NOTHING_DEPLOYED = frozenset({"ROLLBACK_COMPLETE", "REVIEW_IN_PROGRESS", "DELETE_COMPLETE"})
# what moto leaves behind when it refuses a CreateStack past its validation
STUCK = frozenset({"CREATE_IN_PROGRESS", "CREATE_PENDING"})
NO_UPDATES = "No updates are to be performed."
EMPTY_TEMPLATE = '{"Resources": {}}'
STACK_TYPE = "AWS::CloudFormation::Stack"


class LayerError(Exception):
    """The layer could not do what it was asked (a layer bug or a misused script): the test fails."""


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    headers: Mapping[str, str]
    form: Mapping[str, str]

    @property
    def action(self) -> str:
        return self.form.get("Action", "")

    @property
    def stack(self) -> str:
        return self.form.get("StackName", "")

    @property
    def token(self) -> str | None:
        return self.form.get("ClientRequestToken")


@dataclass(frozen=True)
class Phase:
    at: float
    status: str | None  # None: moto's own status is the truth from then on
    reason: str | None


@dataclass(frozen=True)
class Deployed:
    """What an update replaces: a rollback puts it back."""

    body: str
    parameters: dict[str, str]
    tags: dict[str, str]
    capabilities: tuple[str, ...]


@dataclass
class Overlay:
    phases: list[Phase]
    template: str | None = None  # what GetTemplate shows, when moto holds a stand-in
    then: Callable[[], None] | None = None  # applied to moto when the last phase begins
    previous: Deployed | None = None  # what an update in progress replaced
    # another actor's operation: its clock starts at the first request that names the stack (`arm`), so
    # that a doit run, however long it takes to start, still finds it under way
    armed: bool = True
    name: str = ""
    event_ids: frozenset[str] = frozenset()

    def phase(self, now: float) -> Phase:
        current = self.phases[0]
        if not self.armed:
            return current
        for phase in self.phases:
            if phase.at <= now:
                current = phase
        return current

    @property
    def end(self) -> float:
        return self.phases[-1].at


@dataclass(frozen=True)
class Change:
    """One resource event of an operation."""

    logical: str
    type: str
    status: str
    reason: str | None = None
    physical: str = ""


@dataclass(frozen=True)
class Step:
    """One status of the stack during an operation, and the resource events while it lasts."""

    status: str
    reason: str | None = None
    changes: tuple[Change, ...] = ()


@dataclass
class Failure:
    stack: str
    action: str
    resource: str
    reason: str
    rollback_resource: str | None = None
    rollback_reason: str | None = None  # the rollback fails too: UPDATE_ROLLBACK_FAILED


@dataclass(frozen=True)
class Duration:
    seconds: float
    actions: tuple[str, ...]
    stack: str | None


@dataclass
class CloudFormation:
    upstream: str
    overlays: dict[str, Overlay] = field(default_factory=dict)
    events: dict[str, list[Event]] = field(default_factory=dict)
    hidden: set[str] = field(default_factory=set)  # moto's leftovers of refused creates, deleted
    failures: list[Failure] = field(default_factory=list)
    durations: list[Duration] = field(default_factory=list)

    # ---- requests ---------------------------------------------------------------------------------

    def handle(self, request: Request) -> Answer:
        self.tick(time.time())
        if request.stack:
            self._arm(request.stack, time.time())
        route: dict[str, Callable[[Request], Answer]] = {
            "CreateStack": self._create,
            "UpdateStack": self._update,
            "DeleteStack": self._delete,
            "CancelUpdateStack": self._cancel_update,
            "ContinueUpdateRollback": self._continue_rollback,
            "DescribeStacks": self._describe_stacks,
            "ListStacks": self._list_stacks,
            "DescribeStackEvents": self._describe_events,
            "GetTemplate": self._get_template,
            "ListImports": self._list_imports,
        }
        handler = route.get(request.action)
        return handler(request) if handler else self._forward(request)

    def tick(self, now: float) -> None:
        """Apply to moto what scripted operations do at their end (a deferred delete)."""
        for overlay in self.overlays.values():
            if overlay.armed and overlay.then is not None and now >= overlay.end:
                then, overlay.then = overlay.then, None
                then()

    def _arm(self, name_or_id: str, now: float) -> None:
        for stack_id, overlay in self.overlays.items():
            if not overlay.armed and name_or_id in (stack_id, overlay.name):
                delta = now - overlay.phases[0].at
                overlay.phases = [replace(phase, at=phase.at + delta) for phase in overlay.phases]
                ids = overlay.event_ids
                self.events[stack_id] = [replace(e, at=e.at + delta) if e.id in ids else e for e in self.events[stack_id]]  # fmt: skip
                overlay.armed = True

    def busy_until(self) -> float:
        return max((o.end for o in self.overlays.values()), default=0.0)

    def _create(self, request: Request) -> Answer:
        failure = self._failure(request.stack, "CreateStack")
        if failure is not None:
            return self._rolled_back_create(request, failure, "")
        answer = self._forward(request)
        if answer.status == 200:
            stack = self._stack(_stack_id(answer))
            self.events[stack.id] = []
            changes = self._resources(request.form.get("TemplateBody", ""), stack.id)
            steps = [
                Step(
                    "CREATE_IN_PROGRESS",
                    "User Initiated",
                    _each(changes, "CREATE_IN_PROGRESS", "CREATE_COMPLETE"),
                ),
                Step("CREATE_COMPLETE"),
            ]
            self._operate(stack, request, steps, moto_settles=True)
            return answer
        leftover = self._leftover(request.stack)
        if leftover is None:
            return answer  # a refusal CloudFormation makes too (AlreadyExists, a template format error)
        # moto failed past its validation, where CloudFormation would have started and rolled back
        self._ask("DeleteStack", StackName=leftover)
        self.hidden.add(leftover)
        _, message = answer.error() or ("", "")
        return self._rolled_back_create(request, None, f"{message} Rollback requested by user.")

    def _rolled_back_create(self, request: Request, failure: Failure | None, reason: str) -> Answer:
        """The stack CloudFormation keeps after a failed create: moto holds it with no resources."""
        answer = self._forward(request, TemplateBody=EMPTY_TEMPLATE)
        if answer.status != 200:
            return answer
        if failure is not None:
            self.failures.remove(failure)
        stack = self._stack(_stack_id(answer))
        self.events[stack.id] = []
        body = request.form.get("TemplateBody", "")
        if failure is None:
            steps = [Step("CREATE_IN_PROGRESS", "User Initiated"), Step("ROLLBACK_IN_PROGRESS", reason)]
        else:
            steps = _failed_create(self._resources(body, None), failure)
        steps.append(Step("ROLLBACK_COMPLETE"))
        self._operate(stack, request, steps, template=body)
        return answer

    def _update(self, request: Request) -> Answer:
        stack = self._find(request.stack)
        if stack is None:
            return self._forward(request)
        status = self._status(stack)
        if status not in UPDATABLE:
            return error("ValidationError", f"Stack:{stack.id} is in {status} state and can not be updated.")
        self._seed(stack)
        previous = Deployed(self._template(stack.id), stack.parameters, stack.tags, stack.capabilities)
        if _unchanged(request.form, previous):
            return error("ValidationError", NO_UPDATES)
        failure = self._failure(stack.name, "UpdateStack")
        if failure is None:
            return self._apply_update(request, stack, previous)
        self.failures.remove(failure)
        changes = self._changes(previous.body, request, stack)
        self._operate(stack, request, _failed_update(changes, failure))
        return response("UpdateStack", element("Result", StackId=stack.id))

    def _apply_update(self, request: Request, stack: Stack, previous: Deployed) -> Answer:
        in_use = self._in_use(stack)
        answer = self._forward(request)
        if answer.error() == ("ValidationError", NO_UPDATES):
            # moto compares template and parameters only: a body that differs in a newline applies tags
            answer = self._forward(request, TemplateBody=request.form.get("TemplateBody", "") + "\n")
        if answer.status != 200:
            return answer
        changes = self._changes(previous.body, request, stack)
        refusal = _export_refusal(in_use, stack.exports, self._stack(stack.id).exports)
        if refusal is not None:
            self._restore(stack.id, previous)
            self._operate(stack, request, _refused_update(changes, refusal))
            return answer
        ahead = tuple(c for c in changes if not c.status.startswith("DELETE"))
        cleanup = tuple(c for c in changes if c.status.startswith("DELETE"))
        steps = [
            Step("UPDATE_IN_PROGRESS", "User Initiated", ahead),
            Step("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", None, cleanup),
            Step("UPDATE_COMPLETE"),
        ]
        self._operate(stack, request, steps, moto_settles=True, previous=previous)
        return answer

    def _delete(self, request: Request) -> Answer:
        stack = self._find(request.stack)
        if stack is None:
            return self._forward(request)  # deleting what is not there is fine, as on CloudFormation
        status = self._status(stack)
        if status in UNDELETABLE:
            return error(
                "ValidationError", f"Stack [{stack.name}] cannot be deleted while in status {status}"
            )
        if status == "DELETE_IN_PROGRESS":
            return response("DeleteStack")
        self._seed(stack)
        in_use = self._in_use(stack)
        if in_use:
            name = min(in_use)
            reason = f"Export {name} cannot be deleted as it is in use by {_joined(in_use[name])}"
            self._operate(
                stack, request, [Step("DELETE_IN_PROGRESS", "User Initiated"), Step(status, reason)]
            )
            return response("DeleteStack")
        changes = self._resources(self._template(stack.id), stack.id)
        retained = set(listed(request.form, "RetainResources"))
        failure = self._failure(stack.name, "DeleteStack")
        if failure is not None and failure.resource not in retained:
            self._operate(stack, request, _failed_delete(changes, failure))
            return response("DeleteStack")
        if failure is not None:
            self.failures.remove(failure)
        gone = tuple(c for c in changes if c.logical not in retained)
        kept = tuple(replace(c, status="DELETE_SKIPPED") for c in changes if c.logical in retained)
        ahead = (*_each(gone, "DELETE_IN_PROGRESS", "DELETE_COMPLETE"), *kept)
        steps = [Step("DELETE_IN_PROGRESS", "User Initiated", ahead), Step("DELETE_COMPLETE")]
        self._operate(stack, request, steps, moto_settles=True, then=self._deleter(stack.id))
        return response("DeleteStack")

    def _cancel_update(self, request: Request) -> Answer:
        stack = self._find(request.stack)
        if stack is None:
            return self._forward(request)
        if self._status(stack) != "UPDATE_IN_PROGRESS":
            return error("ValidationError", "CancelUpdateStack cannot be called from current stack status")
        now = time.time()
        # what the update had not done yet, it never will
        self.events[stack.id] = [e for e in self.events[stack.id] if e.at <= now]
        overlay = self.overlays.get(stack.id)
        if overlay is not None and overlay.previous is not None:
            self._restore(stack.id, overlay.previous)
        steps = [
            Step("UPDATE_ROLLBACK_IN_PROGRESS", "User Initiated"),
            Step("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"),
            Step("UPDATE_ROLLBACK_COMPLETE"),
        ]
        self._operate(stack, request, steps)
        return response("CancelUpdateStack")

    def _continue_rollback(self, request: Request) -> Answer:
        stack = self._find(request.stack)
        if stack is None:
            return self._forward(request)
        if self._status(stack) != "UPDATE_ROLLBACK_FAILED":
            return error(
                "ValidationError", "ContinueUpdateRollback cannot be called from current stack status"
            )
        steps = [
            Step("UPDATE_ROLLBACK_IN_PROGRESS", "User Initiated"),
            Step("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"),
            Step("UPDATE_ROLLBACK_COMPLETE"),
        ]
        self._operate(stack, request, steps)
        return response("ContinueUpdateRollback", ET.Element("Result"))

    def _describe_stacks(self, request: Request) -> Answer:
        return self._shown(self._forward(request), ".//{*}Stacks")

    def _list_stacks(self, request: Request) -> Answer:
        return self._shown(self._forward(request), ".//{*}StackSummaries")

    def _shown(self, answer: Answer, path: str) -> Answer:
        """moto's answer, with the statuses of the stacks whose operations the layer scripts."""
        root = answer.xml()
        container = None if root is None else root.find(path)
        if answer.status != 200 or root is None or container is None:
            return answer
        now = time.time()
        for member in list(container):
            stack_id = text(member, "{*}StackId")
            overlay = self.overlays.get(stack_id)
            if stack_id in self.hidden:
                container.remove(member)
            elif overlay is not None and overlay.phase(now).status is not None:
                phase = overlay.phase(now)
                set_child(member, "StackStatus", phase.status, after="CreationTime")
                set_child(member, "StackStatusReason", phase.reason, after="StackStatus")
        return serialize(root)

    def _describe_events(self, request: Request) -> Answer:
        if request.stack.startswith("arn:"):
            stack_id: str | None = request.stack
        else:
            found = self._find(request.stack)
            stack_id = found.id if found else None
        if stack_id not in self.events:
            return self._forward(request)
        overlay = self.overlays.get(stack_id)
        now = time.time() if overlay is None or overlay.armed else overlay.phases[0].at
        result = ET.Element("Result")
        listed = ET.SubElement(result, "StackEvents")
        for event in sorted(self.events[stack_id], key=lambda e: e.at, reverse=True):
            if event.at <= now:
                listed.append(event.xml())
        return response("DescribeStackEvents", result)

    def _get_template(self, request: Request) -> Answer:
        stack = self._find(request.stack)
        overlay = self.overlays.get(stack.id) if stack else None
        if overlay is None or overlay.template is None:
            return self._forward(request)
        return response("GetTemplate", element("Result", TemplateBody=overlay.template))

    def _list_imports(self, request: Request) -> Answer:
        name = request.form.get("ExportName", "")
        users = sorted(stack.name for stack in self._live() if name in self._imports(stack))
        if not users:
            return error("ValidationError", f"Export '{name}' is not imported by any stack.")
        result = ET.Element("Result")
        listed = ET.SubElement(result, "Imports")
        for user in users:
            ET.SubElement(listed, "member").text = user
        return response("ListImports", result)

    # ---- scripts ----------------------------------------------------------------------------------

    def other_actor(self, name: str, status: str, seconds: float, then: str | None) -> None:
        stack = self._stack(name)
        self._seed(stack)
        final = then or status.replace("_IN_PROGRESS", "_COMPLETE")
        deleted = final == "DELETE_COMPLETE"
        steps = [Step(status, "User Initiated"), Step(final)]
        self._operate(
            stack,
            None,
            steps,
            seconds=seconds,
            moto_settles=deleted,
            then=self._deleter(stack.id) if deleted else None,
            armed=False,
        )

    def set_status(self, name: str, status: str, reason: str | None) -> None:
        stack = self._stack(name)
        self._seed(stack)
        overlay = self.overlays.get(stack.id)
        self._operate(stack, None, [Step(status, reason)], template=overlay.template if overlay else None)

    def review_in_progress(self, name: str, tags: Mapping[str, str]) -> None:
        """A stack another actor is creating through a change set it has not executed."""
        form = {
            "StackName": name,
            "ChangeSetName": "another-actor",
            "ChangeSetType": "CREATE",
            "TemplateBody": '{"Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}',
            **flattened("Tags", tags, "Key", "Value"),
        }
        answer = query(self.upstream, "CreateChangeSet", form)
        if answer.status != 200:
            raise LayerError(f"CreateChangeSet {name}: {answer.status} {answer.body[:300]!r}")

    # ---- the pieces -------------------------------------------------------------------------------

    def _operate(
        self,
        stack: Stack,
        request: Request | None,
        steps: list[Step],
        *,
        seconds: float | None = None,
        moto_settles: bool = False,
        then: Callable[[], None] | None = None,
        template: str | None = None,
        previous: Deployed | None = None,
        armed: bool = True,
    ) -> None:
        """Record an operation: its statuses over time, and its events (one per status and resource).

        The steps but the last share `seconds` (the scripted duration of the action); the last one is
        where the stack rests, or, with `moto_settles`, where moto's own status is the truth again.
        """
        if seconds is None:
            seconds = self._seconds(stack.name, request.action if request else "")
        token = request.token if request else None
        start = last = time.time()
        timed = len(steps) - 1  # the last step is where the operation ends
        phases: list[Phase] = []
        log = self.events.setdefault(stack.id, [])
        for index, step in enumerate(steps):
            begin = start + seconds * index / timed if timed else start
            end = start + seconds * (index + 1) / timed if index < timed else begin
            itself = Change(stack.name, STACK_TYPE, step.status, step.reason, stack.id)
            spread = [
                begin + (end - begin) * n / (len(step.changes) + 1) for n in range(1, len(step.changes) + 1)
            ]
            for number, (planned, change) in enumerate(
                zip([begin, *spread], [itself, *step.changes], strict=True)
            ):
                at = last = max(planned, last + 1e-6)  # events never share a timestamp: their order is sure
                log.append(Event(at, stack.id, stack.name, change.logical, change.physical, change.type, change.status, change.reason, token))  # fmt: skip
                if number == 0:
                    phases.append(
                        Phase(at, None if index == timed and moto_settles else step.status, step.reason)
                    )
        ids = frozenset(event.id for event in log if event.at >= start)
        delayed = None if seconds == 0 and armed else then
        self.overlays[stack.id] = Overlay(phases, template, delayed, previous, armed, stack.name, ids)
        if then is not None and delayed is None:
            then()

    def _deleter(self, stack_id: str) -> Callable[[], None]:
        def delete() -> None:
            self._ask("DeleteStack", StackName=stack_id)

        return delete

    def _seed(self, stack: Stack) -> None:
        """Take over the events moto recorded for a stack the layer meets for the first time."""
        if stack.id not in self.events:
            root = self._ask("DescribeStackEvents", StackName=stack.id).xml()
            self.events[stack.id] = sorted(events_of(root), key=lambda e: e.at) if root is not None else []

    def _failure(self, name: str, action: str) -> Failure | None:
        return next((f for f in self.failures if f.stack == name and f.action == action), None)

    def _seconds(self, name: str, action: str) -> float:
        for rule in reversed(self.durations):
            if (not rule.actions or action in rule.actions) and rule.stack in (None, name):
                return rule.seconds
        return 0.0

    def _status(self, stack: Stack) -> str:
        overlay = self.overlays.get(stack.id)
        phase = overlay.phase(time.time()) if overlay else None
        return phase.status if phase and phase.status else stack.status

    def _resources(self, body: str, stack_id: str | None) -> tuple[Change, ...]:
        physical = self._physical_ids(stack_id) if stack_id else {}
        return tuple(
            Change(logical, str(spec.get("Type", "")), "", None, physical.get(logical, ""))
            for logical, spec in resources(load_template(body)).items()
        )

    def _changes(self, old_body: str, request: Request, stack: Stack) -> tuple[Change, ...]:
        """The resource events of an update: added, changed and (in cleanup) removed resources."""
        old = resources(load_template(old_body))
        new = resources(load_template(request.form.get("TemplateBody", old_body)))
        physical = self._physical_ids(stack.id)
        changed = [name for name in new if name in old and new[name] != old[name]]
        if same_template(old_body, request.form.get("TemplateBody", old_body)):
            changed = list(new)  # parameters or tags changed: every resource is updated
        found: list[Change] = []
        for name, spec in new.items():
            kind, where = str(spec.get("Type", "")), physical.get(name, "")
            if name not in old:
                found += _each(
                    (Change(name, kind, "", None, where),), "CREATE_IN_PROGRESS", "CREATE_COMPLETE"
                )
            elif name in changed:
                found += _each(
                    (Change(name, kind, "", None, where),), "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE"
                )
        for name, spec in old.items():
            if name not in new:
                found += _each(
                    (Change(name, str(spec.get("Type", "")), ""),), "DELETE_IN_PROGRESS", "DELETE_COMPLETE"
                )
        return tuple(found)

    def _in_use(self, stack: Stack) -> dict[str, list[str]]:
        """The stack's exports that other stacks import, and their importers."""
        exports = stack.exports
        if not exports:
            return {}
        users: dict[str, list[str]] = {}
        for other in self._live():
            if other.id != stack.id:
                for name in sorted(self._imports(other) & exports.keys()):
                    users.setdefault(name, []).append(other.name)
        return {name: sorted(found) for name, found in users.items()}

    def _imports(self, stack: Stack) -> set[str]:
        return imports(load_template(self._template(stack.id)), stack)

    def _live(self) -> list[Stack]:
        return [
            s
            for s in self._all_stacks()
            if s.id not in self.hidden and self._status(s) not in NOTHING_DEPLOYED
        ]

    def _restore(self, stack_id: str, previous: Deployed) -> None:
        """Put back what an update replaced, as a rollback does."""
        form = {
            "StackName": stack_id,
            "TemplateBody": previous.body,
            **flattened("Parameters", previous.parameters, "ParameterKey", "ParameterValue"),
            **flattened("Tags", previous.tags, "Key", "Value"),
            **{f"Capabilities.member.{i}": c for i, c in enumerate(previous.capabilities, 1)},
        }
        answer = query(self.upstream, "UpdateStack", form)
        if answer.error() == ("ValidationError", NO_UPDATES):
            answer = query(self.upstream, "UpdateStack", {**form, "TemplateBody": previous.body + "\n"})
        if answer.status != 200:
            raise LayerError(f"restoring {stack_id}: {answer.status} {answer.body[:300]!r}")

    def _leftover(self, name: str) -> str | None:
        """The stack moto keeps, stuck, after refusing a CreateStack it had begun."""
        root = self._ask("ListStacks").xml()
        found = [] if root is None else root.iterfind(".//{*}StackSummaries/{*}member")
        stuck = [
            text(m, "{*}StackId")
            for m in found
            if text(m, "{*}StackName") == name and text(m, "{*}StackStatus") in STUCK
        ]
        return stuck[-1] if stuck else None

    # ---- moto ----------------------------------------------------------------------------------------

    def _forward(self, request: Request, **changes: str) -> Answer:
        body = encode({**request.form, **changes}) if changes else request.body
        return forward(self.upstream, request.path, body, request.headers)

    def _ask(self, action: str, **params: str) -> Answer:
        return query(self.upstream, action, params)

    def _find(self, name_or_id: str) -> Stack | None:
        answer = self._ask("DescribeStacks", StackName=name_or_id)
        root = answer.xml()
        if answer.status == 200 and root is not None:
            return next(stacks_of(root), None)
        if "does not exist" in (answer.error() or ("", ""))[1]:
            return None
        raise LayerError(f"DescribeStacks {name_or_id}: {answer.status} {answer.body[:300]!r}")

    def _stack(self, name_or_id: str) -> Stack:
        stack = self._find(name_or_id)
        if stack is None:
            raise LayerError(f"no stack {stack_name(name_or_id)} in moto")
        return stack

    def _all_stacks(self) -> list[Stack]:
        found: list[Stack] = []
        token: dict[str, str] = {}
        while True:
            root = self._ask("DescribeStacks", **token).xml()
            if root is None:
                raise LayerError("DescribeStacks: not XML")
            found += stacks_of(root)
            next_token = text(root, ".//{*}NextToken")
            if not next_token:
                return found
            token = {"NextToken": next_token}

    def _template(self, stack_id: str) -> str:
        overlay = self.overlays.get(stack_id)
        if overlay is not None and overlay.template is not None:
            return overlay.template
        root = self._ask("GetTemplate", StackName=stack_id).xml()
        return "" if root is None else text(root, ".//{*}TemplateBody")

    def _physical_ids(self, stack_id: str) -> dict[str, str]:
        root = self._ask("DescribeStackResources", StackName=stack_id).xml()
        found = [] if root is None else root.iterfind(".//{*}StackResources/{*}member")
        return {text(m, "{*}LogicalResourceId"): text(m, "{*}PhysicalResourceId") for m in found}


def _stack_id(answer: Answer) -> str:
    root = answer.xml()
    return "" if root is None else text(root, ".//{*}StackId")


def _each(changes: tuple[Change, ...] | list[Change], *statuses: str) -> tuple[Change, ...]:
    """Each resource through the given statuses, one after the other."""
    return tuple(replace(change, status=status) for change in changes for status in statuses)


def _until(planned: tuple[Change, ...], logical: str) -> tuple[tuple[Change, ...], Change]:
    names = [change.logical for change in planned]
    if logical not in names:
        raise LayerError(f"a scripted failure names {logical}, which the template does not declare: {names}")
    index = names.index(logical)
    return planned[:index], planned[index]


def _failed_create(planned: tuple[Change, ...], failure: Failure) -> list[Step]:
    before, failed = _until(planned, failure.resource)
    reason = f"The following resource(s) failed to create: [{failed.logical}]. Rollback requested by user."
    ahead = (
        *_each(before, "CREATE_IN_PROGRESS", "CREATE_COMPLETE"),
        replace(failed, status="CREATE_IN_PROGRESS"),
        replace(failed, status="CREATE_FAILED", reason=failure.reason),
    )
    back = (
        *_each(before, "DELETE_IN_PROGRESS", "DELETE_COMPLETE"),
        replace(failed, status="DELETE_COMPLETE"),
    )
    return [Step("CREATE_IN_PROGRESS", "User Initiated", ahead), Step("ROLLBACK_IN_PROGRESS", reason, back)]


def _failed_update(changes: tuple[Change, ...], failure: Failure) -> list[Step]:
    done = [c for c in changes if c.status.endswith("_COMPLETE") and not c.status.startswith("DELETE")]
    names = [c.logical for c in done]
    if failure.resource not in names:
        raise LayerError(f"a scripted update failure names {failure.resource}, which the update does not change: {names}")  # fmt: skip
    failed = done[names.index(failure.resource)]
    before = tuple(done[: names.index(failure.resource)])
    verb = "CREATE" if failed.status.startswith("CREATE") else "UPDATE"
    forward_step = (
        *_each(before, "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE"),
        replace(failed, status=f"{verb}_IN_PROGRESS"),
        replace(failed, status=f"{verb}_FAILED", reason=failure.reason),
    )
    reason = f"The following resource(s) failed to {verb.lower()}: [{failed.logical}]."
    if failure.rollback_reason is None:
        back = _each((*before, failed), "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE")
        return [
            Step("UPDATE_IN_PROGRESS", "User Initiated", forward_step),
            Step("UPDATE_ROLLBACK_IN_PROGRESS", reason, back),
            Step("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"),
            Step("UPDATE_ROLLBACK_COMPLETE"),
        ]
    stuck = failure.rollback_resource or failure.resource
    kind = next((c.type for c in changes if c.logical == stuck), failed.type)
    stuck_change = Change(stuck, kind, "UPDATE_FAILED", failure.rollback_reason)
    return [
        Step("UPDATE_IN_PROGRESS", "User Initiated", forward_step),
        Step(
            "UPDATE_ROLLBACK_IN_PROGRESS",
            reason,
            (replace(stuck_change, status="UPDATE_IN_PROGRESS", reason=None), stuck_change),
        ),
        Step("UPDATE_ROLLBACK_FAILED", f"The following resource(s) failed to update: [{stuck}]."),
    ]


def _refused_update(changes: tuple[Change, ...], reason: str) -> list[Step]:
    ahead = tuple(c for c in changes if not c.status.startswith("DELETE"))
    undone = _each(tuple({c.logical: c for c in ahead}.values()), "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE")
    return [
        Step("UPDATE_IN_PROGRESS", "User Initiated", ahead),
        Step("UPDATE_ROLLBACK_IN_PROGRESS", reason, undone),
        Step("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"),
        Step("UPDATE_ROLLBACK_COMPLETE"),
    ]


def _failed_delete(changes: tuple[Change, ...], failure: Failure) -> list[Step]:
    names = [c.logical for c in changes]
    if failure.resource not in names:
        raise LayerError(f"a scripted delete failure names {failure.resource}, which the stack does not hold: {names}")  # fmt: skip
    others = tuple(c for c in changes if c.logical != failure.resource)
    failed = changes[names.index(failure.resource)]
    return [
        Step("DELETE_IN_PROGRESS", "User Initiated", (
            *_each(others, "DELETE_IN_PROGRESS", "DELETE_COMPLETE"),
            replace(failed, status="DELETE_IN_PROGRESS"),
            replace(failed, status="DELETE_FAILED", reason=failure.reason),
        )),
        Step("DELETE_FAILED", f"The following resource(s) failed to delete: [{failure.resource}]. "),
    ]  # fmt: skip


def _unchanged(form: Mapping[str, str], deployed: Deployed) -> bool:
    """What CloudFormation calls no update: the same template (as parsed), parameters and tags."""
    if "TemplateURL" in form:
        return False
    body = deployed.body if form.get("UsePreviousTemplate") == "true" else form.get("TemplateBody", "")
    parameters = {
        member.get("ParameterKey", ""): (
            deployed.parameters.get(member.get("ParameterKey", ""), "")
            if member.get("UsePreviousValue") == "true"
            else member.get("ParameterValue", "")
        )
        for member in records(form, "Parameters")
    }
    tags = pairs(form, "Tags", "Key", "Value") if any(k.startswith("Tags.") for k in form) else deployed.tags
    return same_template(body, deployed.body) and parameters == deployed.parameters and tags == deployed.tags


def _export_refusal(
    in_use: Mapping[str, list[str]], before: Mapping[str, str], after: Mapping[str, str]
) -> str | None:
    for name in sorted(in_use):
        users = _joined(in_use[name])
        if name not in after:
            return f"Export {name} cannot be deleted as it is in use by {users}"
        if after[name] != before[name]:
            return f"Cannot update export {name} as it is in use by {users}"
    return None


def _joined(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
