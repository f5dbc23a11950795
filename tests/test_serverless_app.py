"""Serverless Framework services in an app: found, planned, listed, and deployed by a real `serverless`
process (a fake one the test writes, or none at all)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from doit.exceptions import TaskFailed

from phasedoit import actions
from phasedoit.config import load_config
from phasedoit.errors import PhasedoitError
from phasedoit.framework import ALWAYS, ServerlessRun
from phasedoit.loader import plan_stage
from phasedoit.stack import Target
from tests.conftest import REPO, copy_app, doit

MONOREPO = REPO / "tests" / "fixtures" / "serverless-monorepo"
# Records its working folder and arguments, says something on stdout and stderr, exits with $FAKE_EXIT.
FAKE_SERVERLESS = """#!/bin/sh
echo "$(pwd) $*" >> "$FAKE_LOG"
echo "fake $1 for stage $3"
echo "a warning" >&2
exit "${FAKE_EXIT:-0}"
"""


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    return copy_app(MONOREPO, tmp_path / "app")


def fake_bin(tmp_path: Path, *, with_serverless: bool = True) -> Path:
    """A folder for PATH: a fake `serverless`, or nothing (the Serverless Framework not installed)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    if with_serverless:
        script = folder / "serverless"
        script.write_text(FAKE_SERVERLESS)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def run_doit(app: Path, bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`doit` with only `bin_dir` on PATH, and none of the test runner's AWS or phasedoit settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHASEDOIT_"))}
    env |= {"PATH": str(bin_dir), "FAKE_LOG": str(app / "serverless.log")}
    return doit(app, *args, env=env)


def calls(app: Path) -> list[str]:
    return (app / "serverless.log").read_text().replace(str(app), "<app>").splitlines()


def test_config_finds_serverless_services() -> None:
    app = load_config(MONOREPO / "phases.yml")
    assert {name: app.shown(s.template) for name, s in app.services.items()} == {
        "users-api": "users-api/serverless.yml",
        "orders-api": "orders-api/serverless.yml",
        "notify-job": "notify-job/serverless.yml",
    }
    assert all(service.serverless for service in app.services.values())


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


TEMPLATE = "Resources: {T: {Type: AWS::SNS::Topic}}\n"
EXPORTER = (
    TEMPLATE
    + "Outputs: {A: {Value: a, Export: {Name: !Sub '${Stage}-A'}}}\nParameters: {Stage: {Type: String}}\n"
)
IMPORTER = (
    "service: job\nprovider: {name: aws}\nfunctions: {f: {environment: {A: !ImportValue '${sls:stage}-A'}}}\n"
)


def test_a_template_wins_over_serverless_yml(tmp_path: Path) -> None:
    write(tmp_path / "services" / "api" / "serverless.yml", IMPORTER)
    write(tmp_path / "services" / "api" / "template.yml", TEMPLATE)
    write(tmp_path / "phases.yml", "app: shop\nphases: [[api]]\n")
    service = load_config(tmp_path / "phases.yml").services["api"]
    assert (service.template.name, service.serverless) == ("template.yml", False)


def test_serverless_yml_named_as_template(tmp_path: Path) -> None:
    write(tmp_path / "services" / "api" / "serverless.yml", IMPORTER)
    write(tmp_path / "services" / "api" / "template.yml", TEMPLATE)
    write(tmp_path / "phases.yml", "app: shop\nservices: {api: {template: serverless.yml}}\n")
    assert load_config(tmp_path / "phases.yml").services["api"].serverless


@pytest.mark.parametrize(
    ("setting", "key"),
    [("stack_name: x", "stack_name"), ("parameters: {A: b}", "parameters"), ("tags: {a: b}", "tags")],
)
def test_cloudformation_settings_of_a_serverless_service(tmp_path: Path, setting: str, key: str) -> None:
    write(tmp_path / "services" / "job" / "serverless.yml", IMPORTER)
    write(tmp_path / "phases.yml", f"app: shop\nservices: {{job: {{{setting}}}}}\n")
    with pytest.raises(PhasedoitError) as e:
        load_config(tmp_path / "phases.yml")
    assert str(e.value) == (
        f"phases.yml: services.job.{key}: not used by a Serverless Framework service (services/job/serverless.yml)"
    )


def test_computed_phases_across_templates_and_serverless(tmp_path: Path) -> None:
    write(tmp_path / "services" / "job" / "serverless.yml", IMPORTER)
    write(tmp_path / "services" / "api" / "template.yml", EXPORTER)
    write(tmp_path / "phases.yml", "app: shop\n")
    plan = plan_stage(load_config(tmp_path / "phases.yml"), "qa", {})
    assert [phase.services for phase in plan.phases] == [("api",), ("job",)]
    assert plan.upstreams == {"api": (), "job": ("api",)}
    assert plan.stacks["job"].name == "job-qa"
    assert plan.serverless == {
        "job": ServerlessRun(
            str(tmp_path / "services" / "job"), "services/job/serverless.yml", "job-qa", "qa"
        )
    }


def test_serverless_phases_contradicting_imports(tmp_path: Path) -> None:
    write(tmp_path / "services" / "job" / "serverless.yml", IMPORTER)
    write(tmp_path / "services" / "api" / "template.yml", EXPORTER)
    write(tmp_path / "phases.yml", "app: shop\nphases: [[job, api]]\n")
    with pytest.raises(PhasedoitError) as e:
        plan_stage(load_config(tmp_path / "phases.yml"), None, {})
    assert str(e.value) == (
        "phases.yml: phases: job (phase 1) imports dev-A from api (phase 1): move job to a phase after 1"
    )


@pytest.mark.parametrize(
    ("stage", "phases"),
    [
        ("dev", [("users-api", "orders-api"), ("notify-job",)]),
        ("prod", [("users-api",), ("orders-api",), ("notify-job",)]),
    ],
)
def test_plan_of_the_monorepo(stage: str, phases: list[tuple[str, ...]]) -> None:
    plan = plan_stage(load_config(MONOREPO / "phases.yml"), stage, {})
    assert [phase.services for phase in plan.phases] == phases
    assert {name: stack.name for name, stack in plan.stacks.items()} == {
        "users-api": f"users-api-{stage}",
        "orders-api": f"orders-api-{stage}",
        "notify-job": f"notify-job-{stage}",
    }


def test_doit_list(monorepo: Path, tmp_path: Path) -> None:
    result = run_doit(monorepo, fake_bin(tmp_path, with_serverless=False), "list", "--all", "stage=prod")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "deploy              deploy shop to stage prod: 3 phases, 3 services, phase by phase",
        "deploy-1            deploy phase 1: users-api",
        "deploy-2            deploy phase 2: orders-api (after users-api)",
        "deploy-3            deploy phase 3: notify-job (after users-api, orders-api)",
        "deploy:notify-job   deploy notify-job-prod (phase 3)",
        "deploy:orders-api   deploy orders-api-prod (phase 2)",
        "deploy:users-api    deploy users-api-prod (phase 1)",
        "remove              remove shop's stacks of stage prod: 3 phases, 3 services, last phase first",
        "remove-1            remove phase 1: users-api",
        "remove-2            remove phase 2: orders-api",
        "remove-3            remove phase 3: notify-job",
        "remove:notify-job   remove notify-job-prod (phase 3)",
        "remove:orders-api   remove orders-api-prod (phase 2)",
        "remove:users-api    remove users-api-prod (phase 1)",
    ]


def test_deploy_without_the_serverless_framework(monorepo: Path, tmp_path: Path) -> None:
    result = run_doit(monorepo, fake_bin(tmp_path, with_serverless=False), "deploy:users-api")
    assert result.returncode == 1
    assert (
        "users-api: the Serverless Framework is not installed (npm install -g serverless),"
        " needed to deploy users-api/serverless.yml"
    ) in result.stderr.splitlines()


def test_deploy_runs_serverless_phase_by_phase(monorepo: Path, tmp_path: Path) -> None:
    result = run_doit(monorepo, fake_bin(tmp_path), "-n", "2", "deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    first, second, third = calls(monorepo)
    assert sorted([first, second]) == [
        "<app>/orders-api deploy --stage dev --region eu-west-1",
        "<app>/users-api deploy --stage dev --region eu-west-1",
    ]
    assert third == "<app>/notify-job deploy --stage dev --region eu-west-1"
    assert f"notify-job: deploying ({ALWAYS})" in result.stdout.splitlines()
    said = result.stderr.splitlines()
    assert "notify-job: fake deploy for stage dev" in said
    assert "notify-job: a warning" in said
    assert any(
        line.startswith("notify-job: deployed notify-job-dev with the Serverless Framework in")
        for line in said
    )


def test_serverless_services_always_deploy(monorepo: Path, tmp_path: Path) -> None:
    assert run_doit(monorepo, fake_bin(tmp_path), "deploy").returncode == 0
    result = run_doit(monorepo, fake_bin(tmp_path), "plan")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        "3 of 3 services would deploy\n"
        "phase 1\n"
        f"  users-api              deploys: {ALWAYS}\n"
        f"  orders-api             deploys: {ALWAYS}\n"
        "phase 2\n"
        f"  notify-job             deploys: {ALWAYS}\n"
    )


def test_remove_runs_serverless_last_phase_first(monorepo: Path, tmp_path: Path) -> None:
    result = run_doit(monorepo, fake_bin(tmp_path), "remove", "stage=prod")
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls(monorepo) == [
        "<app>/notify-job remove --stage prod --region eu-west-1",
        "<app>/orders-api remove --stage prod --region eu-west-1",
        "<app>/users-api remove --stage prod --region eu-west-1",
    ]
    assert "users-api: removed users-api-prod with the Serverless Framework" in result.stderr.splitlines()


def test_a_failed_serverless_deploy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path)))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "serverless.log"))
    monkeypatch.setenv("FAKE_EXIT", "3")
    sls = ServerlessRun(str(MONOREPO / "users-api"), "users-api/serverless.yml", "users-api-dev", "dev")
    failed = actions.deploy_serverless("users-api", sls, Target(), "run-1")
    assert isinstance(failed, TaskFailed)
    assert failed.message == "users-api: serverless deploy failed (exit 3)"
    assert capfd.readouterr().err == "users-api: fake deploy for stage dev\nusers-api: a warning\n"
    assert (tmp_path / "serverless.log").read_text() == f"{MONOREPO / 'users-api'} deploy --stage dev\n"


def test_a_done_serverless_deploy_keeps_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path)))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "serverless.log"))
    sls = ServerlessRun(str(MONOREPO / "users-api"), "users-api/serverless.yml", "users-api-dev", "dev")
    assert actions.deploy_serverless("users-api", sls, Target("eu-west-1"), "run-1") == {"run": "run-1"}


@pytest.mark.parametrize(
    ("target", "where"),
    [
        (Target(local="/app/.phasedoit"), "the embedded local endpoint"),
        (Target(endpoint="http://127.0.0.1:5000"), "endpoint http://127.0.0.1:5000"),
    ],
)
def test_serverless_never_deploys_to_another_endpoint(tmp_path: Path, target: Target, where: str) -> None:
    # no fake on PATH either: the endpoint is refused before `serverless` is looked for
    sls = ServerlessRun(str(tmp_path), "services/job/serverless.yml", "job-dev", "dev")
    failed = actions.deploy_serverless("job", sls, target, "run-1")
    assert isinstance(failed, TaskFailed)
    assert failed.message == (
        f"job: cannot deploy services/job/serverless.yml at {where}: the Serverless Framework works on AWS only"
    )
    removed = actions.remove_serverless("job", sls, target)
    assert isinstance(removed, TaskFailed)
    assert removed.message.startswith("job: cannot remove services/job/serverless.yml at ")


def test_remove_without_the_serverless_framework(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, with_serverless=False)))
    sls = ServerlessRun(str(tmp_path), "services/job/serverless.yml", "job-dev", "dev")
    removed = actions.remove_serverless("job", sls, Target())
    assert isinstance(removed, TaskFailed)
    assert removed.message == (
        "job: the Serverless Framework is not installed (npm install -g serverless),"
        " needed to remove services/job/serverless.yml"
    )
    assert shutil.which("serverless") is None
