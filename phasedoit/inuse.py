"""Exports in use: CloudFormation refuses an update that removes or changes an export another stack imports,
and says so only when that update runs, after the earlier phases deployed. phasedoit sees it coming.

Each stack carries a digest of its exports' definitions (`phasedoit:exports`): when a service's new template
defines the same exports the same way, no call is made; otherwise its deployed template is compared export
by export, and the exports that change or go are looked up with ListImports, all before the first write.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from doit.exceptions import TaskFailed

from phasedoit.errors import PhasedoitError
from phasedoit.stack import Target, digest

# (service, its stack, its exports: name -> digest of the definition it is about to deploy)
Exporter = tuple[str, str, Mapping[str, str]]


def check(exporters: list[Exporter], target: Target, run: str, stacks: Collection[str]) -> TaskFailed | None:
    """The `_check-exports-in-use` action: one line per export a deploy would break, before any write.

    `run`, `stacks`: the run's id and the app's stacks, read once a run (see `changes.remote_listing`)."""
    try:
        found = problems(exporters, target, run, stacks)
    except PhasedoitError as e:
        return TaskFailed(f"deploy: {e}")
    return TaskFailed("\n".join(found)) if found else None


def problems(exporters: list[Exporter], target: Target, run: str, stacks: Collection[str]) -> list[str]:
    from phasedoit import cloudformation
    from phasedoit.actions import resolve_target
    from phasedoit.changes import remote_listing

    where = resolve_target(target)
    listing = remote_listing(run, target, stacks)
    cfn = cloudformation.client(where)
    found: list[str] = []
    for service, stack, exports in exporters:
        remote = listing.stacks.get(stack)
        if remote is None or not remote.exports or remote.exports_tag == digest(dict(exports)):
            continue
        deployed = cloudformation.export_definitions(cfn, stack)
        going = {name: "remove" for name in deployed if name not in exports}
        going |= {name: "change" for name in deployed if name in exports and deployed[name] != exports[name]}
        for export, importers in sorted(cloudformation.importers(cfn, sorted(going)).items()):
            if importers:
                found.append(_message(service, export, going[export], importers))
    return found


def _message(service: str, export: str, change: str, importers: list[str]) -> str:
    them = ", ".join(sorted(importers))
    return (
        f"{service}: its update would {change} export {export}, which {them} import"
        f"{'s' * (len(importers) == 1)}, and CloudFormation refuses that: deploy {them} without the import"
        f" first, then {service}"
    )
