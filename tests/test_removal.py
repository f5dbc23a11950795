"""Removal touches only what was asked: doit as a user runs it, through the CloudFormation fault layer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from mypy_boto3_cloudformation.type_defs import ParameterTypeDef

from tests.conftest import copy_app, doit
from tests.faults import Layer

EXPORTER = {
    "Parameters": {"Stage": {"Type": "String"}},
    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
    "Outputs": {"Arn": {"Value": {"Ref": "Topic"}, "Export": {"Name": {"Fn::Sub": "${Stage}-Arn"}}}},
}
IMPORTER = {
    "Parameters": {"Stage": {"Type": "String"}},
    "Resources": {
        "Param": {
            "Type": "AWS::SSM::Parameter",
            "Properties": {
                "Name": {"Fn::Sub": "/${Stage}/arn"},
                "Type": "String",
                "Value": {"Fn::ImportValue": {"Fn::Sub": "${Stage}-Arn"}},
            },
        }
    },
}
WRITES = ("CreateStack", "UpdateStack", "DeleteStack")


@pytest.fixture
def pair(tmp_path: Path, layer: Layer) -> Path:
    """Two services, `api` exporting what `job` imports, both deployed on stages dev and prod."""
    source = tmp_path / "source"
    for name, template in (("api", EXPORTER), ("job", IMPORTER)):
        (source / "services" / name).mkdir(parents=True)
        (source / "services" / name / "template.json").write_text(json.dumps(template))
    (source / "phases.yml").write_text(
        "app: pair\nphases: [[api], [job]]\nstages: {dev: {}, prod: {protected: true}}\n"
    )
    app = copy_app(source, tmp_path / "pair")
    for stage in ("dev", "prod"):
        result = run(app, "deploy", f"stage={stage}")
        assert result.returncode == 0, result.stderr
    layer.calls.clear()
    return app


def run(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return doit(app, "-n", "2", *args, env={**os.environ})


def stacks(layer: Layer) -> list[str]:
    return sorted(s["StackName"] for s in layer.client().describe_stacks()["Stacks"])


def test_remove_one_leaf_removes_that_stack_alone(pair: Path, layer: Layer) -> None:
    result = run(pair, "remove:job")
    assert result.returncode == 0, result.stderr
    assert layer.outcomes(*WRITES) == [("DeleteStack", "job-dev", "ok")]
    assert stacks(layer) == ["api-dev", "api-prod", "job-prod"]


def test_remove_an_exporter_in_use_is_refused(pair: Path, layer: Layer) -> None:
    result = run(pair, "remove:api")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "api: refused: dev-Arn of api-dev is imported by job-dev: remove those first; nothing was removed"
    ]
    assert layer.outcomes(*WRITES) == []
    assert stacks(layer) == ["api-dev", "api-prod", "job-dev", "job-prod"]


def test_a_protected_stage_is_not_removed_without_a_yes(pair: Path, layer: Layer) -> None:
    result = run(pair, "remove", "stage=prod")  # no terminal here, as in CI
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "remove: stage prod is protected and the removal was not confirmed: nothing was removed"
        " (confirm at the prompt on a terminal, or add yes=1)"
    ]
    assert layer.outcomes(*WRITES) == []
    confirmed = run(pair, "remove", "stage=prod", "yes=1")
    assert confirmed.returncode == 0, confirmed.stderr
    assert layer.outcomes(*WRITES) == [("DeleteStack", "job-prod", "ok"), ("DeleteStack", "api-prod", "ok")]
    assert stacks(layer) == ["api-dev", "job-dev"]


def test_an_import_from_outside_the_app_stops_the_whole_removal(pair: Path, layer: Layer) -> None:
    # another app's stack imports dev-Arn: its SSM parameter holds api-dev's topic
    body = json.dumps(IMPORTER).replace("${Stage}-Arn", "dev-Arn")
    stage: list[ParameterTypeDef] = [{"ParameterKey": "Stage", "ParameterValue": "other"}]
    layer.client().create_stack(StackName="other-app", TemplateBody=body, Parameters=stage)
    layer.calls.clear()
    result = run(pair, "remove")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "remove: api's export dev-Arn is imported by other-app, outside pair: remove that import first;"
        " nothing was removed"
    ]
    assert layer.outcomes(*WRITES) == []
