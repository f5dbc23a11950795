"""Pure: a stage's plan → doit tasks: groups `deploy` and `remove`, a group per phase, a task per service.

The schedule is in the `task_dep`s: with `phases`, a service's task waits for the phase before its own;
with `dependencies`, for the services it imports from and those it is declared `after:`. Either way
`deploy:<service>` deploys what it waits for first, and phases stay what `doit list` and `remove` show.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from phasedoit import actions, deployers, graph, inuse, removal
from phasedoit.changes import UpToDate
from phasedoit.config import Phase
from phasedoit.planning import ServicePlan, StagePlan
from phasedoit.runrecord import Record
from phasedoit.stack import Verdict

Task = dict[str, Any]
# Checks that run before the first write: private to doit (a leading `_`), so `doit list` shows the phases.
CHECK_EXPORTS = "_check-exports"
CHECK_IN_USE = "_check-exports-in-use"
CONFIRM_REMOVAL = "_confirm-remove"
CHECK_REMOVAL = "_check-remove"
SCHEDULED = {"phases": "phase by phase", "dependencies": "each service after its upstreams"}
# Actions say what they do through the run's record (or on stderr) themselves. doit's capture swaps the
# global sys.stdout and sys.stderr around each action: with `-P thread`, concurrent actions would restore
# each other's swaps; without it, each swap puts back the stream already in place.
NO_CAPTURE = {"capture": False}


def deploy_tasks(plan: StagePlan, requested: Collection[str] = ()) -> Iterator[Task]:
    """`requested`: the tasks doit was asked to run; the imports from outside the app are checked for the
    services those tasks deploy only (all of them unless only `deploy:<service>` tasks are asked for).
    """
    yield {
        "basename": "deploy",
        "name": None,
        "doc": f"deploy {plan.app} to stage {plan.stage}: {_count(plan)}, {SCHEDULED[plan.schedule]}",
        "meta": {"schedule": plan.schedule},
    }
    tasks: list[Task] = []
    stacks = tuple(service.stack for service in plan.services.values())
    for phase in plan.phases:
        for name in phase.services:
            service = plan.services[name]
            tasks.append(
                {
                    "basename": "deploy",
                    "name": name,
                    "doc": f"deploy {service.stack} ({phase.label})",
                    "actions": [(actions.deploy_service, [service, plan.target, plan.run])],
                    "uptodate": [_check(plan, name, stacks)],
                    "task_dep": _waits_for(plan, phase, name),
                    "io": NO_CAPTURE,
                    "meta": {"phasedoit": _verdict(service, phase, _record(plan))},
                }
            )
        members = [f"deploy:{s}" for s in phase.services]
        tasks.append(_phase_group("deploy", phase, members, _notes(plan)))
    deploying = _run_by(tasks, requested)
    checks: list[Task] = []
    external = [(importer, export) for importer, export in plan.external_imports if importer in deploying]
    if external:
        checks.append(_check_exports(plan, external))
    exporters = [
        (name, s.stack, s.exports) for name, s in plan.services.items() if s.exports and name in deploying
    ]
    if exporters:
        checks.append(
            {
                "basename": CHECK_IN_USE,
                "doc": "check that no deploy removes or changes an export another stack imports",
                "actions": [(inuse.check, [exporters, plan.target, plan.run, stacks])],
                "uptodate": [False],
                "io": NO_CAPTURE,
            }
        )
    for task in tasks:  # what waits for nothing waits for the checks: nothing is written before they pass
        if task["basename"] == "deploy" and not task["task_dep"]:
            task["task_dep"] = [check["basename"] for check in checks]
    yield from checks
    yield from tasks


def _run_by(tasks: list[Task], requested: Collection[str]) -> set[str]:
    """The services whose deploy tasks run when doit runs `requested` (every one for a whole deploy)."""
    names = {_name(task): task for task in tasks}
    wanted = [name for name in requested if name in names]
    if not wanted or any(not name.startswith("deploy:") for name in wanted):
        wanted = list(names)
    seen: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name not in seen:
            seen.add(name)
            wanted.extend(names[name].get("task_dep", []))
    return {name.split(":", 1)[1] for name in seen if name.startswith("deploy:")}


def _name(task: Task) -> str:
    return f"{task['basename']}:{task['name']}" if task.get("name") else str(task["basename"])


def remove_tasks(plan: StagePlan, whole: bool = True) -> Iterator[Task]:
    """`whole`: the stage is removed, last phase first, after checking no stack outside it imports from it.

    Otherwise each service's removal stands alone: `remove:<service>` removes that one stack, and refuses
    while any stack imports one of its exports.
    """
    yield {
        "basename": "remove",
        "name": None,
        "doc": f"remove {plan.app}'s stacks of stage {plan.stage}: {_count(plan)}, last phase first",
    }
    first: list[str] = []
    if plan.protected:
        yield _confirm_removal(plan)
        first.append(CONFIRM_REMOVAL)
    if whole:
        yield _check_removal(plan)
        first.append(CHECK_REMOVAL)
    last = len(plan.phases)
    for phase in reversed(plan.phases):
        after = [f"remove-{phase.number + 1}"] if whole and phase.number < last else []
        for name in phase.services:
            service = plan.services[name]
            yield {
                "basename": "remove",
                "name": name,
                "doc": f"remove {service.stack} ({phase.label})",
                "actions": [(actions.remove_service, [service, plan.target, not whole, _record(plan)])],
                "task_dep": first + after,
                "uptodate": [False],
                "io": NO_CAPTURE,
                "meta": {"phasedoit": Verdict(name, phase.label, record=_record(plan))},
            }
        yield _phase_group("remove", phase, [f"remove:{s}" for s in phase.services], {})


def _confirm_removal(plan: StagePlan) -> Task:
    stacks = [plan.services[name].stack for phase in reversed(plan.phases) for name in phase.services]
    return {
        "basename": CONFIRM_REMOVAL,
        "doc": f"ask before removing stacks of the protected stage {plan.stage}",
        # asked in doit's main process, which has the terminal: doit checks uptodate there, one at a time
        "uptodate": [(removal.confirmed, [plan.stage, stacks, plan.confirmed], {})],
        "actions": [(removal.not_confirmed, [plan.stage])],
        "io": NO_CAPTURE,
    }


def _check_removal(plan: StagePlan) -> Task:
    stacks = {service.stack: name for name, service in plan.services.items()}
    return {
        "basename": CHECK_REMOVAL,
        "doc": f"check that no stack outside {plan.app} imports an export it removes",
        "actions": [(removal.check_importers, [plan.app, stacks, plan.target])],
        "uptodate": [False],
        "io": NO_CAPTURE,
    }


def _record(plan: StagePlan) -> Record | None:
    return Record(plan.record, plan.app, plan.stage, plan.run) if plan.record else None


def _waits_for(plan: StagePlan, phase: Phase, name: str) -> list[str]:
    if plan.schedule == "dependencies":
        service = plan.services[name]
        return [f"deploy:{s}" for s in dict.fromkeys(service.upstreams + service.after)]
    return [f"deploy-{phase.number - 1}"] if phase.number > 1 else []


def _check(plan: StagePlan, name: str, stacks: tuple[str, ...]) -> UpToDate:
    service = plan.services[name]
    forced = bool({name, "all"} & plan.force)
    on_stack = deployers.get(service.deployer).FINGERPRINT_ON_STACK
    return UpToDate(service, plan.target, plan.run, forced, on_stack, stacks=stacks)


def _verdict(service: ServicePlan, phase: Phase, record: Record | None) -> Verdict:
    conditional = service.conditional_upstreams
    return Verdict(
        service.name,
        phase.label,
        service.upstreams,
        conditional=conditional,
        after=service.after,
        notes=service.notes,
        record=record,
    )


def _notes(plan: StagePlan) -> dict[str, str]:
    """What `doit list` says of each service: what it waits for (an upstream it may not import from named
    as conditional), and whether it is skipped here.
    """
    notes = {}
    for name, service in plan.services.items():
        upstreams = graph.labels(service.upstreams, service.conditional_upstreams)
        upstreams += [other for other in dict.fromkeys(service.after) if other not in service.upstreams]
        after = f"after {', '.join(upstreams)}" if upstreams else ""
        notes[name] = "; ".join(filter(None, [after, "skipped: " + service.skip if service.skip else ""]))
    return notes


def _check_exports(plan: StagePlan, imports: list[tuple[str, str]]) -> Task:
    return {
        "basename": CHECK_EXPORTS,
        "doc": f"check that the {len(imports)} export(s) imported from outside {plan.app} exist",
        # the app's own exports: a missing import that is one of them mistyped gets a "did you mean"
        "actions": [(actions.check_exports, [imports, plan.target, dict(plan.graph.exports)])],
        "uptodate": [False],
        "io": NO_CAPTURE,
    }


def _phase_group(verb: str, phase: Phase, members: list[str], notes: Mapping[str, str]) -> Task:
    services = [f"{s} ({notes[s]})" if notes.get(s) else s for s in phase.services]
    return {
        "basename": f"{verb}-{phase.number}",
        "doc": f"{verb} {phase.label}: {', '.join(services)}",
        "actions": None,
        "task_dep": members,
    }


def _count(plan: StagePlan) -> str:
    phases, services = len(plan.phases), len(plan.services)
    return f"{phases} phase{'s' * (phases != 1)}, {services} service{'s' * (services != 1)}"
