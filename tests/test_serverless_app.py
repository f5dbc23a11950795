"""Serverless Framework services in an app: found, planned, listed, and deployed by a real `serverless`
process (a fake one the test writes, or none at all)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from doit.dependency import Dependency, SqliteDB
from doit.exceptions import TaskFailed
from doit.task import Task

from phasedoit import actions, changes, local
from phasedoit.changes import Fingerprint
from phasedoit.config import load_config
from phasedoit.deployers.serverless_framework import ServerlessRun
from phasedoit.errors import PhasedoitError
from phasedoit.planning import ServicePlan, StagePlan, plan_stage
from phasedoit.stack import Target, Verdict
from tests.conftest import REPO, Moto, copy_app, doit

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
    assert {name: s.upstreams for name, s in plan.services.items()} == {"api": (), "job": ("api",)}
    job = plan.services["job"]
    assert (job.deployer, job.stack) == ("serverless", "job-qa")
    assert job.request == ServerlessRun(
        str(tmp_path / "services" / "job"),
        "services/job/serverless.yml",
        "job-qa",
        "qa",
        root=str(tmp_path),
        tags={"phasedoit:app": "shop", "phasedoit:stage": "qa", "phasedoit:service": "job"},
        imports=("qa-A",),
    )


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
    assert {name: service.stack for name, service in plan.services.items()} == {
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


def service_plan(stage: str = "dev", name: str = "users-api", app: Path = MONOREPO) -> ServicePlan:
    return plan_stage(load_config(app / "phases.yml"), stage, {}).services[name]


def deploy_action(plan: ServicePlan, target: Target) -> dict[str, object] | TaskFailed:
    """The deploy action as doit's worker runs it, after an uptodate check that found it changed."""
    task = Task(f"deploy:{plan.name}", None, meta={"phasedoit": Verdict(plan.name, "phase 1", (), "fp")})
    return actions.deploy_service(plan, target, "run-1", task)


def test_deploy_without_the_serverless_framework(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, with_serverless=False)))
    failed = deploy_action(service_plan(), Target("eu-west-1"))
    assert isinstance(failed, TaskFailed)
    assert failed.message == (
        "users-api: the Serverless Framework is not installed (npm install -g serverless),"
        " needed to deploy users-api/serverless.yml"
    )


def test_a_failed_serverless_deploy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path)))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "serverless.log"))
    monkeypatch.setenv("FAKE_EXIT", "3")
    failed = deploy_action(service_plan(), Target())
    assert isinstance(failed, TaskFailed)
    assert failed.message == "users-api: serverless deploy failed (exit 3)"
    assert capfd.readouterr().err == "users-api: fake deploy for stage dev\nusers-api: a warning\n"
    assert (tmp_path / "serverless.log").read_text() == f"{MONOREPO / 'users-api'} deploy --stage dev\n"


def test_a_done_serverless_deploy_keeps_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path)))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "serverless.log"))
    assert deploy_action(service_plan(), Target("eu-west-1")) == {
        "run": "run-1",
        "outputs": {},
        "exports": {},
    }
    said = capfd.readouterr().err.splitlines()
    assert said[:2] == ["users-api: fake deploy for stage dev", "users-api: a warning"]
    assert said[2].startswith("users-api: deployed users-api-dev with the Serverless Framework in")
    assert said[3].startswith("users-api: deployed users-api-dev in")
    assert (tmp_path / "serverless.log").read_text() == (
        f"{MONOREPO / 'users-api'} deploy --stage dev --region eu-west-1\n"
    )


def test_remove_runs_serverless_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path)))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "serverless.log"))
    assert actions.remove_service(service_plan("prod", "notify-job"), Target("eu-west-1"), False) is None
    assert (tmp_path / "serverless.log").read_text() == (
        f"{MONOREPO / 'notify-job'} remove --stage prod --region eu-west-1\n"
    )


@pytest.mark.parametrize(
    ("target", "where"),
    [
        (Target(local="/app/.phasedoit"), "the embedded local endpoint"),
        (Target(endpoint="http://127.0.0.1:5000"), "endpoint http://127.0.0.1:5000"),
    ],
)
def test_serverless_never_deploys_to_another_endpoint(tmp_path: Path, target: Target, where: str) -> None:
    # no fake on PATH either: the endpoint is refused before `serverless` is looked for
    plan = service_plan()
    failed = deploy_action(plan, target)
    assert isinstance(failed, TaskFailed)
    assert failed.message == (
        f"users-api: cannot deploy users-api/serverless.yml at {where}: the Serverless Framework works on AWS only"
    )
    removed = actions.remove_service(plan, target, False)
    assert isinstance(removed, TaskFailed)
    assert removed.message == (
        f"users-api: cannot remove users-api/serverless.yml at {where}: the Serverless Framework works on AWS only"
    )


def test_remove_without_the_serverless_framework(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, with_serverless=False)))
    removed = actions.remove_service(service_plan(), Target(), False)
    assert isinstance(removed, TaskFailed)
    assert removed.message == (
        "users-api: the Serverless Framework is not installed (npm install -g serverless),"
        " needed to remove users-api/serverless.yml"
    )
    assert shutil.which("serverless") is None


def check(plan: StagePlan, name: str, values: dict[str, Any], db: Path) -> tuple[bool, Verdict]:
    """The uptodate check of `deploy:<name>` as doit runs it, with a real doit state file."""
    changes._listings.clear()  # one listing per run: a new check is a new run
    verdict = Verdict(name, "phase 1")
    task = Task(f"deploy:{name}", None, meta={"phasedoit": verdict})
    service = plan.services[name]
    uptodate = changes.UpToDate(service, plan.target, plan.run, False, on_stack=False)
    state = Dependency(SqliteDB, str(db))
    try:
        uptodate.setup(state, {})
        return uptodate(task, values), verdict
    finally:
        state.backend._conn.close()  # doit never closes it, and Python 3.13 warns of an unclosed database


def test_an_unchanged_serverless_service_is_skipped(
    monorepo: Path, moto: Moto, aws_env: dict[str, str], tmp_path: Path
) -> None:
    # its stack as the framework made it: without phasedoit's tags
    moto.client().create_stack(StackName="users-api-dev", TemplateBody='{"Resources": {}}')
    plan = plan_stage(load_config(monorepo / "phases.yml"), "dev", os.environ)
    deployed, verdict = check(plan, "users-api", {}, tmp_path / "db")
    assert (deployed, verdict.reasons) == (False, ["stack not deployed by phasedoit"])
    saved = Fingerprint(
        {**plan.services["users-api"].files, **changes.watched_hashes(plan.services["users-api"].watched)},
        plan.services["users-api"].settings,
        {},
    ).saved()
    assert saved["fingerprint"] == verdict.fingerprint
    assert check(plan, "users-api", saved, tmp_path / "db") == (
        True,
        Verdict("users-api", "phase 1", (), saved["fingerprint"]),
    )
    (monorepo / "users-api" / "README.md").write_text("not excluded: the framework may package it\n")
    common = monorepo / "serverless.common.yml"
    common.write_text(common.read_text() + "# shared by every service\n")
    plan = plan_stage(load_config(monorepo / "phases.yml"), "dev", os.environ)
    deployed, verdict = check(plan, "users-api", saved, tmp_path / "db")
    assert (deployed, verdict.reasons) == (False, ["changed files: ../serverless.common.yml, README.md"])


@pytest.mark.parametrize(
    ("account", "message"),
    [
        (
            "000000000000",
            "users-api: the AWS credentials in use are for another account than phases.yml's stages.prod.account",
        ),
        (
            None,
            "users-api: cannot deploy users-api/serverless.yml at endpoint <moto>: the Serverless Framework works on AWS only",
        ),
    ],
)
@pytest.mark.usefixtures("aws_env")
def test_serverless_guards_with_aws_endpoint_url(
    monorepo: Path, moto: Moto, tmp_path: Path, account: str | None, message: str
) -> None:
    phases = monorepo / "phases.yml"
    phases.write_text(phases.read_text().replace('"000000000000"', f'"{account or moto.account()}"'))
    env = {
        **os.environ,
        "PATH": f"{fake_bin(tmp_path)}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "log"),
    }
    result = doit(monorepo, "deploy:users-api", "stage=prod", env=env)
    assert result.returncode == 1
    assert result.stderr.replace(moto.url, "<moto>").splitlines()[-1] == message
    assert not (tmp_path / "log").exists()  # the framework never ran


@pytest.mark.parametrize("account", ["000000000000", None])
def test_serverless_guards_with_an_endpoint_in_phases_yml(
    monorepo: Path, moto: Moto, credentials: dict[str, str], tmp_path: Path, account: str | None
) -> None:
    phases = monorepo / "phases.yml"
    text = phases.read_text().replace('"000000000000"', f'"{account or moto.account()}"')
    phases.write_text(text + f"    endpoint: {moto.url}\n")
    env = {
        **os.environ,
        "PATH": f"{fake_bin(tmp_path)}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "log"),
    }
    result = doit(monorepo, "deploy:users-api", "stage=prod", env=env)
    assert result.returncode == 1
    expected = (
        "users-api: the AWS credentials in use are for another account than phases.yml's stages.prod.account"
        if account
        else f"users-api: cannot deploy users-api/serverless.yml at endpoint {moto.url}: the Serverless Framework works on AWS only"
    )
    assert result.stderr.splitlines()[-1] == expected
    assert not (tmp_path / "log").exists()


def test_serverless_services_are_skipped_on_the_local_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's CloudFormation services deploy locally; a Serverless one deployed by the framework itself
    (`deploy_with: framework`) is skipped, and so are its importers."""
    for name in [n for n in os.environ if n.startswith(("AWS_", "PHASEDOIT_"))]:
        monkeypatch.delenv(name)
    exporting_job = IMPORTER + "resources: {Outputs: {J: {Value: j, Export: {Name: '${sls:stage}-J'}}}}\n"
    write(tmp_path / "app" / "services" / "job" / "serverless.yml", exporting_job)
    write(tmp_path / "app" / "services" / "api" / "template.yml", EXPORTER)
    cache = "{Type: AWS::ElastiCache::CacheCluster, Properties: {CacheNodeType: cache.t3.micro}}"
    write(tmp_path / "app" / "services" / "other" / "template.yml", f"Resources: {{C: {cache}}}\n")
    write(
        tmp_path / "app" / "services" / "after" / "template.yml",
        TEMPLATE + "Outputs: {B: {Value: !ImportValue dev-J}}\n",
    )
    write(
        tmp_path / "app" / "phases.yml",
        "app: shop\nservices: {job: {deploy_with: framework}}\nstages: {dev: {endpoint: local}}\n",
    )
    app = copy_app(tmp_path / "app", tmp_path / "copy")
    try:
        listed = doit(app, "list")
        assert listed.stderr == ""
        assert listed.stdout.splitlines()[1:3] == [
            "deploy-1   deploy phase 1: api, other",
            "deploy-2   deploy phase 2: job (after api; skipped: the Serverless Framework deploys to AWS only, not to the local endpoint)",
        ]
        plan = doit(app, "plan")
        assert plan.stderr.splitlines()[0] == (  # `doit plan` says what the local endpoint will not create
            "warning: other: moto does not model AWS::ElastiCache::CacheCluster;"
            " the local endpoint creates the stack without it"
        )
        assert plan.stdout.splitlines() == [
            "2 of 4 services would deploy (schedule: phases)",
            "phase 1",
            "  api                    deploys: never deployed",
            "  other                  deploys: never deployed",
            "phase 2",
            "  job                    skipped: the Serverless Framework deploys to AWS only, not to the local endpoint",
            "phase 3",
            "  after                  skipped: it imports from job, which is skipped",
        ]
        result = doit(app, "-n", "2", "deploy")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1].startswith("2 deployed, 2 skipped (")
        assert (
            "job: skipped (the Serverless Framework deploys to AWS only, not to the local endpoint)"
            in result.stdout.splitlines()
        )
        assert "after: skipped (it imports from job, which is skipped)" in result.stdout.splitlines()
    finally:
        local.stop_endpoint(app / ".phasedoit")
