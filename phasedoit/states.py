"""What each CloudFormation stack status means to phasedoit, and the one line that says why a stack failed.

Pure: statuses and the stack events of one operation (as DescribeStackEvents gives them) in, words out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from phasedoit.stack import DEPLOYED, ROLLED_BACK

Event = Mapping[str, Any]  # one of DescribeStackEvents' StackEvents

# What phasedoit does with a stack it finds before deploying.
UPDATE, WAIT, RECREATE, REVIEW, STUCK_ROLLBACK, DELETE_FAILED, UNKNOWN = (
    "update", "wait", "recreate", "review", "stuck rollback", "delete failed", "unknown"
)  # fmt: skip
ACTIONS: tuple[tuple[frozenset[str], str], ...] = (
    # deployed, with the last update's template or the one before it; UPDATE_FAILED (an update that failed
    # with rollback disabled) takes another update too
    (DEPLOYED | ROLLED_BACK | {"UPDATE_FAILED"}, UPDATE),
    # a first create that failed, or never started (CREATE_PENDING: moto's, after refusing one): the stack
    # can only be deleted, and created again
    (frozenset({"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "CREATE_PENDING"}), RECREATE),
    (frozenset({"REVIEW_IN_PROGRESS"}), REVIEW),
    (frozenset({"UPDATE_ROLLBACK_FAILED", "IMPORT_ROLLBACK_FAILED"}), STUCK_ROLLBACK),
    (frozenset({"DELETE_FAILED"}), DELETE_FAILED),
)
ROLLBACK_REQUESTED = " Rollback requested by user."


def in_progress(status: str) -> bool:
    """An operation runs: it ends by itself. REVIEW_IN_PROGRESS waits for a change set to be executed."""
    return status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS"


def action(status: str) -> str:
    if in_progress(status):
        return WAIT
    return next((kind for statuses, kind in ACTIONS if status in statuses), UNKNOWN)


def failure(status: str, events: Sequence[Event], reason: str | None) -> str:
    """The first failed resource of the operation, its type and reason; else the stack's own reason.

    `events`: the operation's, oldest first; `reason`: the stack's StackStatusReason.
    """
    failed = _failed(events)
    if failed:
        first = failed[0]
        return f"{first['LogicalResourceId']} ({first['ResourceType']}): {_reason(first)} [{status}]"
    # a refusal of the whole stack (an export missing, or in use) is the reason of its rollback
    said = [_reason(e) for e in events if _is_stack(e) and _reason(e) not in ("", "User Initiated")]
    return f"{(said[0] if said else reason) or 'failed'} [{status}]"


def stuck_rollback(name: str, status: str, events: Sequence[Event]) -> str:
    """UPDATE_ROLLBACK_FAILED: the resources the rollback could not restore, and the way out."""
    began = [i for i, e in enumerate(events) if _is_stack(e) and "ROLLBACK" in e["ResourceStatus"]]
    stuck = _failed(events[began[0] :] if began else [])  # what failed once the rollback began
    return (
        f"{name} is {status}: {_which(stuck, 'could not be rolled back')}; fix that, then run"
        f" `aws cloudformation continue-update-rollback --stack-name {name}` and deploy again"
    )


def delete_failed(name: str, events: Sequence[Event]) -> str:
    """DELETE_FAILED: the resources that could not be deleted, and how to delete the stack without them."""
    stuck = _failed(events)
    retain = " ".join(dict.fromkeys(e["LogicalResourceId"] for e in stuck)) or "<resources>"
    return (
        f"{name} is DELETE_FAILED: {_which(stuck, 'could not be deleted')}; remove what blocks that and"
        f" remove again, or keep them: `aws cloudformation delete-stack --stack-name {name}"
        f" --retain-resources {retain}`"
    )


def unknown(name: str, status: str) -> str:
    return f"{name} is {status}, a status phasedoit does not know: nothing was done"


def review(name: str) -> str:
    return (
        f"{name} is REVIEW_IN_PROGRESS: another actor's change set creates it; execute or delete that"
        " change set first"
    )


def _which(failed: Sequence[Event], what: str) -> str:
    """'A, B <what> (A: its reason)'"""
    if not failed:
        return f"a resource {what}"
    names = list(dict.fromkeys(e["LogicalResourceId"] for e in failed))
    return f"{', '.join(names)} {what} ({names[0]}: {_reason(failed[0])})"


def _failed(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if e["ResourceStatus"].endswith("_FAILED") and not _is_stack(e)]


def _is_stack(event: Event) -> bool:
    return bool(event["LogicalResourceId"] == event["StackName"])


def _reason(event: Event) -> str:
    """The event's reason, without CloudFormation's "Rollback requested by user." (nobody asked for it)."""
    reason = str(event.get("ResourceStatusReason") or "")
    return reason[: -len(ROLLBACK_REQUESTED)] if reason.endswith(ROLLBACK_REQUESTED) else reason
