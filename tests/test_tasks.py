from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from phasedoit import actions, removal
from phasedoit.config import Phase, Schedule
from phasedoit.planning import ServicePlan, StagePlan
from phasedoit.stack import StackSpec, Target, Verdict
from phasedoit.tasks import deploy_tasks, remove_tasks

TARGET = Target("eu-west-1")
PHASES = (
    Phase(1, "api", ("users-api", "orders-api")),
    Phase(2, None, ("billing-job",)),
    Phase(3, "last", ("audit-job",)),
)


def service(name: str, phase: Phase, stage: str = "prod") -> ServicePlan:
    stack = f"{name}-{stage}"
    request = StackSpec(stack, "{}")
    return ServicePlan(name, phase, "cloudformation", stack, "template.yml", request, {}, "settings")


PLAN = StagePlan(
    app="shop",
    stage="prod",
    phases=PHASES,
    services={name: service(name, phase) for phase in PHASES for name in phase.services},
    target=TARGET,
    run="run-1",
    force=frozenset({"billing-job"}),
)


def by_name(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["basename"] + (f":{t['name']}" if t.get("name") else ""): t for t in tasks}


def test_deploy_graph() -> None:
    tasks = by_name(list(deploy_tasks(PLAN)))
    assert list(tasks) == [
        "deploy", "deploy:users-api", "deploy:orders-api", "deploy-1", "deploy:billing-job", "deploy-2",
        "deploy:audit-job", "deploy-3",
    ]  # fmt: skip
    assert {name: t.get("task_dep") for name, t in tasks.items()} == {
        "deploy": None,  # doit makes a group depend on its subtasks
        "deploy:users-api": [],
        "deploy:orders-api": [],
        "deploy-1": ["deploy:users-api", "deploy:orders-api"],
        "deploy:billing-job": ["deploy-1"],
        "deploy-2": ["deploy:billing-job"],
        "deploy:audit-job": ["deploy-2"],
        "deploy-3": ["deploy:audit-job"],
    }


def test_deploy_docs_name_the_phases() -> None:
    tasks = by_name(list(deploy_tasks(PLAN)))
    assert tasks["deploy"]["doc"] == "deploy shop to stage prod: 3 phases, 4 services, phase by phase"
    assert tasks["deploy-1"]["doc"] == "deploy phase 1 'api': users-api, orders-api"
    assert tasks["deploy-2"]["doc"] == "deploy phase 2: billing-job"
    assert tasks["deploy:billing-job"]["doc"] == "deploy billing-job-prod (phase 2)"


def test_deploy_action_is_plain_data() -> None:
    task = by_name(list(deploy_tasks(PLAN)))["deploy:orders-api"]
    assert task["actions"] == [(actions.deploy_service, [PLAN.services["orders-api"], TARGET, "run-1"])]


def test_deploy_checks_and_forcing() -> None:
    tasks = by_name(list(deploy_tasks(PLAN)))
    checks = {name: tasks[f"deploy:{name}"]["uptodate"][0] for name in PLAN.services}
    assert {name: check.force for name, check in checks.items()} == {
        "users-api": False, "orders-api": False, "billing-job": True, "audit-job": False,
    }  # fmt: skip
    assert checks["audit-job"].plan == PLAN.services["audit-job"]
    everything = by_name(list(deploy_tasks(replace(PLAN, force=frozenset({"all"})))))
    assert all(everything[f"deploy:{name}"]["uptodate"][0].force for name in PLAN.services)


def test_remove_graph_is_reversed() -> None:
    tasks = by_name(list(remove_tasks(PLAN)))
    assert {name: t.get("task_dep") for name, t in tasks.items()} == {
        "remove": None,
        "_check-remove": None,
        "remove:audit-job": ["_check-remove"],
        "remove-3": ["remove:audit-job"],
        "remove:billing-job": ["_check-remove", "remove-3"],
        "remove-2": ["remove:billing-job"],
        "remove:users-api": ["_check-remove", "remove-2"],
        "remove:orders-api": ["_check-remove", "remove-2"],
        "remove-1": ["remove:users-api", "remove:orders-api"],
    }
    assert (
        tasks["remove"]["doc"] == "remove shop's stacks of stage prod: 3 phases, 4 services, last phase first"
    )
    assert tasks["remove:users-api"]["actions"] == [
        (actions.remove_service, [PLAN.services["users-api"], TARGET, False, None])
    ]


def test_remove_one_service_alone() -> None:
    """`doit remove:<service>` removes that one stack: no later phase with it, and never an exporter in use."""
    tasks = by_name(list(remove_tasks(replace(PLAN, protected=True), whole=False)))
    assert {name: t.get("task_dep") for name, t in tasks.items() if name.startswith("remove:")} == {
        "remove:audit-job": ["_confirm-remove"],
        "remove:billing-job": ["_confirm-remove"],
        "remove:users-api": ["_confirm-remove"],
        "remove:orders-api": ["_confirm-remove"],
    }
    assert tasks["remove:users-api"]["actions"] == [
        (actions.remove_service, [PLAN.services["users-api"], TARGET, True, None])
    ]
    assert tasks["_confirm-remove"]["uptodate"] == [
        (
            removal.confirmed,
            ["prod", ["audit-job-prod", "billing-job-prod", "users-api-prod", "orders-api-prod"], False],
            {},
        )
    ]


def test_one_phase_one_service() -> None:
    phase = Phase(1, None, ("only",))
    plan = StagePlan("a", "dev", (phase,), {"only": service("only", phase, "dev")}, TARGET)
    assert next(deploy_tasks(plan))["doc"] == "deploy a to stage dev: 1 phase, 1 service, phase by phase"


def test_a_conditional_upstream_is_named_as_such() -> None:
    """`doit list` names an upstream imported from only under an unknown condition; `doit plan` is told too."""
    first, second = Phase(1, None, ("zone", "alert")), Phase(2, None, ("website",))
    website = replace(
        service("website", second), upstreams=("zone", "alert"), conditional_upstreams=("alert",)
    )
    services = {"zone": service("zone", first), "alert": service("alert", first), "website": website}
    tasks = by_name(list(deploy_tasks(StagePlan("harbor", "prod", (first, second), services, TARGET))))
    assert tasks["deploy-2"]["doc"] == "deploy phase 2: website (after zone, alert (conditional))"
    assert tasks["deploy:website"]["meta"]["phasedoit"] == Verdict(
        "website", "phase 2", ("zone", "alert"), conditional=("alert",)
    )


def test_dependencies_wait_for_upstreams_and_after() -> None:
    services = dict(PLAN.services)
    services["billing-job"] = replace(services["billing-job"], upstreams=("orders-api",))
    services["audit-job"] = replace(services["audit-job"], upstreams=("orders-api",), after=("billing-job",))
    plan = replace(PLAN, services=services, schedule="dependencies")
    tasks = by_name(list(deploy_tasks(plan)))
    assert {name: tasks[f"deploy:{name}"]["task_dep"] for name in plan.services} == {
        "users-api": [],
        "orders-api": [],
        "billing-job": ["deploy:orders-api"],  # not users-api, which the phase before also holds
        "audit-job": ["deploy:orders-api", "deploy:billing-job"],
    }
    # the phases are still there to list and to deploy one at a time
    assert tasks["deploy-2"]["task_dep"] == ["deploy:billing-job"]
    assert tasks["deploy"]["doc"] == (
        "deploy shop to stage prod: 3 phases, 4 services, each service after its upstreams"
    )
    assert tasks["deploy"]["meta"] == {"schedule": "dependencies"}
    assert by_name(list(deploy_tasks(PLAN)))["deploy"]["meta"] == {"schedule": "phases"}


def test_list_names_an_after_once() -> None:
    """`after: [a, a]` is accepted (it waits for a once): `doit list` names it once too."""
    services = dict(PLAN.services)
    services["audit-job"] = replace(
        services["audit-job"], upstreams=("orders-api",), after=("billing-job", "orders-api", "billing-job")
    )
    tasks = by_name(list(deploy_tasks(replace(PLAN, services=services))))
    assert tasks["deploy-3"]["doc"] == "deploy phase 3 'last': audit-job (after orders-api, billing-job)"


@pytest.mark.parametrize(
    ("schedule", "waits"),
    [
        ("phases", {"users-api": ["_check-exports"], "billing-job": ["deploy-1"], "audit-job": ["deploy-2"]}),
        (
            "dependencies",
            {
                "users-api": ["_check-exports"],
                "billing-job": ["deploy:orders-api"],
                "audit-job": ["_check-exports"],
            },
        ),
    ],
)
def test_imports_from_outside_are_checked_first(schedule: Schedule, waits: dict[str, list[str]]) -> None:
    services = dict(PLAN.services)
    services["billing-job"] = replace(services["billing-job"], upstreams=("orders-api",))
    checked = replace(
        PLAN, services=services, external_imports=(("users-api", "dev-VpcId"),), schedule=schedule
    )
    tasks = by_name(list(deploy_tasks(checked)))
    assert {name: tasks[f"deploy:{name}"]["task_dep"] for name in waits} == waits


def test_actions_write_their_own_output() -> None:
    # doit's capture swaps sys.stdout and sys.stderr around each action, which threads would race on
    tasks = [*deploy_tasks(PLAN), *remove_tasks(PLAN)]
    assert {str(t.get("io")) for t in tasks if t.get("actions")} == {"{'capture': False}"}
