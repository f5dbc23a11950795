"""The artifacts bucket against the session's moto server (it serves S3, STS, Lambda and CloudFormation)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from phasedoit import artifacts, packaging
from phasedoit.errors import PhasedoitError
from phasedoit.packaging import Package, Store
from phasedoit.stack import Target
from tests.conftest import Moto
from tests.recording import Recorder, recording_proxy

REGION = "eu-west-1"
HANDLER = "def handler(event, context):\n    return {'statusCode': 200}\n"
FUNCTION = {
    "Resources": {
        "Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {"AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []}},
        },
        "Fn": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Runtime": "python3.12",
                "Handler": "app.handler",
                "Role": {"Fn::GetAtt": ["Role", "Arn"]},
                "Code": "src",
            },
        },
    }
}


def ignore(line: str) -> None:
    pass


@pytest.fixture(autouse=True)
def fresh_process(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test is a new worker process: moto was reset, so no bucket is known to exist.

    The targets name their endpoint (moto, or a proxy in front of it), as a stage's `endpoint:` does.
    """
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    artifacts._opened.clear()
    yield
    artifacts._opened.clear()


@pytest.fixture
def proxy(moto: Moto) -> Iterator[Recorder]:
    with recording_proxy(moto.url) as recorder:
        yield recorder


@pytest.fixture
def api(tmp_path: Path) -> Path:
    folder = tmp_path / "services" / "api"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "app.py").write_text(HANDLER)
    return folder


def package(folder: Path, template: dict[str, Any] = FUNCTION, bucket: str | None = None) -> Package:
    return packaging.package_template(
        template,
        folder / "template.yml",
        "services/api/template.yml",
        folder=folder,
        root=folder.parent.parent,
        exclude=(),
        store=Store(bucket, REGION),
    )


def client(moto: Moto, service: str) -> Any:
    make: Any = boto3.client  # any service by name: its stubs want a literal
    return make(
        service, endpoint_url=moto.url, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t"
    )


def test_first_use_creates_the_bucket_then_uploads(api: Path, moto: Moto, proxy: Recorder) -> None:
    found = package(api)
    said: list[str] = []
    request = artifacts.prepare(Target(REGION, proxy.url), found, said.append)
    bucket = packaging.default_bucket(moto.account(), REGION)
    [code] = found.artifacts
    assert said == ["uploading src/ (170 B)"]
    assert proxy.uploads() == [f"/{bucket}/{code.key}"]
    sent = json.loads(request["TemplateBody"])["Resources"]["Fn"]["Properties"]["Code"]
    assert sent == {"S3Bucket": bucket, "S3Key": code.key}
    s3 = client(moto, "s3")
    assert s3.get_object(Bucket=bucket, Key=code.key)["Body"].read() == packaging.build(code, bucket, REGION)
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == REGION
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    [rule] = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    [expiry] = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert (expiry["ID"], expiry["Expiration"]) == ("phasedoit-old-artifacts", {"Days": 365})
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket=bucket)  # TLS only, but for an endpoint without TLS


def test_the_deployed_function_has_the_uploaded_code(api: Path, moto: Moto) -> None:
    request = artifacts.prepare(Target(REGION, moto.url), package(api), ignore)
    cfn = client(moto, "cloudformation")
    cfn.create_stack(StackName="api", **request)
    [fn] = [
        r
        for r in cfn.describe_stack_resources(StackName="api")["StackResources"]
        if r["LogicalResourceId"] == "Fn"
    ]
    code = client(moto, "lambda").get_function(FunctionName=fn["PhysicalResourceId"])["Configuration"][
        "CodeSha256"
    ]
    location = json.loads(request["TemplateBody"])["Resources"]["Fn"]["Properties"]["Code"]
    uploaded = (
        client(moto, "s3").get_object(Bucket=location["S3Bucket"], Key=location["S3Key"])["Body"].read()
    )
    assert code == base64.b64encode(hashlib.sha256(uploaded).digest()).decode()


def test_a_rerun_uploads_nothing_and_says_nothing(api: Path, proxy: Recorder) -> None:
    target = Target(REGION, proxy.url)
    first = artifacts.prepare(target, package(api), ignore)
    artifacts._opened.clear()  # the next run, in another process
    proxy.requests.clear()
    said: list[str] = []
    assert artifacts.prepare(target, package(api), said.append) == first
    assert (said, proxy.uploads()) == ([], [])
    assert [(r.method, r.action) for r in proxy.requests] == [
        ("POST", "GetCallerIdentity"),  # the account, for the default bucket's name
        ("HEAD", ""),  # the bucket
        ("HEAD", ""),  # the object
    ]


def test_an_edit_uploads_that_one(api: Path, proxy: Recorder) -> None:
    target = Target(REGION, proxy.url)
    template = json.loads(json.dumps(FUNCTION))
    template["Resources"]["Other"] = json.loads(json.dumps(FUNCTION["Resources"]["Fn"]))
    template["Resources"]["Other"]["Properties"]["Code"] = "other"
    (api / "other").mkdir()
    (api / "other" / "app.py").write_text(HANDLER)
    artifacts.prepare(target, package(api, template), ignore)
    (api / "other" / "app.py").write_text(HANDLER + "# edited\n")
    said: list[str] = []
    proxy.requests.clear()
    artifacts.prepare(target, package(api, template), said.append)
    assert said == ["uploading other/ (179 B)"]
    assert len(proxy.uploads()) == 1


def test_a_large_template_goes_through_the_bucket(api: Path, moto: Moto) -> None:
    template = {**FUNCTION, "Description": "x" * 1000, "Metadata": {"Padding": "y" * 64 * 1024}}
    found = package(api, template)
    said: list[str] = []
    request = artifacts.prepare(Target(REGION, moto.url), found, said.append)
    bucket = packaging.default_bucket(moto.account(), REGION)
    assert found.template is not None
    assert request == {"TemplateURL": f"https://s3.{REGION}.amazonaws.com/{bucket}/{found.template.key}"}
    assert said == ["uploading src/ (170 B)", "uploading template.yml (65 KB)"]
    cfn = client(moto, "cloudformation")
    cfn.create_stack(StackName="big", **request)
    assert cfn.describe_stacks(StackName="big")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert len(json.dumps(cfn.get_template(StackName="big")["TemplateBody"])) > 64 * 1024


def test_a_configured_bucket_is_used_as_it_is(api: Path, moto: Moto, proxy: Recorder) -> None:
    client(moto, "s3").create_bucket(
        Bucket="team-artifacts", CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    proxy.requests.clear()
    found = package(api, bucket="team-artifacts")
    request = artifacts.prepare(Target(REGION, proxy.url), found, ignore, "stages.prod.artifacts_bucket")
    assert request == {"TemplateBody": found.body}
    assert proxy.uploads() == [f"/team-artifacts/{found.artifacts[0].key}"]
    assert "GetCallerIdentity" not in proxy.actions()  # no account needed, no bucket created
    assert [r.method for r in proxy.requests] == ["HEAD", "HEAD", "PUT"]


def test_a_configured_bucket_that_does_not_exist(api: Path, moto: Moto) -> None:
    with pytest.raises(PhasedoitError) as error:
        artifacts.prepare(
            Target(REGION, moto.url), package(api, bucket="nope"), ignore, "stages.prod.artifacts_bucket"
        )
    assert str(error.value) == "phases.yml: stages.prod.artifacts_bucket: no bucket nope"


def test_code_changed_after_the_plan_is_not_uploaded(api: Path, proxy: Recorder) -> None:
    found = package(api)
    (api / "src" / "app.py").write_text("changed")
    with pytest.raises(PhasedoitError) as error:
        artifacts.prepare(Target(REGION, proxy.url), found, ignore)
    assert str(error.value) == "src/ changed during the run: deploy again"
    assert proxy.uploads() == []


def test_old_objects_in_use_are_renewed(api: Path, moto: Moto, proxy: Recorder) -> None:
    found = package(api)
    s3, bucket = artifacts.open_bucket(Target(REGION, proxy.url), None)
    artifacts.publish(s3, bucket, found.artifacts, ignore)
    proxy.requests.clear()
    artifacts.publish(s3, bucket, found.artifacts, ignore, now=lambda: _in_days(29))
    assert [r.copy for r in proxy.requests] == [False]  # looked at, young enough
    proxy.requests.clear()
    artifacts.publish(s3, bucket, found.artifacts, ignore, now=lambda: _in_days(31))
    assert [(r.method, r.copy) for r in proxy.requests] == [("HEAD", False), ("PUT", True)]
    head = client(moto, "s3").head_object(Bucket=bucket.name, Key=found.artifacts[0].key)
    assert head["Metadata"] == {"renewed-by": "phasedoit"}


def _in_days(days: int) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)


def test_nothing_to_package_makes_no_call(tmp_path: Path, proxy: Recorder) -> None:
    found = package(tmp_path, {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}})
    assert artifacts.prepare(Target(REGION, proxy.url), found, ignore) == {"TemplateBody": found.body}
    assert proxy.requests == []


def test_no_account_id_in_what_is_said_or_sent(api: Path, moto: Moto) -> None:
    said: list[str] = []
    request = artifacts.prepare(Target(REGION, moto.url), package(api), said.append)
    assert moto.account() not in json.dumps([said, request])
