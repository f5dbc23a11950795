"""Public multi-template apps (tests/corpus/*, sources and licences in each SOURCE.md), planned as a user would.

Their templates are kept as published; the expected phases were checked against each project's own
instructions (the VPC first, then what imports it, ...).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from doit.exceptions import TaskFailed

from phasedoit import graph, tasks, templates
from phasedoit.config import load_config
from phasedoit.errors import PhasedoitError
from phasedoit.graph import Edge
from phasedoit.parameters import Secret
from phasedoit.planning import plan_stage

CORPUS = Path(__file__).parent / "corpus"
SECRETS = {"DB_PASSWORD": "hunter2", "GITHUB_TOKEN": ""}


def _plan(
    app: str, stage: str, capsys: pytest.CaptureFixture[str], environ: Mapping[str, str] = SECRETS
) -> tuple[graph.Graph, list[tuple[str, ...]], str]:
    plan = plan_stage(load_config(CORPUS / app / "phases.yml"), stage, environ)
    return plan.graph, [phase.services for phase in plan.phases], capsys.readouterr().err


def test_startup_kit(capsys: pytest.CaptureFixture[str]) -> None:
    found, phases, warnings = _plan("startup-kit", "dev", capsys)
    assert phases == [("vpc",), ("bastion", "db"), ("fargate",), ("fargate-service",)]
    assert warnings == ""
    # fargate sets DatabaseStackName, fargate-service leaves it '': only fargate imports the database
    assert [e for e in found.edges if e.exporter == "db"] == [
        Edge("fargate", "db", "db-dev-DatabaseURL"),
        Edge("fargate", "db", "db-dev-DatabaseUser"),
    ]
    assert [u.service for u in graph.upstreams(found)["fargate-service"]] == ["vpc", "fargate"]
    assert found.external == ()
    assert found.unchecked == ()


def test_startup_kit_conditional_outputs() -> None:
    shown = "templates/db.cfn.yml"
    template = templates.load_template(CORPUS / "startup-kit" / shown, shown)
    values = {"NetworkStackName": "vpc-dev", "DatabasePassword": "x", "AWS::StackName": "db-dev"}
    exports = {
        "db-dev-Name",
        "db-dev-DatabaseID",
        "db-dev-DatabaseURL",
        "db-dev-DatabaseUser",
        "db-dev-DatabasePassword",
    }
    # EnableAlarms defaults to false: the alarm topic's outputs (Condition: AlarmsEnabled) do not exist
    assert templates.find_dependencies(template, values, shown).exports == exports
    alarms = templates.find_dependencies(template, {**values, "EnableAlarms": "true"}, shown)
    assert alarms.exports == exports | {"db-dev-DatabaseAlarmTopicArn", "db-dev-DatabaseAlarmTopicName"}


def test_startup_kit_secrets() -> None:
    app = load_config(CORPUS / "startup-kit" / "phases.yml")
    plan = plan_stage(app, "dev", SECRETS)
    sent = plan.services["db"].request.parameters
    assert sent["DatabasePassword"] == "hunter2"
    assert isinstance(sent["DatabasePassword"], Secret)
    assert "hunter2" not in repr(plan)
    # the fingerprint changes with the secret, without holding it
    assert plan_stage(app, "dev", {**SECRETS, "DB_PASSWORD": "other"}).services["db"].settings != (
        plan.services["db"].settings
    )
    with pytest.raises(PhasedoitError) as excinfo:
        plan_stage(app, "dev", {"GITHUB_TOKEN": ""})
    assert str(excinfo.value) == (
        "phases.yml: services.db.parameters.DatabasePassword: environment variable DB_PASSWORD is not set"
    )


def test_startup_kit_without_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every parameter with neither a value nor a default, in one error; no warning caused by them."""
    shutil.copytree(CORPUS / "startup-kit", tmp_path, dirs_exist_ok=True)
    config = (tmp_path / "phases.yml").read_text()
    (tmp_path / "phases.yml").write_text(config[: config.index("stages:")].replace("parameters:", "#"))
    with pytest.raises(PhasedoitError) as excinfo:
        plan_stage(load_config(tmp_path / "phases.yml"), "dev", {})
    assert capsys.readouterr().err == ""
    assert str(excinfo.value) == "\n".join(
        f"phases.yml: services.{service}: parameter {parameter} has no value and no default:"
        f" set services.{service}.parameters.{parameter} or stages.dev.parameters.{parameter}"
        for service, parameter in [
            ("vpc", "AvailabilityZone1"),
            ("vpc", "AvailabilityZone2"),
            ("bastion", "NetworkStackName"),
            ("bastion", "KeyName"),
            ("db", "NetworkStackName"),
            ("db", "DatabasePassword"),
            ("fargate", "NetworkStackName"),
            ("fargate", "GitSourceRepo"),
            ("fargate", "GitHubToken"),
            ("fargate", "GitHubUser"),
            ("fargate-service", "NetworkStackName"),
            ("fargate-service", "FargateStackName"),
            ("fargate-service", "GitSourceRepo"),
            ("fargate-service", "GitHubToken"),
            ("fargate-service", "GitHubUser"),
        ]
    )
    # and without that error, the unresolved imports would have cascaded into warnings
    shown = "templates/fargate-service.cfn.yml"
    template = templates.load_template(tmp_path / shown, shown)
    known = {**templates.parameter_defaults(template), "AWS::StackName": "fargate-service-dev"}
    assert (
        len(templates.collect_dependencies(template["Outputs"], "Outputs", template, known, shown).warnings)
        == 19
    )


WIDDIX_PHASES = [("alert", "vpc", "zone"), ("nat-a", "client-sg", "kms-key", "website"), ("postgres",)]


@pytest.mark.parametrize(
    ("stage", "website_alerts"),
    [
        # no region: the website imports the alert topic only if it is in us-east-1; ordered after it anyway
        ("dev", [Edge("website", "alert", "alert-dev-TopicARN", conditional=True)]),
        ("us", [Edge("website", "alert", "alert-us-TopicARN")]),
        ("eu", []),
    ],
)
def test_widdix(stage: str, website_alerts: list[Edge], capsys: pytest.CaptureFixture[str]) -> None:
    found, phases, warnings = _plan("widdix", stage, capsys)
    assert phases == WIDDIX_PHASES
    assert warnings == ""
    assert [e for e in found.edges if e.importer == "website" and e.exporter == "alert"] == website_alerts
    assert [(e.importer, e.exporter) for e in found.edges if e.importer != "website"] == [
        ("nat-a", "alert"),
        ("nat-a", "vpc"),
        ("nat-a", "vpc"),
        ("client-sg", "vpc"),
        ("kms-key", "alert"),
        ("postgres", "alert"),
        ("postgres", "vpc"),
        ("postgres", "vpc"),
        ("postgres", "zone"),
        ("postgres", "zone"),
        ("postgres", "client-sg"),
        ("postgres", "kms-key"),
    ]
    assert found.external == ()
    assert found.unchecked == ()


def test_widdix_alerts_outside_the_app(capsys: pytest.CaptureFixture[str]) -> None:
    found, phases, warnings = _plan("widdix", "shared", capsys)
    # no ParentKmsKeyStack: postgres imports no key, and kms-key moves up to the first phase
    assert phases == [("alert", "vpc", "zone", "kms-key"), ("nat-a", "client-sg", "website"), ("postgres",)]
    # unconditional imports from outside the app are checked before deploying…
    assert found.external == (
        ("nat-a", "ops-alert-TopicARN"),
        ("kms-key", "ops-alert-TopicARN"),
        ("postgres", "ops-alert-TopicARN"),
    )
    # …a conditional one is not: it is a warning
    assert warnings == (
        "warning: static-website/static-website.yaml: Resources.LambdaExecutionErrorTooHighAlarm.Properties.AlarmActions[0]:"
        ' Fn::ImportValue {"Fn::Sub": "${ParentAlertStack}-TopicARN"} imports ops-alert-TopicARN only when'
        " condition HasAlertTopicAndRegionNorthVirginia is true, which cannot be known before deploying"
        " (no known value for AWS::Region); no service of this app exports it, so it is not checked before deploying\n"
    )


def test_reflectoring_rds(capsys: pytest.CaptureFixture[str]) -> None:
    found, phases, warnings = _plan("reflectoring-rds", "dev", capsys)
    assert phases == [("network",), ("database",), ("service",)]
    assert warnings == ""
    assert [e.export for e in found.edges if e.exporter == "database"] == [
        "database-dev:DBName",
        "database-dev:EndpointAddress",
        "database-dev:EndpointPort",
        "database-dev:Secret",
    ]
    # a stale name suggests the export it was meant to be
    assert graph.missing_external_imports(
        [("service", "database-dev:EndpointAdress")], set(), dict(found.exports)
    ) == [
        "service imports database-dev:EndpointAdress, which no service of this app exports and which does not"
        " exist in the target account/region (did you mean database-dev:EndpointAddress (database)?)"
    ]


def test_a_near_miss_checked_against_the_account(tmp_path: Path, aws_env: dict[str, str]) -> None:
    """The check before the first write (a real ListExports) names the app's export a stale name meant."""
    shutil.copytree(CORPUS / "reflectoring-rds", tmp_path, dirs_exist_ok=True)
    service = tmp_path / "rds-in-private-subnet" / "service.yml"
    service.write_text(service.read_text().replace("'EndpointAddress'", "'EndpointAdress'"))
    plan = plan_stage(load_config(tmp_path / "phases.yml"), "dev", aws_env)
    [check] = [task for task in tasks.deploy_tasks(plan) if task["basename"] == tasks.CHECK_EXPORTS]
    [(action, arguments)] = check["actions"]
    failed = action(*arguments)
    assert isinstance(failed, TaskFailed)
    assert failed.message == (
        "service imports database-dev:EndpointAdress, which no service of this app exports and which does not"
        " exist in the target account/region (did you mean database-dev:EndpointAddress (database)?)"
    )
