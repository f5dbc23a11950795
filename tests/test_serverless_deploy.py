"""A Serverless Framework service packaged by the real framework (osls) and deployed by phasedoit, end to end
on the local endpoint: the sample app with one Serverless service importing checkout-api's topic."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from phasedoit import local
from tests.conftest import REPO, copy_app, doit
from tests.osls import osls
from tests.test_packaging_e2e import client, lines

RECEIPT_JOB = REPO / "tests" / "fixtures" / "receipt-job"


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The sample app with receipt-job in its second phase; no AWS variables; the framework on PATH."""
    framework = osls()
    source = tmp_path / "source"
    shutil.copytree(REPO / "services", source / "services")
    shutil.copytree(RECEIPT_JOB, source / "services" / "receipt-job")
    phases = (REPO / "phases.yml").read_text()
    jobs = "services: [confirmation-job, reset-cart-job]"
    (source / "phases.yml").write_text(phases.replace(jobs, jobs.replace("]", ", receipt-job]")))
    for name in [n for n in os.environ if n.startswith(("AWS_", "PHASEDOIT_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATH", f"{framework.parent}{os.pathsep}{os.environ['PATH']}")
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
    packaging = err.index("receipt-job: packaging with serverless")
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
