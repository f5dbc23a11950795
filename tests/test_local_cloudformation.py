"""The local endpoint's CloudFormation where moto's is not CloudFormation's, through boto3 over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest

from phasedoit.local import local_paths
from tests.test_local import EXPORTER, IMPORTER, STAGE, TOPIC, Endpoint, next_region, started

EXPORT = "dev-PurchasedTopicArn"
IN_USE = f"Export {EXPORT} cannot be deleted as it is in use by job-dev"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    yield from started(tmp_path_factory.mktemp("cloudformation") / ".phasedoit")


@pytest.fixture
def region() -> str:
    return next_region()


def app(endpoint: Endpoint, region: str) -> Any:
    """An exporter and its importer, deployed."""
    client = endpoint.client(region=region)
    client.create_stack(StackName="api-dev", TemplateBody=EXPORTER)
    client.create_stack(StackName="job-dev", TemplateBody=IMPORTER, Parameters=STAGE)
    return client


def status(client: Any, name: str) -> str:
    return str(client.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"])


def last_events(client: Any, name: str, count: int) -> list[tuple[str, str | None]]:
    """The stack's last events, oldest first: (status, reason)."""
    events = client.describe_stack_events(StackName=name)["StackEvents"][:count]
    return [(event["ResourceStatus"], event.get("ResourceStatusReason")) for event in reversed(events)]


def exports(client: Any) -> dict[str, str]:
    return {export["Name"]: export["Value"] for export in client.list_exports()["Exports"]}


def client_error(call: Any, **arguments: Any) -> tuple[int, str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as error:
        call(**arguments)
    response = error.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def test_an_export_in_use_is_not_deleted(endpoint: Endpoint, region: str) -> None:
    client = app(endpoint, region)
    before = exports(client)
    client.delete_stack(StackName="api-dev")  # accepted, as CloudFormation accepts it, then refused
    assert status(client, "api-dev") == "CREATE_COMPLETE"
    assert last_events(client, "api-dev", 2) == [
        ("DELETE_IN_PROGRESS", "User Initiated"),
        ("CREATE_COMPLETE", IN_USE),
    ]
    assert exports(client) == before
    client.delete_stack(StackName="job-dev")
    client.delete_stack(StackName="api-dev")  # nothing imports it any more
    assert client.describe_stacks()["Stacks"] == []
    assert exports(client) == {}


def test_an_update_that_removes_or_changes_an_export_in_use_rolls_back(
    endpoint: Endpoint, region: str
) -> None:
    client = app(endpoint, region)
    before = exports(client)
    rolled_back = [
        ("UPDATE_IN_PROGRESS", "User Initiated"),
        ("UPDATE_ROLLBACK_IN_PROGRESS", IN_USE),
        ("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", None),
        ("UPDATE_ROLLBACK_COMPLETE", None),
    ]
    client.update_stack(StackName="api-dev", TemplateBody=TOPIC)  # its export removed
    assert status(client, "api-dev") == "UPDATE_ROLLBACK_COMPLETE"
    assert last_events(client, "api-dev", 4) == rolled_back
    assert client.get_template(StackName="api-dev")["TemplateBody"] == EXPORTER
    assert exports(client) == before

    changed = EXPORTER.replace("Value: !Ref Topic", "Value: !GetAtt Topic.TopicName")
    client.update_stack(StackName="api-dev", TemplateBody=changed)  # its value changed
    assert status(client, "api-dev") == "UPDATE_ROLLBACK_COMPLETE"
    assert last_events(client, "api-dev", 4) == [
        rolled_back[0],
        ("UPDATE_ROLLBACK_IN_PROGRESS", f"Export {EXPORT} cannot be updated as it is in use by job-dev"),
        *rolled_back[2:],
    ]
    assert client.get_template(StackName="api-dev")["TemplateBody"] == EXPORTER
    assert exports(client) == before

    grown = EXPORTER + "  Other:\n    Value: !GetAtt Topic.TopicName\n"
    client.update_stack(StackName="api-dev", TemplateBody=grown)  # the export as it was: fine
    assert status(client, "api-dev") == "UPDATE_COMPLETE"
    assert exports(client) == before


def test_an_export_name_another_stack_holds_rolls_the_update_back(endpoint: Endpoint, region: str) -> None:
    client = endpoint.client(region=region)
    client.create_stack(StackName="api-dev", TemplateBody=EXPORTER)
    client.create_stack(StackName="copy-dev", TemplateBody=TOPIC)
    client.update_stack(StackName="copy-dev", TemplateBody=EXPORTER)
    assert status(client, "copy-dev") == "UPDATE_ROLLBACK_COMPLETE"
    assert last_events(client, "copy-dev", 4) == [
        ("UPDATE_IN_PROGRESS", "User Initiated"),
        ("UPDATE_ROLLBACK_IN_PROGRESS", f"Export with name {EXPORT} is already exported by stack api-dev."),
        ("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", None),
        ("UPDATE_ROLLBACK_COMPLETE", None),
    ]
    api = client.describe_stacks(StackName="api-dev")["Stacks"][0]
    assert exports(client) == {EXPORT: api["Outputs"][0]["OutputValue"]}


def test_list_imports(endpoint: Endpoint, region: str) -> None:
    client = app(endpoint, region)
    client.create_stack(
        StackName="job2-dev",
        TemplateBody=IMPORTER.replace("purchased-topic", "purchased-topic-2"),
        Parameters=STAGE,
    )
    assert client.list_imports(ExportName=EXPORT)["Imports"] == ["job-dev", "job2-dev"]
    pages = client.get_paginator("list_imports").paginate(ExportName=EXPORT)
    assert [name for page in pages for name in page["Imports"]] == ["job-dev", "job2-dev"]
    assert client_error(client.list_imports, ExportName="dev-Nothing") == (
        400,
        "ValidationError",
        "Export 'dev-Nothing' is not imported by any stack.",
    )


def test_tags_alone_are_updated_and_no_change_is_no_update(endpoint: Endpoint, region: str) -> None:
    client = endpoint.client(region=region)
    template = IMPORTER.replace("!ImportValue dev-PurchasedTopicArn", "plain")
    client.create_stack(
        StackName="t-dev", TemplateBody=template, Parameters=STAGE, Tags=[{"Key": "a", "Value": "1"}]
    )
    new_tags = [{"Key": "a", "Value": "2"}, {"Key": "b", "Value": "3"}]
    client.update_stack(StackName="t-dev", TemplateBody=template, Parameters=STAGE, Tags=new_tags)
    stack = client.describe_stacks(StackName="t-dev")["Stacks"][0]
    assert (stack["StackStatus"], stack["Tags"]) == ("UPDATE_COMPLETE", new_tags)
    no_updates = (400, "ValidationError", "No updates are to be performed.")
    assert (
        client_error(client.update_stack, StackName="t-dev", TemplateBody=template, Parameters=STAGE)
        == no_updates
    )
    # without Parameters moto would update; with the same tags, nothing changes either
    assert (
        client_error(client.update_stack, StackName="t-dev", TemplateBody=template, Tags=new_tags)
        == no_updates
    )
    client.update_stack(
        StackName="t-dev", UsePreviousTemplate=True, Parameters=STAGE, Tags=[]
    )  # tags removed
    assert client.describe_stacks(StackName="t-dev")["Stacks"][0]["Tags"] == []


def test_a_retry_with_the_same_token_is_done_once(endpoint: Endpoint, region: str) -> None:
    client = endpoint.client(region=region)
    first = client.create_stack(StackName="once-dev", TemplateBody=TOPIC, ClientRequestToken="create-1")
    again = client.create_stack(StackName="once-dev", TemplateBody=TOPIC, ClientRequestToken="create-1")
    assert again["StackId"] == first["StackId"]  # not AlreadyExistsException
    assert client_error(
        client.create_stack, StackName="once-dev", TemplateBody=TOPIC, ClientRequestToken="create-2"
    ) == (
        400,
        "AlreadyExistsException",
        "Stack once-dev already exists",
    )
    assert [stack["StackName"] for stack in client.describe_stacks()["Stacks"]] == ["once-dev"]


def test_termination_protection_refuses_a_delete(endpoint: Endpoint, region: str) -> None:
    client = endpoint.client(region=region)
    client.create_stack(StackName="kept-dev", TemplateBody=TOPIC, EnableTerminationProtection=True)
    assert client_error(client.delete_stack, StackName="kept-dev") == (
        400,
        "ValidationError",
        "Stack [kept-dev] cannot be deleted while TerminationProtection is enabled",
    )
    assert status(client, "kept-dev") == "CREATE_COMPLETE"


BROKEN_ROLE = {"Role": {"Type": "AWS::IAM::Role"}}  # moto raises KeyError: an HTML 500 without the gate


def test_a_moto_crash_is_an_aws_error_that_explains_itself(endpoint: Endpoint, region: str) -> None:
    client = endpoint.client(region=region)
    log = local_paths(endpoint.state).log
    body = json.dumps({"Resources": BROKEN_ROLE})
    with pytest.raises(botocore.exceptions.ClientError) as error:
        client.create_stack(StackName="role-dev", TemplateBody=body)
    response = error.value.response
    assert (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["ResponseMetadata"]["RetryAttempts"],
    ) == (400, 0)
    assert response["Error"] == {
        "Type": "Sender",
        "Code": "InternalFailure",
        "Message": "the local endpoint (moto) failed on CreateStack of stack role-dev, resource Role"
        f" (AWS::IAM::Role): KeyError: 'AssumeRolePolicyDocument'; see {log}",
    }
    assert client.describe_stacks()["Stacks"] == []  # nothing left behind
    assert "KeyError: 'AssumeRolePolicyDocument'" in log.read_text()  # and moto's traceback logged

    client.create_stack(StackName="role-dev", TemplateBody=TOPIC)
    grown = json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}, **BROKEN_ROLE}})
    assert client_error(client.update_stack, StackName="role-dev", TemplateBody=grown) == (
        400,
        "InternalFailure",
        "the local endpoint (moto) failed on UpdateStack of stack role-dev, resource Role (AWS::IAM::Role):"
        f" KeyError: 'AssumeRolePolicyDocument'; see {log}",
    )
    assert status(client, "role-dev") == "UPDATE_ROLLBACK_COMPLETE"
    assert client.get_template(StackName="role-dev")["TemplateBody"] == TOPIC


def _vpc(kind: str, **properties: Any) -> dict[str, Any]:
    return {"Type": f"AWS::EC2::{kind}", "Properties": properties}


VPC = {"Ref": "Vpc"}
NETWORK = {
    "Resources": {
        "Vpc": _vpc("VPC", CidrBlock="10.0.0.0/16"),
        "Subnet": _vpc("Subnet", VpcId=VPC, CidrBlock="10.0.1.0/24"),
        "Igw": _vpc("InternetGateway"),
        "Attach": _vpc("VPCGatewayAttachment", VpcId=VPC, InternetGatewayId={"Ref": "Igw"}),
        "Group": _vpc("SecurityGroup", GroupDescription="x", VpcId=VPC),
        "Routes": _vpc("RouteTable", VpcId=VPC),
        "Route": _vpc(
            "Route",
            RouteTableId={"Ref": "Routes"},
            DestinationCidrBlock="0.0.0.0/0",
            GatewayId={"Ref": "Igw"},
        ),
        "Assoc": _vpc(
            "SubnetRouteTableAssociation", SubnetId={"Ref": "Subnet"}, RouteTableId={"Ref": "Routes"}
        ),
        "Eip": _vpc("EIP", Domain="vpc"),
        "Nat": _vpc(
            "NatGateway", SubnetId={"Ref": "Subnet"}, AllocationId={"Fn::GetAtt": ["Eip", "AllocationId"]}
        ),
    },
    "Outputs": {
        "VpcId": {"Value": VPC, "Export": {"Name": "net-VpcId"}},
        "SubnetId": {"Value": {"Ref": "Subnet"}, "Export": {"Name": "net-SubnetId"}},
    },
}


def test_a_failed_delete_leaves_no_export_behind(endpoint: Endpoint, region: str) -> None:
    """moto fails to delete the VPC (what it made for the other resources): it drops the stack, keeps its
    exports, and the next create would fail with "Export names must be unique"."""
    client = endpoint.client(region=region)
    stack_id = client.create_stack(StackName="net-dev", TemplateBody=json.dumps(NETWORK))["StackId"]
    vpc = exports(client)["net-VpcId"]
    client.delete_stack(StackName="net-dev")
    assert status(client, stack_id) == "DELETE_COMPLETE"
    assert last_events(client, stack_id, 2) == [
        ("DELETE_IN_PROGRESS", "User Initiated"),
        (
            "DELETE_COMPLETE",
            f"moto could not delete Vpc (AWS::EC2::VPC): The vpc {vpc} has dependencies and cannot be deleted."
            " The stack is deleted all the same, its exports are released, and what moto kept stays in its"
            " memory until the local endpoint restarts",
        ),
    ]
    assert exports(client) == {}
    client.create_stack(StackName="net-dev", TemplateBody=json.dumps(NETWORK))
    assert status(client, "net-dev") == "CREATE_COMPLETE"


UNMODELLED = """
import json, pathlib, sys
from phasedoit.local import unmodelled_types
found = unmodelled_types(pathlib.Path(sys.argv[1]), sys.argv[2:])
print(json.dumps([found, "moto" in sys.modules]))
"""


def test_resource_types_moto_does_not_model(endpoint: Endpoint) -> None:
    types = ["AWS::SNS::Topic", "AWS::ElastiCache::CacheCluster", "AWS::SNS::Subscription", "Custom::Seed"]
    types += ["AWS::CloudFormation::WaitConditionHandle"]
    cache = local_paths(endpoint.state).moto_types
    for _ in range(2):  # asked of the running server, then read from the cache it leaves
        run = subprocess.run(
            [sys.executable, "-c", UNMODELLED, str(endpoint.state), *types],
            env={**os.environ, "PYTHONPATH": os.getcwd()},
            capture_output=True,
            text=True,
            check=True,
        )
        # moto stays out of the caller's process
        assert json.loads(run.stdout) == [["AWS::ElastiCache::CacheCluster", "AWS::SNS::Subscription"], False]
        assert cache.exists()
