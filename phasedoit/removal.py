"""What guards a removal: a protected stage asks first, and nothing outside the app may import what goes.

A removal is a production incident waiting to happen: both checks run before the first stack is deleted.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from doit.exceptions import TaskFailed

from phasedoit.errors import PhasedoitError
from phasedoit.stack import Target


def confirmed(task: Any, values: Any, stage: str, stacks: list[str], yes: bool) -> bool:
    """The uptodate check of `confirm-remove`: True (nothing to do) once the person at the terminal agreed.

    doit runs it in its main process, which has the terminal, before any removal starts.
    """
    if yes:
        return True
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    sys.stderr.write(f"stage {stage} is protected; these stacks would be deleted:\n")
    sys.stderr.write("".join(f"  {stack}\n" for stack in stacks))
    sys.stderr.write(f"type the stage name ({stage}) to delete them: ")
    sys.stderr.flush()
    try:
        return input().strip() == stage
    except EOFError:
        return False


def not_confirmed(stage: str) -> TaskFailed:
    return TaskFailed(
        f"remove: stage {stage} is protected and the removal was not confirmed: nothing was removed"
        f" (confirm at the prompt on a terminal, or add yes=1)"
    )


def check_importers(app: str, stacks: Mapping[str, str], target: Target) -> TaskFailed | None:
    """No stack outside the app imports an export of the stacks `remove` deletes (stack -> service)."""
    from phasedoit import cloudformation
    from phasedoit.actions import resolve_target

    try:
        cfn = cloudformation.client(resolve_target(target))
        exports = cloudformation.exports_of(cfn, list(stacks))
        outside = {
            export: sorted(set(importers) - set(stacks))
            for export, importers in cloudformation.importers(cfn, sorted(exports)).items()
        }
    except PhasedoitError as e:
        return TaskFailed(f"remove: {e}")
    problems = [
        f"remove: {stacks[exports[export]]}'s export {export} is imported by {', '.join(names)},"
        f" outside {app}: remove that import first; nothing was removed"
        for export, names in sorted(outside.items())
        if names
    ]
    return TaskFailed("\n".join(problems)) if problems else None
