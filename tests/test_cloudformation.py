from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from mypy_boto3_cloudformation.type_defs import ParameterTypeDef, TagTypeDef

from phasedoit import cloudformation
from phasedoit.cloudformation import Waiting
from phasedoit.errors import PhasedoitError
from phasedoit.stack import APP_TAG, SERVICE_TAG, STAGE_TAG, Deployed, StackEvent, StackSpec, Target
from tests.conftest import Moto
from tests.faults import Layer, running_layer


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


def owner(name: str, stage: str = "dev", app: str = "shop") -> dict[str, str]:
    return {APP_TAG: app, STAGE_TAG: stage, SERVICE_TAG: name.rsplit("-", 1)[0]}


def spec(name: str, template: Mapping[str, Any], **parameters: str) -> StackSpec:
    return StackSpec(name, json.dumps(template), parameters, {"team": "core", **owner(name)})


def deploy(endpoint: Moto | Layer, stack: StackSpec, said: list[str] | None = None) -> Deployed:
    cfn = cloudformation.client(Target("us-east-1", endpoint.url))
    return cloudformation.deploy_stack(cfn, stack, (said if said is not None else []).append, FAST)


def test_create_then_update_then_unchanged(moto: Moto) -> None:
    said: list[str] = []
    created = deploy(moto, spec("a-dev", EXPORTER, Stage="dev"), said)
    assert created.action == "created"
    assert created.outputs["Plain"] == "hello"
    assert created.outputs["TopicArn"].startswith("arn:aws:sns:us-east-1:")
    assert created.exports == {"dev-TopicArn": created.outputs["TopicArn"]}
    stack = moto.client().describe_stacks(StackName="a-dev")["Stacks"][0]
    assert stack["Tags"] == [
        {"Key": "phasedoit:app", "Value": "shop"},
        {"Key": "phasedoit:service", "Value": "a"},
        {"Key": "phasedoit:stage", "Value": "dev"},
        {"Key": "team", "Value": "core"},
    ]
    assert stack["Parameters"] == [{"ParameterKey": "Stage", "ParameterValue": "dev"}]

    changed = {**EXPORTER, "Outputs": {**EXPORTER["Outputs"], "Plain": {"Value": "bye"}}}  # type: ignore[dict-item]
    assert deploy(moto, spec("a-dev", changed, Stage="dev"), said).action == "updated"
    assert deploy(moto, spec("a-dev", changed, Stage="dev"), said).outputs["Plain"] == "bye"
    assert said == ["creating a-dev", "updating a-dev", "updating a-dev"]
    assert deploy(moto, spec("a-dev", changed, Stage="dev")).action == "unchanged"


def test_a_create_that_rolls_back_is_deleted_and_created_again(layer: Layer) -> None:
    with pytest.raises(PhasedoitError) as e:
        deploy(layer, spec("b-dev", IMPORTER))  # the export it imports does not exist: it rolls back
    assert str(e.value) == "No export named dev-TopicArn found. [ROLLBACK_COMPLETE]"
    deploy(layer, spec("a-dev", EXPORTER, Stage="dev"))
    said: list[str] = []
    assert deploy(layer, spec("b-dev", IMPORTER), said).action == "created"
    assert said == ["deleting b-dev (ROLLBACK_COMPLETE) to create it again", "creating b-dev"]


def test_another_actors_change_set_is_never_deleted(moto: Moto) -> None:
    cfn = moto.client()
    # REVIEW_IN_PROGRESS: someone else created a change set for a new stack and has not executed it yet
    cfn.create_change_set(
        StackName="d-dev", ChangeSetName="x", TemplateBody=json.dumps(EXPORTER), ChangeSetType="CREATE"
    )
    ours = cloudformation.client(Target("us-east-1", moto.url))
    for adopt in (False, True):  # not even when asked to take the stack over: the change set is theirs
        with pytest.raises(PhasedoitError) as e:
            cloudformation.deploy_stack(ours, spec("d-dev", EXPORTER, Stage="dev"), print, FAST, adopt=adopt)
        assert str(e.value) == (
            "d-dev is REVIEW_IN_PROGRESS: another actor's change set creates it; execute or delete that"
            " change set first"
        )
    assert [s["StackStatus"] for s in cfn.describe_stacks()["Stacks"]] == ["REVIEW_IN_PROGRESS"]


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
    assert cloudformation.remove_stack(cfn, "a-dev", owner("a-dev"), said.append, FAST) is True
    assert cloudformation.remove_stack(cfn, "a-dev", owner("a-dev"), said.append, FAST) is False
    assert said == ["deleting a-dev"]
    assert moto.client().describe_stacks()["Stacks"] == []


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (owner("api-eu-dev", stage="dev", app="coll"), "api-eu-dev belongs to app coll, not to app shop"),
        (
            owner("api-dev", app="shop"),
            "api-eu-dev belongs to service api of app shop, not to service api-eu",
        ),
        (owner("api-eu-dev", stage="eu"), "api-eu-dev belongs to stage eu of app shop, not to stage dev"),
        (
            {"team": "core"},
            "api-eu-dev exists and was not made by phasedoit: run with adopt=api-eu to take it over",
        ),
    ],
)
def test_a_stack_that_is_not_ours_is_never_updated_nor_deleted(
    moto: Moto, tags: dict[str, str], message: str
) -> None:
    body = json.dumps(EXPORTER)
    cfn = moto.client()
    cfn.create_stack(
        StackName="api-eu-dev",
        TemplateBody=body,
        Parameters=[{"ParameterKey": "Stage", "ParameterValue": "x"}],
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )
    ours = cloudformation.client(Target("us-east-1", moto.url))
    with pytest.raises(PhasedoitError) as e:
        cloudformation.deploy_stack(ours, spec("api-eu-dev", EXPORTER, Stage="dev"), print, FAST)
    assert str(e.value) == message
    with pytest.raises(PhasedoitError) as e:
        cloudformation.remove_stack(ours, "api-eu-dev", owner("api-eu-dev"), print, FAST)
    assert str(e.value) == message
    assert [s["StackStatus"] for s in cfn.describe_stacks()["Stacks"]] == ["CREATE_COMPLETE"]


def test_adopting_a_stack_made_before_phasedoit(moto: Moto) -> None:
    cfn = moto.client()
    parameters: list[ParameterTypeDef] = [{"ParameterKey": "Stage", "ParameterValue": "dev"}]
    cfn.create_stack(StackName="a-dev", TemplateBody=json.dumps(EXPORTER), Parameters=parameters)
    ours = cloudformation.client(Target("us-east-1", moto.url))
    changed = {**EXPORTER, "Outputs": {**EXPORTER["Outputs"], "Plain": {"Value": "bye"}}}  # type: ignore[dict-item]
    adopted = cloudformation.deploy_stack(ours, spec("a-dev", changed, Stage="dev"), print, FAST, adopt=True)
    assert adopted.action == "updated"
    # from now on it carries phasedoit's tags: no adoption needed
    assert cloudformation.remove_stack(ours, "a-dev", owner("a-dev"), print, FAST) is True


def test_every_write_carries_a_request_token(moto: Moto) -> None:
    with running_layer(moto.url) as proxy:
        cfn = cloudformation.client(Target("us-east-1", proxy.url))
        cloudformation.deploy_stack(cfn, spec("a-dev", EXPORTER, Stage="dev"), print, FAST)
        cloudformation.remove_stack(cfn, "a-dev", owner("a-dev"), print, FAST)
    tokens = [call.token for call in proxy.writes()]
    assert [call.action for call in proxy.writes()] == ["CreateStack", "DeleteStack"]
    assert all(token.startswith("phasedoit-") for token in tokens)
    assert len(set(tokens)) == 2


def test_termination_protection_is_said_in_one_line(moto: Moto) -> None:
    tags: list[TagTypeDef] = [{"Key": k, "Value": v} for k, v in owner("a-dev").items()]
    body = json.dumps({"Resources": {"T": {"Type": "AWS::SNS::Topic"}}})
    moto.client().create_stack(
        StackName="a-dev", TemplateBody=body, Tags=tags, EnableTerminationProtection=True
    )
    cfn = cloudformation.client(Target("us-east-1", moto.url))
    with pytest.raises(PhasedoitError) as e:
        cloudformation.remove_stack(cfn, "a-dev", owner("a-dev"), print, FAST)
    assert str(e.value) == (
        "refused: a-dev has termination protection: turn it off first (aws cloudformation"
        " update-termination-protection --no-enable-termination-protection --stack-name a-dev)"
    )
    assert [s["StackStatus"] for s in moto.client().describe_stacks()["Stacks"]] == ["CREATE_COMPLETE"]


def test_stack_events_as_polling_sees_them(layer: Layer) -> None:
    """Each operation's own events, once each and oldest first, one page per poll; none for a no-op."""
    seen: list[StackEvent] = []
    stack = spec("a-dev", EXPORTER, Stage="dev")
    cfn = cloudformation.client(Target("us-east-1", layer.url))

    def operation(run: Callable[..., object], *args: Any) -> tuple[list[str], int, bool]:
        """The events seen, the pages of events read, and whether each page followed a poll of the stack."""
        seen.clear()
        layer.calls.clear()
        run(cfn, *args, print, FAST, on_event=seen.append)
        asked = [call.action for call in sorted(layer.calls, key=lambda call: call.start)]
        pages = [i for i, action in enumerate(asked) if action == "DescribeStackEvents"]
        polled = all(i > 0 and asked[i - 1] == "DescribeStacks" for i in pages)
        return [event.text for event in seen], len(pages), polled

    layer.duration(0.5, "CreateStack")  # in progress for half a second: polled several times
    texts, pages, polled = operation(cloudformation.deploy_stack, stack)
    assert texts == [
        "a-dev (AWS::CloudFormation::Stack) CREATE_IN_PROGRESS",
        "Topic (AWS::SNS::Topic) CREATE_IN_PROGRESS",
        "Topic (AWS::SNS::Topic) CREATE_COMPLETE",
        "a-dev (AWS::CloudFormation::Stack) CREATE_COMPLETE",
    ]
    assert seen[0].reason == "User Initiated"
    assert pages >= 1
    assert polled  # one page after each poll of the stack, never two in a row
    assert operation(cloudformation.deploy_stack, stack) == ([], 0, True)  # a no-op update: no events read
    topic = {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": {"Fn::Sub": "${Stage}-t2"}}}
    renamed = spec("a-dev", {**EXPORTER, "Resources": {"Topic": topic}}, Stage="dev")
    layer.resource_fails("a-dev", "UpdateStack", "Topic", "Topic name is taken")
    with pytest.raises(PhasedoitError) as failed:
        operation(cloudformation.deploy_stack, renamed)
    assert str(failed.value) == "Topic (AWS::SNS::Topic): Topic name is taken [UPDATE_ROLLBACK_COMPLETE]"
    texts = [event.text for event in seen]
    assert texts[0] == "a-dev (AWS::CloudFormation::Stack) UPDATE_IN_PROGRESS"
    assert "Topic (AWS::SNS::Topic) UPDATE_FAILED: Topic name is taken" in texts
    assert texts[-1] == "a-dev (AWS::CloudFormation::Stack) UPDATE_ROLLBACK_COMPLETE"
    texts, _, _ = operation(cloudformation.remove_stack, "a-dev", owner("a-dev"))
    assert texts == [
        "a-dev (AWS::CloudFormation::Stack) DELETE_IN_PROGRESS",
        "Topic (AWS::SNS::Topic) DELETE_IN_PROGRESS",
        "Topic (AWS::SNS::Topic) DELETE_COMPLETE",
        "a-dev (AWS::CloudFormation::Stack) DELETE_COMPLETE",
    ]


def test_a_stack_event_as_a_line() -> None:
    assert StackEvent("Fn", "AWS::Lambda::Function", "CREATE_COMPLETE").text == (
        "Fn (AWS::Lambda::Function) CREATE_COMPLETE"
    )
    failed = StackEvent("Fn", "AWS::Lambda::Function", "CREATE_FAILED", "Role is invalid")
    assert failed.text == "Fn (AWS::Lambda::Function) CREATE_FAILED: Role is invalid"
    rollback = StackEvent("a-dev", "AWS::CloudFormation::Stack", "UPDATE_ROLLBACK_IN_PROGRESS", "Fn failed")
    assert rollback.text == "a-dev (AWS::CloudFormation::Stack) UPDATE_ROLLBACK_IN_PROGRESS: Fn failed"
    started = StackEvent("a-dev", "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated")
    assert started.text == "a-dev (AWS::CloudFormation::Stack) CREATE_IN_PROGRESS"
