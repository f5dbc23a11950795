"""Pure: a planned app → doit tasks: groups `deploy` and `remove`, a group per phase, a task per service."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from phasedoit import actions, framework
from phasedoit.changes import Inputs, UpToDate
from phasedoit.config import Phase
from phasedoit.graph import Graph
from phasedoit.stack import StackSpec, Target

Task = dict[str, Any]
CHECK_EXPORTS = "check-exports"


@dataclass(frozen=True)
class Plan:
    """What one run deploys: the app for one stage, each service's stack already resolved."""

    app: str
    stage: str
    phases: Sequence[Phase]
    stacks: dict[str, StackSpec]
    target: Target
    run: str = ""  # this run's id: an exporter's values tell its importers' checks it deployed in this run
    upstreams: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # the services each imports from
    external_imports: tuple[tuple[str, str], ...] = ()  # (importer, export) no service of the app exports
    inputs: Mapping[str, Inputs] = field(default_factory=dict)
    force: frozenset[str] = frozenset()  # services deployed even if up to date; "all" for every one
    graph: Graph = field(default_factory=lambda: Graph((), (), ()))  # imports between services, for drawings
    serverless: Mapping[str, framework.ServerlessRun] = field(
        default_factory=dict
    )  # services Serverless deploys


def deploy_tasks(plan: Plan) -> Iterator[Task]:
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
        for service in phase.services:
            yield {
                "basename": "deploy",
                "name": service,
                "doc": f"deploy {plan.stacks[service].name} ({phase.label})",
                "actions": [_deploy(plan, service)],
                "uptodate": [
                    framework.always_deploys if service in plan.serverless else _check(plan, service)
                ],
                "task_dep": before,
                "meta": {
                    "phasedoit": {
                        "service": service,
                        "phase": phase.label,
                        "upstreams": plan.upstreams.get(service, ()),
                    }
                },
            }
        yield _phase_group("deploy", phase, [f"deploy:{s}" for s in phase.services], plan.upstreams)


def remove_tasks(plan: Plan) -> Iterator[Task]:
    yield {
        "basename": "remove",
        "name": None,
        "doc": f"remove {plan.app}'s stacks of stage {plan.stage}: {_count(plan)}, last phase first",
    }
    last = len(plan.phases)
    for phase in reversed(plan.phases):
        after = [f"remove-{phase.number + 1}"] if phase.number < last else []
        for service in phase.services:
            stack = plan.stacks[service].name
            yield {
                "basename": "remove",
                "name": service,
                "doc": f"remove {stack} ({phase.label})",
                "actions": [_remove(plan, service)],
                "task_dep": after,
                "uptodate": [False],
                "meta": {"phasedoit": {"service": service, "phase": phase.label}},
            }
        yield _phase_group("remove", phase, [f"remove:{s}" for s in phase.services], {})


def _deploy(plan: Plan, service: str) -> tuple[Any, list[Any]]:
    if service in plan.serverless:
        return actions.deploy_serverless, [service, plan.serverless[service], plan.target, plan.run]
    return actions.deploy_service, [service, plan.stacks[service], plan.target, plan.run]


def _remove(plan: Plan, service: str) -> tuple[Any, list[Any]]:
    if service in plan.serverless:
        return actions.remove_serverless, [service, plan.serverless[service], plan.target]
    return actions.remove_service, [service, plan.stacks[service].name, plan.target]


def _check(plan: Plan, service: str) -> UpToDate:
    forced = bool({service, "all"} & plan.force)
    return UpToDate(plan.stacks[service].name, plan.inputs[service], plan.target, plan.run, forced)


def _check_exports(plan: Plan) -> Task:
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


def _count(plan: Plan) -> str:
    phases, services = len(plan.phases), len(plan.stacks)
    return f"{phases} phase{'s' * (phases != 1)}, {services} service{'s' * (services != 1)}"
