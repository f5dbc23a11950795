"""Pure: a stage's plan → doit tasks: groups `deploy` and `remove`, a group per phase, a task per service."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from phasedoit import actions, deployers, removal
from phasedoit.changes import UpToDate
from phasedoit.config import Phase
from phasedoit.planning import StagePlan
from phasedoit.stack import Verdict

Task = dict[str, Any]
CHECK_EXPORTS = "check-exports"
CONFIRM_REMOVAL = "confirm-remove"
CHECK_REMOVAL = "check-remove"


def deploy_tasks(plan: StagePlan) -> Iterator[Task]:
    yield {
        "basename": "deploy",
        "name": None,
        "doc": f"deploy {plan.app} to stage {plan.stage}: {_count(plan)}, phase by phase",
    }
    if plan.external_imports:
        yield _check_exports(plan)
    for phase in plan.phases:
        before = [f"deploy-{phase.number - 1}"] if phase.number > 1 else []
        if phase.number == 1 and plan.external_imports:
            before = [CHECK_EXPORTS]
        for name in phase.services:
            service = plan.services[name]
            yield {
                "basename": "deploy",
                "name": name,
                "doc": f"deploy {service.stack} ({phase.label})",
                "actions": [(actions.deploy_service, [service, plan.target, plan.run])],
                "uptodate": [_check(plan, name)],
                "task_dep": before,
                "meta": {"phasedoit": Verdict(name, phase.label, service.upstreams)},
            }
        yield _phase_group("deploy", phase, [f"deploy:{s}" for s in phase.services], _upstreams(plan))


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
                "actions": [(actions.remove_service, [service, plan.target, not whole])],
                "task_dep": first + after,
                "uptodate": [False],
                "meta": {"phasedoit": Verdict(name, phase.label)},
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
    }


def _check_removal(plan: StagePlan) -> Task:
    stacks = {service.stack: name for name, service in plan.services.items()}
    return {
        "basename": CHECK_REMOVAL,
        "doc": f"check that no stack outside {plan.app} imports an export it removes",
        "actions": [(removal.check_importers, [plan.app, stacks, plan.target])],
        "uptodate": [False],
    }


def _check(plan: StagePlan, name: str) -> UpToDate:
    service = plan.services[name]
    forced = bool({name, "all"} & plan.force)
    on_stack = deployers.get(service.deployer).FINGERPRINT_ON_STACK
    return UpToDate(service, plan.target, plan.run, forced, on_stack)


def _upstreams(plan: StagePlan) -> dict[str, tuple[str, ...]]:
    return {name: service.upstreams for name, service in plan.services.items()}


def _check_exports(plan: StagePlan) -> Task:
    imports = plan.external_imports
    return {
        "basename": CHECK_EXPORTS,
        "doc": f"check that the {len(imports)} export(s) imported from outside {plan.app} exist",
        "actions": [(actions.check_exports, [list(imports), plan.target])],
        "uptodate": [False],
    }


def _phase_group(
    verb: str, phase: Phase, members: list[str], upstreams: Mapping[str, tuple[str, ...]]
) -> Task:
    services = [f"{s} (after {', '.join(upstreams[s])})" if upstreams.get(s) else s for s in phase.services]
    return {
        "basename": f"{verb}-{phase.number}",
        "doc": f"{verb} {phase.label}: {', '.join(services)}",
        "actions": None,
        "task_dep": members,
    }


def _count(plan: StagePlan) -> str:
    phases, services = len(plan.phases), len(plan.services)
    return f"{phases} phase{'s' * (phases != 1)}, {services} service{'s' * (services != 1)}"
