"""The CloudFormation fault layer itself, driven with the real boto3 client over HTTP, as phasedoit does."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import botocore.config
import botocore.exceptions
import pytest
from mypy_boto3_cloudformation import CloudFormationClient

from tests.conftest import Moto
from tests.faults import Layer, cloudformation_client

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
    return cloudformation_client(layer.url, botocore.config.Config(retries=retries, **config))


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


# ---- scripted operations ----------------------------------------------------------------------------


def test_an_operation_takes_its_time_with_an_event_per_resource(layer: Layer) -> None:
    cfn = client(layer)
    layer.duration(0.3)
    stack_id = create(cfn, "a-dev", EXPORTER, Parameters=STAGE, ClientRequestToken="tok-1")
    assert status(cfn, "a-dev") == ("CREATE_IN_PROGRESS", "User Initiated")
    update: dict[str, Any] = {
        "TemplateBody": json.dumps(EXPORTER),
        "Parameters": STAGE,
        "Tags": [{"Key": "k", "Value": "v"}],
    }
    assert refusal(cfn.update_stack, StackName="a-dev", **update) == (
        f"ValidationError: Stack:{stack_id} is in CREATE_IN_PROGRESS state and can not be updated."
    )
    assert refusal(cfn.cancel_update_stack, StackName="a-dev") == (
        "ValidationError: CancelUpdateStack cannot be called from current stack status"
    )
    layer.settle()
    assert status(cfn, "a-dev") == ("CREATE_COMPLETE", None)
    found = cfn.describe_stack_events(StackName=stack_id)["StackEvents"]
    assert [(e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceType")) for e in found] == [
        ("a-dev", "CREATE_COMPLETE", "AWS::CloudFormation::Stack"),
        ("Queue", "CREATE_COMPLETE", "AWS::SQS::Queue"),
        ("Queue", "CREATE_IN_PROGRESS", "AWS::SQS::Queue"),
        ("Topic", "CREATE_COMPLETE", "AWS::SNS::Topic"),
        ("Topic", "CREATE_IN_PROGRESS", "AWS::SNS::Topic"),
        ("a-dev", "CREATE_IN_PROGRESS", "AWS::CloudFormation::Stack"),
    ]
    assert {e.get("ClientRequestToken") for e in found} == {"tok-1"}
    assert found[1]["PhysicalResourceId"].endswith("/dev-q")
    assert [e["Timestamp"] for e in found] == sorted((e["Timestamp"] for e in found), reverse=True)


def test_a_resource_failure_rolls_a_create_back(layer: Layer) -> None:
    cfn = client(layer)
    layer.resource_fails("a-dev", "CreateStack", "Queue", "Resource handler returned message: quota")
    create(cfn, "a-dev", EXPORTER, Parameters=STAGE)
    assert status(cfn, "a-dev") == ("ROLLBACK_COMPLETE", None)
    assert cfn.describe_stacks(StackName="a-dev")["Stacks"][0].get("Outputs") is None
    assert events(cfn, "a-dev") == [
        ("a-dev", "ROLLBACK_COMPLETE", None),
        ("Queue", "DELETE_COMPLETE", None),
        ("Topic", "DELETE_COMPLETE", None),
        ("Topic", "DELETE_IN_PROGRESS", None),
        (
            "a-dev",
            "ROLLBACK_IN_PROGRESS",
            "The following resource(s) failed to create: [Queue]. Rollback requested by user.",
        ),
        ("Queue", "CREATE_FAILED", "Resource handler returned message: quota"),
        ("Queue", "CREATE_IN_PROGRESS", None),
        ("Topic", "CREATE_COMPLETE", None),
        ("Topic", "CREATE_IN_PROGRESS", None),
        ("a-dev", "CREATE_IN_PROGRESS", "User Initiated"),
    ]
    assert cfn.list_exports()["Exports"] == []
    cfn.delete_stack(StackName="a-dev")
    create(cfn, "a-dev", EXPORTER, Parameters=STAGE)  # the failure was for one create
    assert status(cfn, "a-dev") == ("CREATE_COMPLETE", None)


def test_a_failed_update_rolls_back_without_the_update(layer: Layer, moto: Moto) -> None:
    cfn = client(layer)
    create(cfn, "a-dev", EXPORTER, Parameters=STAGE)
    changed = {**EXPORTER, "Resources": {**EXPORTER["Resources"], "Queue": {"Type": "AWS::SQS::Queue"}}}
    layer.resource_fails("a-dev", "UpdateStack", "Queue", "Queue dev-q already exists")
    update: dict[str, Any] = {"StackName": "a-dev", "TemplateBody": json.dumps(changed), "Parameters": STAGE}
    cfn.update_stack(**update)
    assert status(cfn, "a-dev") == ("UPDATE_ROLLBACK_COMPLETE", None)
    assert events(cfn, "a-dev")[:7] == [
        ("a-dev", "UPDATE_ROLLBACK_COMPLETE", None),
        ("a-dev", "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", None),
        ("Queue", "UPDATE_COMPLETE", None),
        ("Queue", "UPDATE_IN_PROGRESS", None),
        ("a-dev", "UPDATE_ROLLBACK_IN_PROGRESS", "The following resource(s) failed to update: [Queue]."),
        ("Queue", "UPDATE_FAILED", "Queue dev-q already exists"),
        ("Queue", "UPDATE_IN_PROGRESS", None),
    ]
    assert json.loads(json.dumps(cfn.get_template(StackName="a-dev")["TemplateBody"])) == EXPORTER
    # the previous template is deployed: sending it again changes nothing, and the status stays
    same: dict[str, Any] = {"StackName": "a-dev", "TemplateBody": json.dumps(EXPORTER), "Parameters": STAGE}
    assert refusal(cfn.update_stack, **same) == "ValidationError: No updates are to be performed."
    assert status(cfn, "a-dev") == ("UPDATE_ROLLBACK_COMPLETE", None)
    cfn.update_stack(**update)
    assert status(cfn, "a-dev") == ("UPDATE_COMPLETE", None)


def test_a_rollback_that_fails_waits_for_continue_update_rollback(layer: Layer) -> None:
    cfn = client(layer)
    stack_id = create(cfn, "a-dev", EXPORTER, Parameters=STAGE)
    tagged: dict[str, Any] = {"StackName": "a-dev", "TemplateBody": json.dumps(EXPORTER), "Parameters": STAGE}
    tagged["Tags"] = [{"Key": "k", "Value": "v"}]
    layer.resource_fails("a-dev", "UpdateStack", "Queue", "Rate exceeded", rollback_fails="Topic was deleted", rollback_resource="Topic")  # fmt: skip
    cfn.update_stack(**tagged)
    assert status(cfn, "a-dev") == (
        "UPDATE_ROLLBACK_FAILED",
        "The following resource(s) failed to update: [Topic].",
    )
    assert events(cfn, "a-dev")[:4] == [
        ("a-dev", "UPDATE_ROLLBACK_FAILED", "The following resource(s) failed to update: [Topic]."),
        ("Topic", "UPDATE_FAILED", "Topic was deleted"),
        ("Topic", "UPDATE_IN_PROGRESS", None),
        ("a-dev", "UPDATE_ROLLBACK_IN_PROGRESS", "The following resource(s) failed to update: [Queue]."),
    ]
    assert refusal(cfn.update_stack, **tagged) == (
        f"ValidationError: Stack:{stack_id} is in UPDATE_ROLLBACK_FAILED state and can not be updated."
    )
    cfn.continue_update_rollback(StackName="a-dev", ResourcesToSkip=["Topic"])
    assert status(cfn, "a-dev") == ("UPDATE_ROLLBACK_COMPLETE", None)
    assert refusal(cfn.continue_update_rollback, StackName="a-dev") == (
        "ValidationError: ContinueUpdateRollback cannot be called from current stack status"
    )


def test_a_failed_delete_fails_again_until_the_resource_is_retained(layer: Layer, moto: Moto) -> None:
    cfn = client(layer)
    stack_id = create(cfn, "a-dev", EXPORTER, Parameters=STAGE)
    layer.resource_fails("a-dev", "DeleteStack", "Topic", "Topic is in use")
    for _ in range(2):
        cfn.delete_stack(StackName="a-dev")
        assert status(cfn, "a-dev") == (
            "DELETE_FAILED",
            "The following resource(s) failed to delete: [Topic]. ",
        )
    assert events(cfn, "a-dev")[:6] == [
        ("a-dev", "DELETE_FAILED", "The following resource(s) failed to delete: [Topic]. "),
        ("Topic", "DELETE_FAILED", "Topic is in use"),
        ("Topic", "DELETE_IN_PROGRESS", None),
        ("Queue", "DELETE_COMPLETE", None),
        ("Queue", "DELETE_IN_PROGRESS", None),
        ("a-dev", "DELETE_IN_PROGRESS", "User Initiated"),
    ]
    cfn.delete_stack(StackName="a-dev", RetainResources=["Topic"])
    assert status(cfn, stack_id) == ("DELETE_COMPLETE", None)
    assert events(cfn, stack_id)[:2] == [
        ("a-dev", "DELETE_COMPLETE", None),
        ("Topic", "DELETE_SKIPPED", None),
    ]
    assert moto.client().describe_stacks()["Stacks"] == []


def test_another_actors_operations(layer: Layer) -> None:
    cfn = client(layer)
    stack_id = create(cfn, "a-dev", EXPORTER, Parameters=STAGE)
    layer.other_actor("a-dev", "UPDATE_IN_PROGRESS", 0.2)
    assert status(cfn, "a-dev") == ("UPDATE_IN_PROGRESS", "User Initiated")
    assert refusal(cfn.delete_stack, StackName="a-dev") == (
        "ValidationError: Stack [a-dev] cannot be deleted while in status UPDATE_IN_PROGRESS"
    )
    layer.settle()
    assert status(cfn, "a-dev") == ("UPDATE_COMPLETE", None)
    layer.other_actor("a-dev", "DELETE_IN_PROGRESS", 0.2)
    assert status(cfn, stack_id) == ("DELETE_IN_PROGRESS", "User Initiated")
    layer.settle()
    assert status(cfn, stack_id) == ("DELETE_COMPLETE", None)
    assert refusal(cfn.describe_stacks, StackName="a-dev") == (
        "ValidationError: Stack with id a-dev does not exist"
    )


def test_cancel_update_stack_rolls_an_update_in_progress_back(layer: Layer, moto: Moto) -> None:
    cfn = client(layer)
    create(cfn, "a-dev", EXPORTER, Parameters=STAGE)
    layer.duration(30, "UpdateStack")
    changed = {**EXPORTER, "Outputs": {**EXPORTER["Outputs"], "Extra": {"Value": "x"}}}
    cfn.update_stack(StackName="a-dev", TemplateBody=json.dumps(changed), Parameters=STAGE)
    assert status(cfn, "a-dev") == ("UPDATE_IN_PROGRESS", "User Initiated")
    cfn.cancel_update_stack(StackName="a-dev", ClientRequestToken="cancel-1")
    assert status(cfn, "a-dev") == ("UPDATE_ROLLBACK_COMPLETE", None)
    assert [
        o["OutputKey"] for o in moto.client().describe_stacks(StackName="a-dev")["Stacks"][0]["Outputs"]
    ] == ["TopicArn"]
    assert [e[1] for e in events(cfn, "a-dev")[:4]] == [
        "UPDATE_ROLLBACK_COMPLETE",
        "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "UPDATE_IN_PROGRESS",  # the update's first event; the rest never happened
    ]


@pytest.mark.parametrize("shown", ["IMPORT_ROLLBACK_COMPLETE", "CREATE_PENDING", "NOT_A_STATUS_YET"])
def test_a_status_set_by_hand(layer: Layer, shown: str) -> None:
    cfn = client(layer)
    create(cfn, "a-dev", EXPORTER, Parameters=STAGE)
    layer.set_status("a-dev", shown, "set by the test")
    assert status(cfn, "a-dev") == (shown, "set by the test")
    assert [s["StackStatus"] for s in cfn.list_stacks()["StackSummaries"]] == [shown]
    assert events(cfn, "a-dev")[0] == ("a-dev", shown, "set by the test")


def test_review_in_progress_is_another_actors_change_set(layer: Layer) -> None:
    cfn = client(layer)
    layer.review_in_progress("a-dev", {"owner": "someone-else"})
    stack = cfn.describe_stacks(StackName="a-dev")["Stacks"][0]
    assert (stack["StackStatus"], stack["Tags"]) == (
        "REVIEW_IN_PROGRESS",
        [{"Key": "owner", "Value": "someone-else"}],
    )


# ---- transport faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "raised", "outcome"),
    [
        ("drop", 500, "Connection was closed before we received a valid response", "dropped"),
        ("error", 503, "ServiceUnavailable", "ServiceUnavailable: An internal error occurred."),
        ("error", 500, "InternalFailure", "InternalFailure: An internal error occurred."),
        ("html", 500, "invalid XML received", "html 500"),
        ("throttle", 500, "Rate exceeded", "Throttling: Rate exceeded"),
        ("stall", 500, "Read timeout on endpoint URL", "stalled"),
    ],
)
def test_a_transport_fault_is_seen_as_is(
    layer: Layer, kind: str, status: int, raised: str, outcome: str
) -> None:
    cfn = client(layer, read_timeout=0.3, connect_timeout=1)
    layer.fault(kind, action="DescribeStacks", status=status)
    with pytest.raises(Exception) as e:  # noqa: PT011 (botocore's own exception classes, checked by name below)
        cfn.describe_stacks()
    assert raised in str(e.value)
    assert cfn.describe_stacks()["Stacks"] == []  # one time only
    layer.released.set()  # a stalled request ends now, and is recorded then
    deadline = time.monotonic() + 5
    while len(layer.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(layer.outcomes()) == sorted([("DescribeStacks", "", outcome), ("DescribeStacks", "", "ok")])


def test_faults_for_some_requests_of_an_action(layer: Layer) -> None:
    cfn = client(layer)
    layer.fault("throttle", times=2, action="ListExports")
    layer.fault("error", times=None, stack="z-dev", status=502)
    for _ in range(2):
        assert refusal(cfn.list_exports) == "Throttling: Rate exceeded"
    assert cfn.list_exports()["Exports"] == []
    for _ in range(3):
        assert refusal(cfn.describe_stacks, StackName="z-dev") == "BadGateway: An internal error occurred."
    assert (
        refusal(cfn.describe_stacks, StackName="y-dev")
        == "ValidationError: Stack with id y-dev does not exist"
    )


def test_a_5xx_after_the_write_was_applied(layer: Layer, moto: Moto) -> None:
    cfn = client(layer)
    layer.fault("after_write", action="CreateStack")
    assert refusal(create, cfn, "a-dev", EXPORTER, Parameters=STAGE, ClientRequestToken="t-1") == (
        "InternalFailure: An internal error occurred."
    )
    assert moto.client().describe_stacks(StackName="a-dev")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert [(c.action, c.stack, c.outcome, c.token) for c in layer.calls] == [
        ("CreateStack", "a-dev", "500 after ok", "t-1")
    ]


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
