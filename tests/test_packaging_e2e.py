"""Code packaging end to end: `doit` run on copies of apps with code, SAM and large templates."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from phasedoit import local, packaging
from phasedoit.packaging import human_size
from tests.conftest import UP_TO_DATE, Moto, copy_app, doit, sample_app
from tests.recording import Recorder, recording_proxy


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """The repo's sample app, alone in a folder."""
    source = sample_app(tmp_path / "source")
    return copy_app(source, tmp_path / "shop")


def lines(text: str, *starts: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(starts)]


MOTO_KEYS = ("testing", "testing")


def client(url: str, service: str, keys: tuple[str, str]) -> Any:
    """A client of `url` signed with `keys` (the local endpoint answers its own credentials only)."""
    make: Any = boto3.client  # any service by name
    return make(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
    )


def code_object(url: str, stack: str, keys: tuple[str, str]) -> bytes:
    """The zip that the stack's template points its function at, read from the bucket."""
    template = client(url, "cloudformation", keys).get_template(StackName=stack)["TemplateBody"]
    [code] = [
        r["Properties"]["Code"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    ]
    body: bytes = (
        client(url, "s3", keys).get_object(Bucket=code["S3Bucket"], Key=code["S3Key"])["Body"].read()
    )
    return body


def zipped(folder: Path) -> str:
    """The size of the zip of `folder`, as zlib compresses here."""
    return human_size(len(packaging.make_zip(folder, packaging.DEFAULT_EXCLUDE, folder, "")[0]))


def sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# ---- the sample app on the local endpoint ------------------------------------------------------------------


@pytest.fixture
def on_local(shop: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A new user's machine: no AWS variables; stage dev deploys to the embedded endpoint."""
    for name in [n for n in os.environ if n.startswith(("AWS_", "PHASEDOIT_"))]:
        monkeypatch.delenv(name)
    yield shop
    local.stop_endpoint(shop / ".phasedoit")


def test_the_sample_app_with_code_and_sam_on_the_local_endpoint(on_local: Path) -> None:
    shop = on_local
    first = doit(shop, "-n", "4", "deploy")
    assert first.returncode == 0, first.stdout + first.stderr
    url = local.endpoint_status(shop / ".phasedoit").url
    assert url is not None
    keys = local.credentials(shop / ".phasedoit")
    # sizes as zlib compresses here
    api, job = (
        human_size(len(code_object(url, stack, keys)))
        for stack in ("checkout-api-dev", "confirmation-job-dev")
    )
    assert sorted(lines(first.stderr, "checkout-api: uploading", "confirmation-job: uploading")) == [
        f"checkout-api: uploading src/ ({api})",
        f"confirmation-job: uploading src/ ({job})",
    ]
    functions = client(url, "lambda", keys)
    # the function runs the zip that was uploaded
    checkout = functions.get_function(FunctionName="dev-checkout")["Configuration"]
    assert checkout["CodeSha256"] == sha256(code_object(url, "checkout-api-dev", keys))
    assert checkout["Handler"] == "checkout.handler"
    # the SAM function exists, with the role and the permission its SNS event expands to
    resources = client(url, "cloudformation", keys).describe_stack_resources(StackName="confirmation-job-dev")
    # (moto lists the subscription, which it skips, with no type)
    assert sorted(r["ResourceType"] for r in resources["StackResources"] if "ResourceType" in r) == [
        "AWS::IAM::Role", "AWS::Lambda::Function", "AWS::Lambda::Permission",
    ]  # fmt: skip
    assert (
        functions.get_function(FunctionName="dev-confirmation-job")["Configuration"]["Runtime"]
        == "python3.12"
    )

    again = doit(shop, "-n", "4", "deploy")  # nothing changed: nothing uploaded, nothing deployed
    assert (again.returncode, again.stderr) == (0, "")
    assert sorted(again.stdout.splitlines()[:-1]) == sorted(UP_TO_DATE)

    handler = shop / "services" / "checkout-api" / "src" / "checkout.py"
    handler.write_text(handler.read_text().replace("202", "201"))
    edited = doit(shop, "-n", "4", "deploy")
    assert edited.returncode == 0, edited.stderr
    assert sorted(lines(edited.stdout, "checkout-api", "confirmation-job", "reset-cart-job")) == [
        "checkout-api: deploying (changed files: src/)",
        "confirmation-job: up to date",  # the topic's ARN it imports is the same
        "reset-cart-job: up to date",
    ]
    size = human_size(len(code_object(url, "checkout-api-dev", keys)))
    assert lines(edited.stderr, "checkout-api: uploading") == [f"checkout-api: uploading src/ ({size})"]
    updated = functions.get_function(FunctionName="dev-checkout")["Configuration"]["CodeSha256"]
    assert updated == sha256(code_object(url, "checkout-api-dev", keys)) != checkout["CodeSha256"]


# ---- moto as AWS: the template CloudFormation receives ------------------------------------------------------


@pytest.fixture
def proxy(moto: Moto, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    with recording_proxy(moto.url) as recorder:
        monkeypatch.setenv("AWS_ENDPOINT_URL", recorder.url)
        yield recorder


def test_aws_receives_s3_locations_and_the_transform(shop: Path, moto: Moto, proxy: Recorder) -> None:
    result = doit(shop, "-n", "4", "deploy")
    assert result.returncode == 0, result.stderr
    cfn = moto.client()
    checkout = cfn.get_template(StackName="checkout-api-dev")["TemplateBody"]["Resources"]["CheckoutFunction"]
    assert set(checkout["Properties"]["Code"]) == {"S3Bucket", "S3Key"}
    job = cfn.get_template(StackName="confirmation-job-dev")["TemplateBody"]
    assert job["Transform"] == "AWS::Serverless-2016-10-31"  # AWS expands it
    code_uri = job["Resources"]["ConfirmationFunction"]["Properties"]["CodeUri"]
    assert code_uri == f"s3://{checkout['Properties']['Code']['S3Bucket']}/{code_uri.rsplit('/', 1)[1]}"
    [create_job] = [
        dict(r.form)
        for r in proxy.requests
        if dict(r.form).get("StackName") == "confirmation-job-dev" and r.action == "CreateStack"
    ]
    capabilities = [create_job[f"Capabilities.member.{n}"] for n in (1, 2)]
    assert capabilities == ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
    assert len(proxy.uploads()) == 2
    assert moto.account() not in result.stdout + result.stderr

    proxy.requests.clear()
    again = doit(shop, "-n", "4", "deploy")
    assert again.returncode == 0, again.stderr
    assert proxy.uploads() == []
    assert [a for a in proxy.actions() if not a.startswith(("Describe", "List", "Get"))] == []


LARGE = """Resources:
  Fn:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: app.handler
      Code: src
      Role: !GetAtt Role.Arn
  Role:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument: {{Version: '2012-10-17', Statement: []}}
  Db:
    Type: AWS::CloudFormation::Stack
    Properties:
      TemplateURL: nested/db.yml
Metadata:
  Padding: {padding}
"""
NESTED = """Resources:
  Migrate:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: migrate.handler
      Code: migrations/
      Role: !GetAtt Role.Arn
  Role:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument: {Version: '2012-10-17', Statement: []}
"""


def test_a_64_kb_template_and_a_nested_one_go_through_the_bucket(
    tmp_path: Path, moto: Moto, proxy: Recorder
) -> None:
    app = tmp_path / "big"
    service = app / "services" / "big"
    (service / "src").mkdir(parents=True)
    (service / "src" / "app.py").write_text("def handler(event, context):\n    return 1\n")
    (service / "nested" / "migrations").mkdir(parents=True)
    (service / "nested" / "migrations" / "migrate.py").write_text(
        "def handler(event, context):\n    return 2\n"
    )
    (service / "nested" / "db.yml").write_text(NESTED)
    (service / "template.yml").write_text(LARGE.format(padding="x" * 64 * 1024))
    (app / "phases.yml").write_text("app: big\nphases: [[big]]\n")
    copy_app(app, tmp_path / "copy")
    result = doit(tmp_path / "copy", "deploy")
    assert result.returncode == 0, result.stderr
    migrations, src = (zipped(service / path) for path in ("nested/migrations", "src"))
    assert sorted(lines(result.stderr, "big: uploading")) == [
        "big: uploading nested/db.yml (428 B)",
        f"big: uploading nested/migrations/ ({migrations})",
        f"big: uploading src/ ({src})",
        "big: uploading template.yml (65 KB)",
    ]
    [create] = [r for r in proxy.requests if r.action == "CreateStack"]
    cfn = moto.client()
    stacks = {s["StackName"]: s for s in cfn.describe_stacks()["Stacks"]}
    assert stacks["big-dev"]["StackStatus"] == "CREATE_COMPLETE"
    assert len(json.dumps(cfn.get_template(StackName="big-dev")["TemplateBody"])) > 64 * 1024
    [nested] = [name for name in stacks if name.startswith("big-dev-Db-")]
    migrate = cfn.describe_stack_resource(StackName=nested, LogicalResourceId="Migrate")[
        "StackResourceDetail"
    ]
    uploaded = client(moto.url, "lambda", MOTO_KEYS).get_function(FunctionName=migrate["PhysicalResourceId"])
    assert uploaded["Configuration"]["Handler"] == "migrate.handler"
    assert ("TemplateURL" in dict(create.form), "TemplateBody" in dict(create.form)) == (True, False)
