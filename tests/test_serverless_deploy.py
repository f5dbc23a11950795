"""A Serverless Framework service packaged by the real framework (osls) and deployed by phasedoit: the sample
app's receipt-job end to end on the local endpoint, and what phasedoit refuses of a packaged template."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phasedoit import deployers, local
from phasedoit.config import load_config
from phasedoit.deployers.serverless import check_packaged
from phasedoit.deployers.serverless_framework import ServerlessRun
from phasedoit.errors import PhasedoitError
from phasedoit.packaging import BUCKET, Store
from phasedoit.planning import plan_stage
from phasedoit.serverless_package import Packaged, as_package
from tests.conftest import copy_app, doit, sample_app
from tests.osls import osls
from tests.test_packaging_e2e import client, lines


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The whole sample app, its framework the installed osls; a new user's machine: no AWS variables."""
    source = sample_app(tmp_path / "source", framework=osls())
    for name in [n for n in os.environ if n.startswith(("AWS_", "PHASEDOIT_"))]:
        monkeypatch.delenv(name)
    app = copy_app(source, tmp_path / "shop")
    yield app
    local.stop_endpoint(app / ".phasedoit")


def sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_a_serverless_service_packaged_and_deployed_on_the_local_endpoint(shop: Path) -> None:
    first = doit(shop, "-n", "4", "deploy")
    assert first.returncode == 0, first.stdout + first.stderr
    # its importers after its exporters: receipt-job in phase 2, after checkout-api's deploy
    out = first.stdout.splitlines()
    assert out.index("receipt-job: deploying (never deployed)") > out.index("phase 2 'jobs'")
    err = first.stderr.splitlines()
    created = [i for i, line in enumerate(err) if line.startswith("checkout-api: created")]
    packaging = err.index("receipt-job: packaging with osls")
    assert created
    assert created[0] < packaging
    url = local.endpoint_status(shop / ".phasedoit").url
    assert url is not None
    keys = local.credentials(shop / ".phasedoit")
    cfn = client(url, "cloudformation", keys)
    stack = cfn.describe_stacks(StackName="receipt-job-dev")["Stacks"][0]
    tags = {tag["Key"]: tag["Value"] for tag in stack["Tags"]}
    assert {k: v for k, v in tags.items() if k != "phasedoit:fingerprint"} == {
        "phasedoit:app": "shop",
        "phasedoit:stage": "dev",
        "phasedoit:service": "receipt-job",
    }
    template = cfn.get_template(StackName="receipt-job-dev")["TemplateBody"]
    # the framework's own bucket is gone: phasedoit's artifacts bucket holds its code
    assert "ServerlessDeploymentBucket" not in template["Resources"]
    assert "ServerlessDeploymentBucketName" not in template.get("Outputs", {})
    code = template["Resources"]["ReceiptLambdaFunction"]["Properties"]["Code"]
    zipped = client(url, "s3", keys).get_object(Bucket=code["S3Bucket"], Key=code["S3Key"])["Body"].read()
    assert code["S3Key"] == f"{hashlib.sha256(zipped).hexdigest()}.zip"
    assert lines(first.stderr, "receipt-job: uploading") == [
        f"receipt-job: uploading receipt-job.zip ({len(zipped)} B)"
    ]
    function = client(url, "lambda", keys).get_function(FunctionName="receipt-job-dev-receipt")
    # the function runs the framework's zip, and imports the topic
    assert function["Configuration"]["CodeSha256"] == sha256(zipped)
    topic = cfn.describe_stacks(StackName="checkout-api-dev")["Stacks"][0]["Outputs"]
    [arn] = [o["OutputValue"] for o in topic if o.get("ExportName") == "dev-PurchasedTopicArn"]
    assert function["Configuration"]["Environment"]["Variables"] == {"TOPIC_ARN": arn}

    again = doit(shop, "-n", "4", "deploy")  # nothing changed: no packaging, no write call
    assert (again.returncode, again.stderr) == (0, "")
    assert "receipt-job: up to date" in again.stdout.splitlines()

    handler = shop / "services" / "receipt-job" / "handler.py"
    handler.write_text(handler.read_text().replace("receipts", "sent"))
    edited = doit(shop, "-n", "4", "deploy")
    assert edited.returncode == 0, edited.stderr
    assert sorted(
        lines(edited.stdout, "checkout-api", "confirmation-job", "reset-cart-job", "receipt-job")
    ) == [
        "checkout-api: up to date",
        "confirmation-job: up to date",
        "receipt-job: deploying (changed files: handler.py)",
        "reset-cart-job: up to date",
    ]
    code = cfn.get_template(StackName="receipt-job-dev")["TemplateBody"]["Resources"]["ReceiptLambdaFunction"]
    key = code["Properties"]["Code"]["S3Key"]
    rezipped = client(url, "s3", keys).get_object(Bucket=code["Properties"]["Code"]["S3Bucket"], Key=key)
    data = rezipped["Body"].read()
    updated = client(url, "lambda", keys).get_function(FunctionName="receipt-job-dev-receipt")
    assert updated["Configuration"]["CodeSha256"] == sha256(data) != sha256(zipped)

    for state in (shop / ".phasedoit").glob("doit-dev.db*"):
        state.unlink()
    fresh = doit(shop, "-n", "4", "deploy")  # a fresh checkout: the fingerprint is on the stack
    assert (fresh.returncode, fresh.stderr) == (0, "")
    assert "receipt-job: up to date" in fresh.stdout.splitlines()


def packaged(tmp_path: Path, template: dict[str, Any]) -> Packaged:
    (tmp_path / "job.zip").write_bytes(b"PK not really a zip")
    return Packaged(tmp_path, template, "job-dev")


FUNCTION = {
    "Type": "AWS::Lambda::Function",
    "Properties": {
        "Code": {"S3Bucket": {"Ref": "ServerlessDeploymentBucket"}, "S3Key": "serverless/job/dev/1/job.zip"},
        "Environment": {"Variables": {"A": {"Fn::ImportValue": "dev-A"}, "B": {"Fn::ImportValue": "dev-B"}}},
    },
}


def test_an_import_the_plan_did_not_know_of_is_refused(tmp_path: Path) -> None:
    run = ServerlessRun(str(tmp_path), "services/job/serverless.yml", "job-dev", "dev", imports=("dev-A",))
    with pytest.raises(PhasedoitError) as e:
        check_packaged(run, packaged(tmp_path, {"Resources": {"F": FUNCTION}}), {})
    assert str(e.value) == (
        "services/job/serverless.yml: its packaged template imports dev-B, which phasedoit did not find in"
        " serverless.yml, so its phase is not checked: nothing was deployed"
    )


def test_another_stack_name_is_refused(tmp_path: Path) -> None:
    run = ServerlessRun(str(tmp_path), "services/job/serverless.yml", "job-qa", "dev")
    with pytest.raises(PhasedoitError) as e:
        check_packaged(run, packaged(tmp_path, {"Resources": {}}), {})
    assert str(e.value) == (
        "services/job/serverless.yml: the framework names its stack job-dev, phasedoit read job-qa:"
        " nothing was deployed"
    )


def test_the_zips_go_to_the_artifacts_bucket(tmp_path: Path) -> None:
    template = {
        "Resources": {"ServerlessDeploymentBucket": {"Type": "AWS::S3::Bucket"}, "F": FUNCTION},
        "Outputs": {"ServerlessDeploymentBucketName": {"Value": {"Ref": "ServerlessDeploymentBucket"}}},
    }
    package = as_package(packaged(tmp_path, template), "services/job/serverless.yml", Store("b", "eu-west-1"))
    [artifact] = package.artifacts
    assert artifact.key == f"{hashlib.sha256(b'PK not really a zip').hexdigest()}.zip"
    body = json.loads(package.body)
    assert body["Outputs"] == {}
    assert list(body["Resources"]) == ["F"]
    assert body["Resources"]["F"]["Properties"]["Code"] == {"S3Bucket": BUCKET, "S3Key": artifact.key}
    assert package.capabilities == ("CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND")


def test_a_template_using_the_framework_bucket_is_refused(tmp_path: Path) -> None:
    uses = {"Type": "Custom::Thing", "Properties": {"Bucket": {"Ref": "ServerlessDeploymentBucket"}}}
    template = {"Resources": {"F": FUNCTION, "Uses": uses}}
    with pytest.raises(PhasedoitError) as e:
        as_package(packaged(tmp_path, template), "services/job/serverless.yml", Store())
    assert str(e.value) == (
        "services/job/serverless.yml: Uses of its packaged template refers to the framework's"
        " ServerlessDeploymentBucket, which phasedoit's artifacts bucket replaces: deploy it with"
        " `deploy_with: framework`"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            "api: {deploy_with: framework}",
            "phases.yml: services.api.deploy_with: only for a Serverless Framework service,"
            " not services/api/template.yml",
        ),
        (
            "job: {deploy_with: serverless}",
            "phases.yml: services.job.deploy_with: expected 'phasedoit' or 'framework', got 'serverless'",
        ),
    ],
)
def test_deploy_with_in_phases_yml(tmp_path: Path, settings: str, message: str) -> None:
    for name, file, text in (
        ("api", "template.yml", "Resources: {}\n"),
        ("job", "serverless.yml", "service: job\n"),
    ):
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / file).write_text(text)
    (tmp_path / "phases.yml").write_text(f"app: shop\nservices: {{{settings}}}\n")
    with pytest.raises(PhasedoitError) as e:
        load_config(tmp_path / "phases.yml")
    assert str(e.value) == message


def test_a_framework_service_deploys_with_its_own_deployer(tmp_path: Path) -> None:
    (tmp_path / "services" / "job").mkdir(parents=True)
    (tmp_path / "services" / "job" / "serverless.yml").write_text("service: job\nprovider: {name: aws}\n")
    (tmp_path / "phases.yml").write_text("app: shop\nservices: {job: {deploy_with: framework}}\n")
    job = plan_stage(load_config(tmp_path / "phases.yml"), "dev", {}).services["job"]
    assert (job.deployer, job.stack) == ("serverless_framework", "job-dev")
    assert deployers.get(job.deployer).FINGERPRINT_ON_STACK is False
    assert deployers.get("serverless").FINGERPRINT_ON_STACK is True
