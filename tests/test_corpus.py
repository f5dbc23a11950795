"""Three small multi-template apps written for these tests (tests/corpus/*/README.md), planned as a user would.

They follow the patterns of public apps: parents' stack names as parameters (`${ParentVPCStack}-VpcId`),
names joined with ':' or '-', `Fn::Join` and `Fn::Sub` with a variables map, optional parents decided by
Conditions, an Output exported under a condition, imports from outside the app, parameters without a
default set in phases.yml or read from the environment, and an import that nearly names an export.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from doit.exceptions import TaskFailed

from phasedoit import tasks
from phasedoit.config import load_config
from phasedoit.errors import PhasedoitError
from phasedoit.graph import Edge
from phasedoit.parameters import Secret
from phasedoit.planning import StagePlan, plan_stage
from tests.conftest import copy_app, doit
from tests.faults import Layer

CORPUS = Path(__file__).parent / "corpus"
PASSWORD = {"LEDGER_DB_PASSWORD": "correct horse battery"}


def plan(app: str, stage: str, environ: dict[str, str] | None = None) -> StagePlan:
    return plan_stage(load_config(CORPUS / app / "phases.yml"), stage, environ or {})


def phases(found: StagePlan) -> list[tuple[str, ...]]:
    return [phase.services for phase in found.phases]


def harbor_edges(stage: str, conditional: bool) -> list[Edge]:
    """harbor's edges on a stage whose alerts go to its own topic; `conditional`: the website's alarm may not
    exist (the region is unknown), so it may not import the topic.
    """
    return [
        Edge("bastion", "alert", f"alert-{stage}-TopicArn"),
        Edge("bastion", "vpc", f"vpc-{stage}-VpcId"),
        Edge("vpc", "alert", f"alert-{stage}-TopicArn"),
        Edge("website", "zone", f"zone-{stage}-HostedZoneId"),
        Edge("website", "zone", f"zone-{stage}-HostedZoneName"),
        Edge("website", "alert", f"alert-{stage}-TopicArn", conditional),
    ]


@pytest.mark.parametrize(
    ("stage", "conditional"),
    [
        # no region: the website's alarm (us-east-1 only) may exist; it is ordered after the topic anyway
        ("dev", True),
        ("prod", False),  # us-east-1
    ],
)
def test_harbor_computed_phases(stage: str, conditional: bool, capsys: pytest.CaptureFixture[str]) -> None:
    found = plan("harbor", stage)
    assert phases(found) == [("zone", "alert"), ("vpc", "website"), ("bastion",)]
    assert list(found.graph.edges) == harbor_edges(stage, conditional)
    assert (found.external_imports, found.graph.unchecked, capsys.readouterr().err) == ((), (), "")
    website = found.services["website"]
    assert (website.upstreams, website.conditional_upstreams) == (
        ("zone", "alert"),
        ("alert",) if conditional else (),
    )


def test_harbor_without_alerts(capsys: pytest.CaptureFixture[str]) -> None:
    """ParentAlertStack '' makes HasAlerts false: its `!If` and its resources' imports do not exist."""
    found = plan("harbor", "eu")
    assert phases(found) == [("zone", "alert", "vpc"), ("bastion", "website")]
    assert list(found.graph.edges) == [
        Edge("bastion", "vpc", "vpc-eu-VpcId"),
        Edge("website", "zone", "zone-eu-HostedZoneId"),
        Edge("website", "zone", "zone-eu-HostedZoneName"),
    ]
    assert (found.external_imports, capsys.readouterr().err) == ((), "")


def test_harbor_conditional_output() -> None:
    """The flow logs' export is an Output with `Condition: HasFlowLogs`: on prod only (FlowLogs: 'true')."""
    vpc = ["vpc-{}-PublicSubnetId", "vpc-{}-VpcId"]
    assert sorted(plan("harbor", "dev").services["vpc"].exports) == [name.format("dev") for name in vpc]
    assert sorted(plan("harbor", "prod").services["vpc"].exports) == sorted(
        name.format("prod") for name in [*vpc, "vpc-{}-FlowLogGroupName"]
    )


def test_harbor_alerts_from_another_app(capsys: pytest.CaptureFixture[str]) -> None:
    found = plan("harbor", "shared")
    assert phases(found) == [("zone", "alert", "vpc"), ("bastion", "website")]
    # the unconditional imports from outside the app are checked before anything deploys…
    assert found.external_imports == (("bastion", "ops-alerts-TopicArn"), ("vpc", "ops-alerts-TopicArn"))
    [check] = [task for task in tasks.deploy_tasks(found) if task["basename"] == tasks.CHECK_EXPORTS]
    assert check["doc"] == "check that the 2 export(s) imported from outside harbor exist"
    # …the conditional one cannot be: a warning says so
    assert capsys.readouterr().err == (
        "warning: services/website/template.yml: Resources.HealthAlarm.Properties.AlarmActions[0]:"
        ' Fn::ImportValue {"Fn::Sub": "${ParentAlertStack}-TopicArn"} imports ops-alerts-TopicArn only when'
        " condition HasHealthAlarm is true, which cannot be known before deploying (no known value for"
        " AWS::Region); no service of this app exports it, so it is not checked before deploying\n"
    )


def test_ledger_colon_joined_names(capsys: pytest.CaptureFixture[str]) -> None:
    found = plan("ledger", "dev", PASSWORD)
    assert phases(found) == [("network",), ("database",), ("api",)]
    assert list(found.graph.edges) == [
        Edge("database", "network", "network-dev:PrivateSubnets"),
        Edge("database", "network", "network-dev:VpcId"),
        Edge("api", "network", "network-dev:VpcId"),
        Edge("api", "database", "database-dev:DbName"),
        Edge("api", "database", "database-dev:EndpointAddress"),
        Edge("api", "database", "database-dev:EndpointPort"),
    ]
    assert [name for name, _ in found.graph.exports] == [
        "api-dev:ClusterName",
        "database-dev:DbName",
        "database-dev:EndpointAddress",
        "database-dev:EndpointPort",
        "network-dev:PrivateSubnets",
        "network-dev:VpcId",
    ]
    assert (found.external_imports, capsys.readouterr().err) == ((), "")


def test_ledger_password_from_the_environment() -> None:
    found = plan("ledger", "dev", PASSWORD)
    sent = found.services["database"].request.parameters
    assert sent == {"NetworkStack": "network-dev", "DbUser": "ledger", "DbPassword": "correct horse battery"}
    assert isinstance(sent["DbPassword"], Secret)
    assert "correct horse" not in repr(found)
    # the fingerprint follows the password without holding it
    other = plan("ledger", "dev", {"LEDGER_DB_PASSWORD": "another password"})
    assert other.services["database"].settings != found.services["database"].settings
    assert other.services["network"].settings == found.services["network"].settings
    with pytest.raises(PhasedoitError) as excinfo:
        plan("ledger", "dev")
    assert str(excinfo.value) == (
        "phases.yml: services.database.parameters.DbPassword: environment variable LEDGER_DB_PASSWORD is not set"
    )


def test_ledger_missing_parameters_in_one_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Stage qa sets no stack names: every missing parameter at once, and no warning they would cause."""
    with pytest.raises(PhasedoitError) as excinfo:
        plan("ledger", "qa", PASSWORD)
    assert str(excinfo.value) == "\n".join(
        f"phases.yml: services.{service}: parameter {name} has no value and no default:"
        f" set services.{service}.parameters.{name} or stages.qa.parameters.{name}"
        for service, name in [("database", "NetworkStack"), ("api", "NetworkStack"), ("api", "DatabaseStack")]
    )
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("stage", "audit"),
    [
        ("dev", []),
        # IsProd: the audit queue's Output and the sender's `!If [IsProd, ...]` import both exist
        ("prod", [Edge("sender", "queues", "prod-AuditQueueArn")]),
    ],
)
def test_mailroom_stage_in_the_names(
    stage: str, audit: list[Edge], capsys: pytest.CaptureFixture[str]
) -> None:
    found = plan("mailroom", stage)
    assert [(phase.label, phase.services) for phase in found.phases] == [
        ("phase 1 'queues'", ("queues",)),
        ("phase 2 'workers'", ("sender", "digest")),
    ]
    assert list(found.graph.edges) == [
        *audit,
        Edge("sender", "queues", f"{stage}-OutboxQueueArn"),
        Edge("digest", "queues", f"{stage}-OutboxQueueArn"),
    ]
    # digest's stale name is an import from outside the app: checked against the account before deploying
    assert (found.external_imports, capsys.readouterr().err) == ((("digest", f"{stage}-OutboxUrl"),), "")


def test_mailroom_near_miss_checked_against_the_account(aws_env: dict[str, str]) -> None:
    """The check that runs before the first write (a real ListExports) names the export a stale name meant."""
    found = plan("mailroom", "dev", aws_env)
    [check] = [task for task in tasks.deploy_tasks(found) if task["basename"] == tasks.CHECK_EXPORTS]
    [(action, arguments)] = check["actions"]
    failed = action(*arguments)
    assert isinstance(failed, TaskFailed)
    assert failed.message == (
        "digest imports dev-OutboxUrl, which no service of this app exports and which does not exist in the"
        " target account/region (did you mean dev-OutboxQueueUrl (queues)?)"
    )


def test_harbor_list_and_plan_name_a_conditional_upstream(tmp_path: Path, layer: Layer) -> None:
    """The region comes from the AWS profile, which phasedoit does not read when it plans: the website's
    alarm may import the alert topic, and `doit list` and `doit plan` say so.
    """
    app = copy_app(CORPUS / "harbor", tmp_path / "harbor")
    profile = tmp_path / "aws-config"
    profile.write_text("[default]\nregion = us-east-1\n")
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    env["AWS_CONFIG_FILE"] = str(profile)
    listed = doit(app, "list", env=env)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout.splitlines() == [
        "deploy     deploy harbor to stage dev: 3 phases, 5 services, phase by phase",
        "deploy-1   deploy phase 1: zone, alert",
        "deploy-2   deploy phase 2: vpc (after alert), website (after zone, alert (conditional))",
        "deploy-3   deploy phase 3: bastion (after alert, vpc)",
        "remove     remove harbor's stacks of stage dev: 3 phases, 5 services, last phase first",
        "remove-1   remove phase 1: zone, alert",
        "remove-2   remove phase 2: vpc, website",
        "remove-3   remove phase 3: bastion",
    ]
    deployed = doit(app, "-n", "4", "deploy", env=env)
    assert deployed.returncode == 0, deployed.stderr
    for template, text in [
        ("zone/template.json", "public DNS zone"),
        ("alert/template.yml", "alarms go"),
        ("vpc/template.json", "public subnet"),
    ]:
        path = app / "services" / template
        path.write_text(path.read_text().replace(text, f"{text} (edited)", 1))
    planned = doit(app, "plan", env=env)
    assert (planned.returncode, planned.stderr) == (0, "")
    assert planned.stdout.splitlines() == [
        "3 of 5 services would deploy (schedule: phases)",
        "phase 1",
        "  zone                   deploys: changed files: template.json",
        "  alert                  deploys: changed files: template.yml",
        "phase 2",
        "  vpc                    deploys: changed files: template.json",
        "  website                up to date, unless the exports of zone, alert (conditional) change",
        "phase 3",
        "  bastion                up to date, unless the exports of alert, vpc change",
    ]
