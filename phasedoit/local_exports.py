"""Exports and imports between moto's stacks, kept as CloudFormation keeps them.

moto registers a stack's exports when it creates the stack only, never knows who imports what, and keeps
the exports of a stack it failed to delete. Here the registry is rebuilt from the live stacks, and each
stack's imports are read from its template (with phasedoit.templates, resolved with its parameters), so
that the gate can refuse to delete or change an export in use and answer ListImports.

Runs in the server process; the stacks are moto's objects, reached by duck typing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from phasedoit import templates

# Stacks whose imports count: CloudFormation lists the importers among the stacks that exist.
GONE = frozenset({"DELETE_COMPLETE"})


def cloudformation_backends() -> Any:
    from moto.cloudformation.models import cloudformation_backends as backends

    return backends


def all_backends() -> Iterator[Any]:
    for regions in cloudformation_backends().values():
        yield from regions.values()


def live_stacks(backend: Any) -> list[Any]:
    return [stack for stack in list(backend.stacks.values()) if stack.status not in GONE]


def known_values(stack: Any) -> dict[str, str]:
    """What the template of a moto stack can refer to statically: its parameters and pseudo parameters."""
    return pseudo_values(stack.name, stack.region_name, stack.account_id, stack.stack_id, stack.parameters)


def pseudo_values(
    name: str, region: str, account: str, stack_id: str, parameters: dict[str, Any]
) -> dict[str, str]:
    values = {
        "AWS::StackName": name,
        "AWS::Region": region,
        "AWS::AccountId": account,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackId": stack_id,
    }
    return {**values, **{key: str(value) for key, value in parameters.items()}}


def template_dependencies(
    template: dict[str, Any], values: dict[str, str], shown: str
) -> templates.Dependencies:
    if not isinstance(template, dict):
        return templates.Dependencies()
    return templates.find_dependencies(template, values, shown)


def imports_of(stack: Any) -> frozenset[str]:
    """The export names a stack's template imports (those that cannot be resolved statically aside)."""
    return template_dependencies(stack.template_dict, known_values(stack), stack.name).imports


def export_names(template: dict[str, Any], values: dict[str, str], shown: str) -> frozenset[str] | None:
    """The export names a template declares, or None if one of them cannot be resolved statically."""
    if not isinstance(template, dict):
        return frozenset()
    known = {**templates.parameter_defaults(template), **values}
    found = templates.collect_dependencies(template.get("Outputs"), "Outputs", {}, known, shown)
    return None if found.warnings else found.exports


def importers(backend: Any, export_name: str, but: str | None = None) -> list[str]:
    """Names of the live stacks (other than stack id `but`) that import the export, oldest first."""
    stacks = sorted(live_stacks(backend), key=lambda stack: stack.creation_time)
    return [stack.name for stack in stacks if stack.stack_id != but and export_name in imports_of(stack)]


def exports_in_use(backend: Any, stack: Any) -> dict[str, list[str]]:
    """The stack's registered exports that other stacks import, with their importers."""
    mine = sorted(
        name for name, export in backend.exports.items() if export.exporting_stack_id == stack.stack_id
    )
    found = {name: importers(backend, name, but=stack.stack_id) for name in mine}
    return {name: users for name, users in found.items() if users}


def export_values(stack: Any) -> dict[str, str]:
    """The stack's exports as moto computes them now; {} if it cannot (an output of a failed resource)."""
    try:
        return {export.name: export.value for export in stack.exports}
    except Exception:  # moto's own failure: the caller treats the exports as unknown
        return {}


def sync_exports() -> None:
    """Register the exports the live stacks have now, and only those.

    moto registers exports when it creates a stack only: after an update that adds or renames an
    export, importing it fails with "No export named ...", and a removed export stays importable.
    It also keeps the exports of a stack whose delete failed halfway, which makes the next create of
    that stack fail with "Export names must be unique".
    """
    for backend in all_backends():
        exports: dict[str, Any] = {}
        for stack in live_stacks(backend):
            try:
                exports |= {export.name: export for export in stack.exports}
            except Exception:  # moto cannot compute its outputs: keep what it had registered
                exports |= {
                    n: e for n, e in backend.exports.items() if e.exporting_stack_id == stack.stack_id
                }
        backend.exports.clear()
        backend.exports.update(exports)


def discard_stacks(stack_ids: Iterable[str]) -> None:
    """Forget stacks moto should not have kept, and their exports.

    moto refuses a missing export at once but keeps the stack, stuck in CREATE_IN_PROGRESS: a retry
    gets AlreadyExists, and when an output refers to the failed resource, every DescribeStacks (its
    outputs are computed on each call) is an HTML 500, for every stack and every parallel deploy.
    """
    ids = set(stack_ids)
    for backend in all_backends():
        for stack_id in ids:
            backend.stacks.pop(stack_id, None)
        for name, export in list(backend.exports.items()):
            if export.exporting_stack_id in ids:
                del backend.exports[name]


def in_use_message(verb: str, export: str, users: list[str]) -> str:
    """CloudFormation's words for an export in use: `verb` is "deleted" or "updated"."""
    return f"Export {export} cannot be {verb} as it is in use by {', '.join(users)}"
