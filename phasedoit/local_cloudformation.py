"""CloudFormation requests at the local endpoint: where moto's answer is not CloudFormation's, the gate's is.

- UpdateStack: "No updates are to be performed." exactly when the template, parameters and tags are
  unchanged (moto says it only when Parameters are passed, and then also to a change of tags alone); a
  change of tags alone is applied; a stack in a state that cannot be updated is refused as CloudFormation
  refuses it; an update that deletes or changes an export another stack imports, or takes an export name
  another stack holds, rolls back (`UPDATE_ROLLBACK_COMPLETE`, the reason in the stack's events); moto's
  failure in the middle of an update rolls it back too.
- DeleteStack: refused while another stack imports one of the stack's exports, or while its termination
  protection is on (the stack keeps its status, the reason in its events); when moto fails to delete a
  resource (it then drops the stack but keeps its exports), the stack is gone for good, its exports are
  released, and what moto kept is named in the stack's events and the log.
- ListImports: answered (moto has no such operation).
- TEMPLATE_REWRITERS: the one place where a CreateStack, UpdateStack or CreateChangeSet body may be
  rewritten before moto sees it (e.g. a transform that moto does not expand).

Runs in the server process; the stacks are moto's objects.
"""

from __future__ import annotations

import copy
import html
import io
import re
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from phasedoit import local_sam
from phasedoit.local_auth import query_error
from phasedoit.local_exports import (
    discard_stacks,
    export_names,
    export_values,
    exports_in_use,
    importers,
    in_use_message,
    pseudo_values,
    sync_exports,
)
from phasedoit.local_snapshot import moto_error_text

NAMESPACE = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
NO_UPDATES = "No updates are to be performed."
UPDATABLE = frozenset(
    {
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
        "UPDATE_ROLLBACK_COMPLETE",
        "IMPORT_COMPLETE",
        "IMPORT_ROLLBACK_COMPLETE",
    }
)
IMPORTS_PAGE = 100
# Actions after which the saved snapshot may need writing: every one that is not a read.
READ_PREFIXES = ("Describe", "List", "Get", "Validate", "Estimate", "Detect")


@dataclass
class Answer:
    status: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def ok(self) -> bool:
        return self.status.startswith("2")


class Crash(Exception):
    """moto raised instead of answering (an HTTP 500 page without the gate)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Call:
    """A CloudFormation (query protocol) request: its action and form parameters, and where it goes."""

    environ: dict[str, Any]
    pairs: list[tuple[str, str]]
    account: str
    region: str
    action: str = field(init=False)

    def __post_init__(self) -> None:
        self.action = self.get("Action") or ""

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.pairs if key == name), None)

    def given(self, name: str) -> bool:
        return any(key == name or key.startswith(f"{name}.") for key, _ in self.pairs)

    def members(self, name: str) -> list[dict[str, str]]:
        """`Name.member.N.Field=value` pairs as a list of {Field: value}, in N order."""
        found: dict[int, dict[str, str]] = {}
        for key, value in self.pairs:
            match = re.fullmatch(rf"{re.escape(name)}\.member\.(\d+)\.(\w+)", key)
            if match:
                found.setdefault(int(match[1]), {})[match[2]] = value
        return [found[index] for index in sorted(found)]

    def set(self, name: str, value: str) -> None:
        """Replace a parameter; moto reads the request body rewritten."""
        self.pairs = [(key, value if key == name else old) for key, old in self.pairs]
        body = urllib.parse.urlencode(self.pairs).encode()
        self.environ["wsgi.input"] = io.BytesIO(body)
        self.environ["CONTENT_LENGTH"] = str(len(body))
        self.environ["QUERY_STRING"] = ""

    def backend(self) -> Any:
        from moto.cloudformation.models import cloudformation_backends

        return cloudformation_backends[self.account][self.region]


Forward = Callable[[Call], Answer]
# (template body, request) -> the body moto gets; applied in order to CreateStack/UpdateStack/CreateChangeSet
TEMPLATE_REWRITERS: list[Callable[[str, Call], str]] = [local_sam.rewrite]  # SAM: moto ignores its transform


def handle(call: Call, forward: Forward) -> Answer:
    """The answer to a CloudFormation request: moto's, or the gate's where moto's is wrong."""
    rewrite_template(call)
    if not is_read(call.action):
        link_exports(call.backend())
    handler = HANDLERS.get(call.action)
    return forward(call) if handler is None else handler(call, forward)


def link_exports(backend: Any) -> None:
    """Let every stack import from the region's registry of exports.

    moto hands a new stack the registry, or a new empty dict of its own when the registry is empty
    (`exports or {}`): a stack created before any export existed never finds one at its updates
    ("No export named ... found").
    """
    for stack in list(backend.stacks.values()):
        stack.cross_stack_resources = backend.exports
        resource_map = getattr(stack, "resource_map", None)
        if resource_map is not None:
            resource_map.cross_stack_resources = backend.exports


def rewrite_template(call: Call) -> None:
    body = call.get("TemplateBody")
    if body is None or call.action not in ("CreateStack", "UpdateStack", "CreateChangeSet"):
        return
    for rewriter in TEMPLATE_REWRITERS:
        body = rewriter(body, call)
    if body != call.get("TemplateBody"):
        call.set("TemplateBody", body)


def is_read(action: str) -> bool:
    return action.startswith(READ_PREFIXES)


# ----------------------------------------------------------------------------------------- answers


def ok(action: str, result: str = "") -> Answer:
    inner = f"<{action}Result>{result}</{action}Result>" if result else ""
    body = (
        f'<{action}Response xmlns="{NAMESPACE}">{inner}'
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{action}Response>"
    ).encode()
    return Answer("200 OK", _headers(body), body)


def error(code: str, message: str, status: str = "400 Bad Request") -> Answer:
    body = query_error(code, message, str(uuid.uuid4()), sender=status.startswith("4"))
    return Answer(status, [*_headers(body), ("x-amzn-ErrorType", code)], body)


def _headers(body: bytes) -> list[tuple[str, str]]:
    return [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))]


def error_message(answer: Answer) -> str:
    """The Message of an AWS error document (moto's own answers)."""
    match = re.search(rb"<Message>(.*?)</Message>", answer.body, re.DOTALL)
    text = match[1] if match else answer.body
    return html.unescape(text.decode("utf-8", "replace")).strip() or answer.status


# ------------------------------------------------------------------------------------------ stacks


def find_live(backend: Any, name_or_id: str | None) -> Any:
    if not name_or_id:
        return None
    stack = backend.stacks.get(name_or_id)
    if stack is not None:
        return stack
    return next((s for s in list(backend.stacks.values()) if s.name == name_or_id), None)


@dataclass(frozen=True)
class Saved:
    """What an update may change, to be put back by a rollback."""

    template: Any
    parameters: dict[str, Any]
    tags: dict[str, str]
    role_arn: str | None

    @classmethod
    def of(cls, stack: Any) -> Saved:
        return cls(stack.template, dict(stack.parameters), dict(stack.tags), stack.role_arn)


def _event(stack: Any, status: str, reason: str | None = None) -> None:
    stack._add_stack_event(status, resource_status_reason=reason)


# ------------------------------------------------------------------------------------- UpdateStack


def update_stack(call: Call, forward: Forward) -> Answer:
    backend = call.backend()
    stack = find_live(backend, call.get("StackName"))
    if stack is None or not isinstance(stack.template, str):
        return forward(call)  # moto says it does not exist, or it is a change set's placeholder
    if stack.status not in UPDATABLE:
        message = f"Stack:{stack.stack_id} is in {stack.status} state and can not be updated."
        return error("ValidationError", message)
    use_previous = call.get("UsePreviousTemplate") == "true"
    body = stack.template if use_previous else call.get("TemplateBody")
    parameters = _update_parameters(call, stack)
    tags = _tags(call)
    if body is not None and _same_template(stack, body) and parameters == stack.parameters:
        if tags is None or tags == stack.tags:
            return error("ValidationError", NO_UPDATES)
        return _apply_tags(stack, tags)
    in_use = exports_in_use(backend, stack)
    removed = _removed_exports(stack, body, parameters, in_use)
    if removed:
        _refuse_update(stack, in_use_message("deleted", removed, in_use[removed]))
        return ok("UpdateStack", f"<StackId>{escape(stack.stack_id)}</StackId>")
    saved = Saved.of(stack)
    before = {name: backend.exports[name].value for name in in_use}
    if body is not None:
        spare_unchanged(stack, body)
    try:
        answer = forward(call)
    except Crash as crash:
        roll_back(stack, saved, f"the local endpoint (moto) failed: {moto_error_text(crash.error)}")
        raise
    finally:
        _restore_properties(stack)
    if answer.ok:
        reason = _export_conflict(backend, stack, in_use, before)
        sync_exports()
        if reason is not None:
            roll_back(stack, saved, reason)
    return answer


def _update_parameters(call: Call, stack: Any) -> dict[str, Any]:
    """The parameters moto keeps after this update (it keeps the old ones when none are passed)."""
    given = call.members("Parameters")
    if not given:
        return dict(stack.parameters)
    resolved = {p["ParameterKey"]: p["ParameterValue"] for p in given if "ParameterValue" in p}
    for p in given:
        if p.get("UsePreviousValue") == "true" and p["ParameterKey"] in stack.parameters:
            resolved[p["ParameterKey"]] = stack.parameters[p["ParameterKey"]]
    return resolved


def _tags(call: Call) -> dict[str, str] | None:
    """The requested tags: None when not given (kept), {} when given empty (all removed)."""
    if not call.given("Tags"):
        return None
    return {tag["Key"]: tag.get("Value", "") for tag in call.members("Tags") if "Key" in tag}


def _same_template(stack: Any, body: str) -> bool:
    if body == stack.template:
        return True
    try:
        return bool(stack.parse_template(body) == stack.template_dict)
    except Exception:  # moto cannot read it: it is not the same, and moto will say why
        return False


def _apply_tags(stack: Any, tags: dict[str, str]) -> Answer:
    _event(stack, "UPDATE_IN_PROGRESS", "User Initiated")
    stack.tags = dict(tags)
    _event(stack, "UPDATE_COMPLETE")
    stack.status = "UPDATE_COMPLETE"
    return ok("UpdateStack", f"<StackId>{escape(stack.stack_id)}</StackId>")


def _removed_exports(stack: Any, body: str | None, parameters: dict[str, Any], in_use: dict[str, Any]) -> str:
    """An export in use that the new template certainly no longer declares ("" if none)."""
    if body is None or not in_use:
        return ""
    try:
        template = stack.parse_template(body)
    except Exception:
        return ""
    values = pseudo_values(stack.name, stack.region_name, stack.account_id, stack.stack_id, parameters)
    names = export_names(template, values, stack.name)
    if names is None:  # a name known only once deployed: the check after moto's update decides
        return ""
    return next((name for name in sorted(in_use) if name not in names), "")


def _refuse_update(stack: Any, reason: str) -> None:
    """CloudFormation's outcome: the update starts, fails on the export, and rolls back."""
    _event(stack, "UPDATE_IN_PROGRESS", "User Initiated")
    _event(stack, "UPDATE_ROLLBACK_IN_PROGRESS", reason)
    _event(stack, "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS")
    _event(stack, "UPDATE_ROLLBACK_COMPLETE")
    stack.status = "UPDATE_ROLLBACK_COMPLETE"


def _export_conflict(
    backend: Any, stack: Any, in_use: dict[str, list[str]], before: dict[str, str]
) -> str | None:
    """Why CloudFormation would roll this update back because of an export, or None."""
    after = export_values(stack)
    for name, users in in_use.items():
        if name not in after:
            return in_use_message("deleted", name, users)
        if after[name] != before[name]:
            return in_use_message("updated", name, users)
    for name in sorted(after):
        holder = backend.exports.get(name)
        if holder is not None and holder.exporting_stack_id != stack.stack_id:
            owner = find_live(backend, holder.exporting_stack_id)
            if owner is not None:
                return f"Export with name {name} is already exported by stack {owner.name}."
    return None


def spare_unchanged(stack: Any, body: str) -> None:
    """Keep moto from replacing the resources an update leaves as they were.

    moto replaces every resource whose stored definition differs from the new one, and it stores them
    with an added `"Properties": {}`: a resource declared without Properties (a plain SNS topic) got a
    new physical id, hence a new export value, at every update. Its stored definitions are set to the
    new ones where the definitions as sent are equal.
    """
    stored = getattr(stack.resource_map, "_resource_json_map", None)
    try:
        sent = stack.parse_template(stack.template).get("Resources", {})
        new = stack.parse_template(body).get("Resources", {})
    except Exception:  # moto reads them itself, and says what is wrong
        return
    if not (isinstance(stored, dict) and isinstance(sent, dict) and isinstance(new, dict)):
        return
    for name, definition in new.items():
        if name in stored and sent.get(name) == definition:
            stored[name] = copy.deepcopy(definition)


def _restore_properties(stack: Any) -> None:
    """moto's own invariant after a create, which its deletes rely on: every definition has Properties."""
    stored = getattr(stack.resource_map, "_resource_json_map", None)
    for definition in (stored or {}).values():
        if isinstance(definition, dict):
            definition.setdefault("Properties", {})


def roll_back(stack: Any, saved: Saved, reason: str) -> None:
    """Put the stack back as it was before the update, as CloudFormation's rollback does."""
    if stack.events and stack.events[-1].resource_status == "UPDATE_COMPLETE":
        stack.events.pop()  # moto's: the update did not complete after all
    _event(stack, "UPDATE_ROLLBACK_IN_PROGRESS", reason)
    try:
        if stack.template != saved.template or stack.parameters != saved.parameters:
            spare_unchanged(stack, saved.template)
            stack.template = saved.template
            stack._parse_template()
            try:
                stack.resource_map.update(stack.template_dict, saved.parameters)
            finally:
                _restore_properties(stack)
            stack.output_map = stack._create_output_map()
        stack.parameters, stack.tags, stack.role_arn = saved.parameters, saved.tags, saved.role_arn
        stack.outputs  # noqa: B018 - computed on access: raises if the old outputs cannot be had again
    except Exception as error:  # moto cannot go back either
        failure = f"the rollback failed too: {moto_error_text(error)}"
        _event(stack, "UPDATE_ROLLBACK_FAILED", failure)
        stack.status = "UPDATE_ROLLBACK_FAILED"
    else:
        _event(stack, "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS")
        _event(stack, "UPDATE_ROLLBACK_COMPLETE")
        stack.status = "UPDATE_ROLLBACK_COMPLETE"
    sync_exports()


# ------------------------------------------------------------------------------------- DeleteStack


def delete_stack(call: Call, forward: Forward) -> Answer:
    backend = call.backend()
    stack = find_live(backend, call.get("StackName"))
    if stack is None:
        return forward(call)  # CloudFormation and moto: deleting no stack is no error
    if stack.enable_termination_protection:
        message = f"Stack [{stack.name}] cannot be deleted while TerminationProtection is enabled"
        return error("ValidationError", message)
    in_use = exports_in_use(backend, stack)
    if in_use:
        name = sorted(in_use)[0]
        _refuse_delete(stack, in_use_message("deleted", name, in_use[name]))
        return ok("DeleteStack")
    crash = None
    try:
        answer = forward(call)
    except Crash as failure:
        crash, answer = failure, Answer("500", [], moto_error_text(failure.error).encode())
    if stack.stack_id not in backend.stacks and stack.stack_id not in backend.deleted_stacks:
        # moto dropped it halfway: a resource it could not delete, the exports it kept
        _finish_failed_delete(backend, stack, error_message(answer))
        return ok("DeleteStack")
    if crash is not None:
        raise crash
    sync_exports()
    return answer


def _refuse_delete(stack: Any, reason: str) -> None:
    """CloudFormation's outcome: the delete starts, and the stack returns to its status, with the reason."""
    _event(stack, "DELETE_IN_PROGRESS", "User Initiated")
    _event(stack, stack.status, reason)


def _finish_failed_delete(backend: Any, stack: Any, why: str) -> None:
    resource_map = stack.resource_map
    kept = getattr(resource_map, "_parsed_resources", {})
    types = getattr(resource_map, "_resource_json_map", {})
    left = [
        f"{logical} ({types.get(logical, {}).get('Type', '?')})"
        for logical, resource in kept.items()
        if resource is not None and not isinstance(resource, str)
    ]
    reason = (
        f"moto could not delete {', '.join(left) or 'a resource'}: {why.rstrip('.')}. The stack is deleted"
        " all the same, its exports are released, and what moto kept stays in its memory until the local"
        " endpoint restarts"
    )
    _event(stack, "DELETE_COMPLETE", reason)
    stack.status = "DELETE_COMPLETE"
    backend.deleted_stacks[stack.stack_id] = stack
    discard_stacks([stack.stack_id])
    sync_exports()
    print(f"DeleteStack {stack.name}: {reason}", flush=True)


# ------------------------------------------------------------------------------------- ListImports


def list_imports(call: Call, forward: Forward) -> Answer:
    name = call.get("ExportName")
    if not name:
        return error("ValidationError", "ExportName is required")
    users = importers(call.backend(), name)
    if not users:
        return error("ValidationError", f"Export '{name}' is not imported by any stack.")
    start = int(call.get("NextToken") or 0) if (call.get("NextToken") or "0").isdigit() else 0
    page = users[start : start + IMPORTS_PAGE]
    members = "".join(f"<member>{escape(user)}</member>" for user in page)
    token = f"<NextToken>{start + IMPORTS_PAGE}</NextToken>" if start + IMPORTS_PAGE < len(users) else ""
    return ok("ListImports", f"<Imports>{members}</Imports>{token}")


HANDLERS: dict[str, Callable[[Call, Forward], Answer]] = {
    "UpdateStack": update_stack,
    "DeleteStack": delete_stack,
    "ListImports": list_imports,
}
