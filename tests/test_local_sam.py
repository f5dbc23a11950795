"""SAM on the local endpoint: AWS's translator expands the template; moto then creates what it expands to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from phasedoit import local_sam
from phasedoit.local import Credentials, credentials, ensure_endpoint, stop_endpoint
from phasedoit.local_cloudformation import TEMPLATE_REWRITERS, Call
from phasedoit.local_sam import SamError

SAM_FUNCTION = {
    "Transform": "AWS::Serverless-2016-10-31",
    "Parameters": {"Stage": {"Type": "String"}, "Memory": {"Type": "Number", "Default": 256}},
    "Resources": {
        "Fn": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Runtime": "python3.12",
                "Handler": "app.handler",
                "CodeUri": "s3://code-bucket/abc.zip",
                "MemorySize": {"Ref": "Memory"},
                "Policies": ["AWSLambdaBasicExecutionRole", {"SQSPollerPolicy": {"QueueName": "q"}}],
                "Events": {
                    "Jobs": {"Type": "SQS", "Properties": {"Queue": {"Fn::GetAtt": ["Queue", "Arn"]}}}
                },
            },
        },
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Fn::Sub": "${Stage}-jobs"}}},
    },
}


def test_a_template_without_the_transform_is_left_as_it_is() -> None:
    body = json.dumps({"Resources": {"T": {"Type": "AWS::SNS::Topic"}}})
    assert local_sam.expand_if_sam(body, {}, "us-east-1") is body
    assert local_sam.expand_if_sam("not: [a template", {}, "us-east-1") == "not: [a template"


def test_a_sam_function_expands_to_its_function_role_and_events() -> None:
    expanded = json.loads(local_sam.expand_if_sam(json.dumps(SAM_FUNCTION), {"Stage": "dev"}, "eu-west-1"))
    assert "Transform" not in expanded
    resources = expanded["Resources"]
    assert {name: r["Type"] for name, r in resources.items()} == {
        "Fn": "AWS::Lambda::Function",
        "FnRole": "AWS::IAM::Role",
        "FnJobs": "AWS::Lambda::EventSourceMapping",
        "Queue": "AWS::SQS::Queue",
    }
    assert resources["Fn"]["Properties"]["Code"] == {"S3Bucket": "code-bucket", "S3Key": "abc.zip"}
    # the managed policy's ARN from the translator's own map, no IAM call
    assert resources["FnRole"]["Properties"]["ManagedPolicyArns"] == [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",  # for its SQS event
    ]


def test_a_yaml_body_with_short_forms() -> None:
    body = (
        "Transform: AWS::Serverless-2016-10-31\n"
        "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n"
        "    Properties:\n      Runtime: python3.12\n      Handler: app.handler\n"
        "      CodeUri: s3://b/k.zip\n      Role: !GetAtt R.Arn\n"
        "  R:\n    Type: AWS::IAM::Role\n    Properties: {AssumeRolePolicyDocument: {}}\n"
    )
    expanded = json.loads(local_sam.expand_if_sam(body, {}, "us-east-1"))
    assert expanded["Resources"]["Fn"]["Properties"]["Role"] == {"Fn::GetAtt": ["R", "Arn"]}


def test_an_invalid_sam_template_is_refused_as_cloudformation_does() -> None:
    template = json.loads(json.dumps(SAM_FUNCTION))
    template["Resources"]["Fn"]["Properties"]["Events"]["Jobs"]["Type"] = "Nope"
    with pytest.raises(SamError) as error:
        local_sam.expand_if_sam(json.dumps(template), {}, "us-east-1")
    assert str(error.value) == (
        "Transform AWS::Serverless-2016-10-31 failed with: Invalid Serverless Application Specification document."
        " Number of errors found: 1. Resource with id [Fn] is invalid."
        " Event with id [Jobs] is invalid. Resource dict has missing or invalid value for key Type. Event Type is: Nope."
    )


def test_the_gate_rewrites_a_request_with_its_parameters() -> None:
    pairs = [
        ("Action", "CreateStack"),
        ("StackName", "jobs-dev"),
        ("TemplateBody", json.dumps(SAM_FUNCTION)),
        ("Parameters.member.1.ParameterKey", "Stage"),
        ("Parameters.member.1.ParameterValue", "dev"),
        ("Parameters.member.2.ParameterKey", "Memory"),
        ("Parameters.member.2.ParameterValue", "512"),
    ]
    call = Call({}, pairs, "000000000000", "eu-west-1")
    expanded = json.loads(local_sam.rewrite(json.dumps(SAM_FUNCTION), call))
    assert expanded["Resources"]["Queue"]["Properties"]["QueueName"] == {"Fn::Sub": "${Stage}-jobs"}
    assert expanded["Resources"]["Fn"]["Type"] == "AWS::Lambda::Function"
    assert local_sam.rewrite in TEMPLATE_REWRITERS


# ---- through the local endpoint ------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    url: str
    credentials: Credentials


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """One local endpoint for these tests: it takes seconds to start."""
    state = tmp_path_factory.mktemp("local") / ".phasedoit"
    yield Endpoint(ensure_endpoint(state), credentials(state))
    stop_endpoint(state)


def aws(endpoint: Endpoint, service: str) -> Any:
    """A client signed with the endpoint's own credentials (it serves its owner only)."""
    make: Any = boto3.client  # any service by name
    key, secret = endpoint.credentials
    return make(
        service,
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def test_a_sam_stack_on_the_local_endpoint_has_its_function(endpoint: Endpoint) -> None:
    s3 = aws(endpoint, "s3")
    s3.create_bucket(Bucket="code-bucket")
    s3.put_object(Bucket="code-bucket", Key="abc.zip", Body=b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    cfn = aws(endpoint, "cloudformation")
    parameters = [{"ParameterKey": "Stage", "ParameterValue": "dev"}]
    cfn.create_stack(StackName="jobs-dev", TemplateBody=json.dumps(SAM_FUNCTION), Parameters=parameters)
    assert cfn.describe_stacks(StackName="jobs-dev")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    resources = {
        r["LogicalResourceId"]: r
        for r in cfn.describe_stack_resources(StackName="jobs-dev")["StackResources"]
    }
    assert sorted(resources) == ["Fn", "FnJobs", "FnRole", "Queue"]
    function = aws(endpoint, "lambda").get_function(FunctionName=resources["Fn"]["PhysicalResourceId"])
    assert function["Configuration"]["MemorySize"] == 256
    mappings = aws(endpoint, "lambda").list_event_source_mappings(
        FunctionName=resources["Fn"]["PhysicalResourceId"]
    )
    assert [m["EventSourceArn"].rsplit(":", 1)[1] for m in mappings["EventSourceMappings"]] == ["dev-jobs"]


def test_a_refused_sam_template_on_the_local_endpoint(endpoint: Endpoint) -> None:
    cfn = aws(endpoint, "cloudformation")
    template = {
        "Transform": "AWS::Serverless-2016-10-31",
        "Resources": {"Fn": {"Type": "AWS::Serverless::Function"}},
    }
    with pytest.raises(cfn.exceptions.ClientError) as error:
        cfn.create_stack(StackName="bad", TemplateBody=json.dumps(template))
    assert error.value.response["Error"]["Code"] == "ValidationError"
    assert str(error.value.response["Error"]["Message"]).startswith(
        "Transform AWS::Serverless-2016-10-31 failed with:"
    )
    assert "bad" not in [s["StackName"] for s in cfn.describe_stacks()["Stacks"]]
