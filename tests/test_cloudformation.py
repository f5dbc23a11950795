from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from phasedoit import cloudformation
from phasedoit.cloudformation import Waiting
from phasedoit.errors import PhasedoitError
from phasedoit.stack import Deployed, StackSpec, Target
from tests.conftest import Moto


@pytest.fixture(autouse=True)
def _credentials(credentials: dict[str, str]) -> None:
    """phasedoit's clients read the standard AWS variables."""


FAST = Waiting(first=0.01, most=0.05, timeout=5)
EXPORTER = {
    "Parameters": {"Stage": {"Type": "String"}},
    "Resources": {
        "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": {"Fn::Sub": "${Stage}-t"}}}
    },
    "Outputs": {
        "TopicArn": {"Value": {"Ref": "Topic"}, "Export": {"Name": {"Fn::Sub": "${Stage}-TopicArn"}}},
        "Plain": {"Value": "hello"},
    },
}
IMPORTER = {
    "Resources": {
        "Param": {
            "Type": "AWS::SSM::Parameter",
            "Properties": {"Name": "/b", "Type": "String", "Value": {"Fn::ImportValue": "dev-TopicArn"}},
        }
    }
}


def spec(name: str, template: Mapping[str, Any], **parameters: str) -> StackSpec:
    return StackSpec(name, json.dumps(template), parameters, {"team": "core"})


def deploy(moto: Moto, stack: StackSpec, said: list[str] | None = None) -> Deployed:
    cfn = cloudformation.client(Target("us-east-1", moto.url))
    return cloudformation.deploy_stack(cfn, stack, (said if said is not None else []).append, FAST)


def test_create_then_update_then_unchanged(moto: Moto) -> None:
    said: list[str] = []
    created = deploy(moto, spec("a-dev", EXPORTER, Stage="dev"), said)
    assert created.action == "created"
    assert created.outputs["Plain"] == "hello"
    assert created.outputs["TopicArn"].startswith("arn:aws:sns:us-east-1:")
    assert created.exports == {"dev-TopicArn": created.outputs["TopicArn"]}
    stack = moto.client().describe_stacks(StackName="a-dev")["Stacks"][0]
    assert stack["Tags"] == [{"Key": "team", "Value": "core"}]
    assert stack["Parameters"] == [{"ParameterKey": "Stage", "ParameterValue": "dev"}]

    changed = {**EXPORTER, "Outputs": {**EXPORTER["Outputs"], "Plain": {"Value": "bye"}}}  # type: ignore[dict-item]
    assert deploy(moto, spec("a-dev", changed, Stage="dev"), said).action == "updated"
    assert deploy(moto, spec("a-dev", changed, Stage="dev"), said).outputs["Plain"] == "bye"
    assert said == ["creating a-dev", "updating a-dev", "updating a-dev"]
    assert deploy(moto, spec("a-dev", changed, Stage="dev")).action == "unchanged"


def test_refused_create_names_the_missing_export_and_leaves_nothing(moto: Moto) -> None:
    with pytest.raises(PhasedoitError) as e:
        deploy(moto, spec("b-dev", IMPORTER))
    assert str(e.value) == "No export named dev-TopicArn found."
    assert moto.client().describe_stacks()["Stacks"] == []
    # once the export exists, the same deploy works: no stack was left behind to block it
    deploy(moto, spec("a-dev", EXPORTER, Stage="dev"))
    assert deploy(moto, spec("b-dev", IMPORTER)).action == "created"


def test_failed_first_create_is_deleted_and_created_again(moto: Moto) -> None:
    # moto never rolls back a create; a stack left by a never-executed change set is as unusable
    cfn = moto.client()
    # REVIEW_IN_PROGRESS: a change set was created for a new stack and never executed
    cfn.create_change_set(
        StackName="d-dev", ChangeSetName="x", TemplateBody=json.dumps(EXPORTER), ChangeSetType="CREATE"
    )
    said: list[str] = []
    assert deploy(moto, spec("d-dev", EXPORTER, Stage="dev"), said).action == "created"
    assert said == ["deleting d-dev (REVIEW_IN_PROGRESS) to create it again", "creating d-dev"]


def test_an_error_page_instead_of_an_answer_is_one_line(moto: Moto) -> None:
    with pytest.raises(PhasedoitError) as e:
        deploy(moto, StackSpec("e-dev", "{not json"))  # moto answers HTTP 500 with an HTML page
    assert str(e.value) == "CloudFormation answered with an error page, not an API response (HTTP 500)"


def test_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHASEDOIT_API_ATTEMPTS", "1")
    cfn = cloudformation.client(Target("us-east-1", "http://127.0.0.1:9"))
    with pytest.raises(PhasedoitError) as e:
        cloudformation.deploy_stack(cfn, spec("a-dev", EXPORTER), print, FAST)
    assert str(e.value) == "cannot reach CloudFormation at http://127.0.0.1:9/"


def test_remove(moto: Moto) -> None:
    deploy(moto, spec("a-dev", EXPORTER, Stage="dev"))
    cfn = cloudformation.client(Target("us-east-1", moto.url))
    said: list[str] = []
    assert cloudformation.remove_stack(cfn, "a-dev", said.append, FAST) is True
    assert cloudformation.remove_stack(cfn, "a-dev", said.append, FAST) is False
    assert said == ["deleting a-dev"]
    assert moto.client().describe_stacks()["Stacks"] == []
