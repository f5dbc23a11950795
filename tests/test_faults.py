"""The CloudFormation fault layer itself, driven with the real boto3 client over HTTP, as phasedoit does."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest
from mypy_boto3_cloudformation import CloudFormationClient

from tests.conftest import Moto
from tests.faults import Layer

EXPORTER: dict[str, Any] = {
    "Parameters": {"Stage": {"Type": "String"}},
    "Resources": {
        "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": {"Fn::Sub": "${Stage}-t"}}},
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Fn::Sub": "${Stage}-q"}}},
    },
    "Outputs": {
        "TopicArn": {"Value": {"Ref": "Topic"}, "Export": {"Name": {"Fn::Sub": "${Stage}-TopicArn"}}},
    },
}
IMPORTER: dict[str, Any] = {
    "Resources": {
        "Param": {
            "Type": "AWS::SSM::Parameter",
            "Properties": {"Name": "/b", "Type": "String", "Value": {"Fn::ImportValue": "dev-TopicArn"}},
        }
    }
}
STAGE: Any = [{"ParameterKey": "Stage", "ParameterValue": "dev"}]


def client(layer: Layer, **config: Any) -> CloudFormationClient:
    """boto3 as phasedoit builds it, without retries: each fault is seen as it is."""
    retries: Any = {"mode": "standard", "total_max_attempts": 1}
    return boto3.client(
        "cloudformation",
        endpoint_url=layer.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(retries=retries, **config),
    )


def create(cfn: CloudFormationClient, name: str, template: Mapping[str, Any], **more: Any) -> str:
    body = json.dumps(template)
    return cfn.create_stack(StackName=name, TemplateBody=body, **more)["StackId"]


def status(cfn: CloudFormationClient, name: str) -> tuple[str, str | None]:
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return stack["StackStatus"], stack.get("StackStatusReason")


def events(cfn: CloudFormationClient, name: str) -> list[tuple[str, str, str | None]]:
    """(resource, status, reason) of every event, newest first."""
    found = cfn.describe_stack_events(StackName=name)["StackEvents"]
    return [(e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason")) for e in found]


def refusal(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(*args, **kwargs)
    return f"{e.value.response['Error']['Code']}: {e.value.response['Error']['Message']}"


# ---- always on: where moto differs from CloudFormation ------------------------------------------------


def test_a_create_moto_refuses_is_accepted_and_rolls_back(layer: Layer, moto: Moto) -> None:
    cfn = client(layer)
    stack_id = create(cfn, "b-dev", IMPORTER)
    assert status(cfn, stack_id) == ("ROLLBACK_COMPLETE", None)
    assert events(cfn, "b-dev") == [
        ("b-dev", "ROLLBACK_COMPLETE", None),
        ("b-dev", "ROLLBACK_IN_PROGRESS", "No export named dev-TopicArn found. Rollback requested by user."),
        ("b-dev", "CREATE_IN_PROGRESS", "User Initiated"),
    ]
    assert json.loads(json.dumps(cfn.get_template(StackName="b-dev")["TemplateBody"])) == IMPORTER
    assert [s["StackName"] for s in cfn.list_stacks()["StackSummaries"]] == ["b-dev"]
    # moto's own stuck stack is gone: once rolled back and deleted, the name is free again
    assert refusal(cfn.update_stack, StackName="b-dev", TemplateBody=json.dumps(IMPORTER)) == (
        f"ValidationError: Stack:{stack_id} is in ROLLBACK_COMPLETE state and can not be updated."
    )
    cfn.delete_stack(StackName="b-dev")
    create(cfn, "a-dev", EXPORTER, Parameters=STAGE)
    create(cfn, "b-dev", IMPORTER)
    assert {s["StackName"]: s["StackStatus"] for s in moto.client().describe_stacks()["Stacks"]} == {
        "a-dev": "CREATE_COMPLETE",
        "b-dev": "CREATE_COMPLETE",
    }


def test_tags_alone_are_an_update_and_nothing_changed_is_none(layer: Layer, moto: Moto) -> None:
    cfn = client(layer)
    create(cfn, "a-dev", EXPORTER, Parameters=STAGE, Tags=[{"Key": "team", "Value": "core"}])
    tags: Any = [{"Key": "team", "Value": "edge"}]
    cfn.update_stack(StackName="a-dev", TemplateBody=json.dumps(EXPORTER), Parameters=STAGE, Tags=tags)
    assert moto.client().describe_stacks(StackName="a-dev")["Stacks"][0]["Tags"] == tags
    assert events(cfn, "a-dev")[:6] == [
        ("a-dev", "UPDATE_COMPLETE", None),
        ("a-dev", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", None),
        ("Queue", "UPDATE_COMPLETE", None),
        ("Queue", "UPDATE_IN_PROGRESS", None),
        ("Topic", "UPDATE_COMPLETE", None),
        ("Topic", "UPDATE_IN_PROGRESS", None),
    ]
    # the same template, formatted otherwise, with the same parameters and tags: nothing to do
    again: dict[str, Any] = {
        "TemplateBody": json.dumps(EXPORTER, indent=2),
        "Parameters": STAGE,
        "Tags": tags,
    }
    assert refusal(cfn.update_stack, StackName="a-dev", **again) == (
        "ValidationError: No updates are to be performed."
    )


def test_list_imports_reads_the_live_stacks_templates(layer: Layer) -> None:
    cfn = client(layer)
    create(cfn, "a-dev", EXPORTER, Parameters=STAGE)
    by_sub = {"Fn::ImportValue": {"Fn::Sub": "${Stage}-TopicArn"}}
    create(cfn, "b-dev", IMPORTER)
    param = {"Type": "AWS::SSM::Parameter", "Properties": {"Name": "/c", "Type": "String", "Value": by_sub}}
    create(cfn, "c-dev", {**EXPORTER, "Resources": {"Param": param}, "Outputs": {}}, Parameters=STAGE)
    assert cfn.list_imports(ExportName="dev-TopicArn")["Imports"] == ["b-dev", "c-dev"]
    assert refusal(cfn.list_imports, ExportName="dev-Nothing") == (
        "ValidationError: Export 'dev-Nothing' is not imported by any stack."
    )


def test_an_exporter_in_use_is_not_deleted(layer: Layer, moto: Moto) -> None:
    cfn = client(layer)
    create(cfn, "a-dev", EXPORTER, Parameters=STAGE)
    create(cfn, "b-dev", IMPORTER)
    cfn.delete_stack(StackName="a-dev")
    reason = "Export dev-TopicArn cannot be deleted as it is in use by b-dev"
    assert status(cfn, "a-dev") == ("CREATE_COMPLETE", reason)
    assert events(cfn, "a-dev")[:2] == [
        ("a-dev", "CREATE_COMPLETE", reason),
        ("a-dev", "DELETE_IN_PROGRESS", "User Initiated"),
    ]
    assert moto.client().describe_stacks(StackName="a-dev")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    cfn.delete_stack(StackName="b-dev")
    cfn.delete_stack(StackName="a-dev")
    assert moto.client().describe_stacks()["Stacks"] == []


@pytest.mark.parametrize(
    ("outputs", "reason"),
    [
        ({}, "Export dev-TopicArn cannot be deleted as it is in use by b-dev and c-dev"),
        (
            {"TopicArn": {"Value": {"Ref": "Queue"}, "Export": {"Name": "dev-TopicArn"}}},
            "Cannot update export dev-TopicArn as it is in use by b-dev and c-dev",
        ),
    ],
)
def test_an_update_that_removes_or_changes_an_export_in_use_rolls_back(
    layer: Layer, moto: Moto, outputs: dict[str, Any], reason: str
) -> None:
    cfn = client(layer)
    create(cfn, "a-dev", EXPORTER, Parameters=STAGE)
    create(cfn, "b-dev", IMPORTER)
    create(cfn, "c-dev", json.loads(json.dumps(IMPORTER).replace('"/b"', '"/c"')))
    before = moto.client().describe_stacks(StackName="a-dev")["Stacks"][0]["Outputs"]
    cfn.update_stack(
        StackName="a-dev", TemplateBody=json.dumps({**EXPORTER, "Outputs": outputs}), Parameters=STAGE
    )
    assert status(cfn, "a-dev") == ("UPDATE_ROLLBACK_COMPLETE", None)
    assert [e[1:] for e in events(cfn, "a-dev") if e[0] == "a-dev"][:4] == [
        ("UPDATE_ROLLBACK_COMPLETE", None),
        ("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", None),
        ("UPDATE_ROLLBACK_IN_PROGRESS", reason),
        ("UPDATE_IN_PROGRESS", "User Initiated"),
    ]
    assert moto.client().describe_stacks(StackName="a-dev")["Stacks"][0]["Outputs"] == before
    assert json.loads(json.dumps(cfn.get_template(StackName="a-dev")["TemplateBody"])) == EXPORTER


def test_every_call_is_recorded_by_stack_name(layer: Layer) -> None:
    cfn = client(layer)
    stack_id = create(cfn, "a-dev", EXPORTER, Parameters=STAGE, ClientRequestToken="c-1")
    cfn.describe_stacks(StackName=stack_id)
    cfn.delete_stack(StackName=stack_id, ClientRequestToken="d-1")
    assert [(c.action, c.stack, c.outcome, c.token) for c in layer.calls] == [
        ("CreateStack", "a-dev", "ok", "c-1"),
        ("DescribeStacks", "a-dev", "ok", ""),
        ("DeleteStack", "a-dev", "ok", "d-1"),
    ]
    assert layer.written() == [("CreateStack", "a-dev"), ("DeleteStack", "a-dev")]
    assert layer.calls == []
