"""The local endpoint is its owner's: private files, its own credentials, signed requests only."""

from __future__ import annotations

import datetime
import io
import os
import re
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import botocore.config
import botocore.credentials
import botocore.exceptions
import pytest
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.awsrequest import AWSRequest

from phasedoit.local import credentials, local_paths
from tests.test_local import EXPORTER, Endpoint, started

SET_THEM = 'eval "$(phasedoit local env)" sets them'
NOT_SIGNED = (
    "the request is not signed: phasedoit's local endpoint answers only requests signed with its own"
    f" credentials ({SET_THEM})"
)
OTHER_KEY = (
    f"the request is signed with another access key than phasedoit's local endpoint's own ({SET_THEM})"
)
BAD_SIGNATURE = (
    "the request's signature does not match the one computed with phasedoit's local endpoint's secret key"
    f" ({SET_THEM})"
)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    yield from started(tmp_path_factory.mktemp("auth") / ".phasedoit")


def client_with(endpoint: Endpoint, key: str, secret: str, service: str = "cloudformation") -> Any:
    session: Any = boto3.session.Session()  # any service: the stubs' overloads want a literal name
    return session.client(
        service,
        endpoint_url=endpoint.url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )


def refused(call: Any) -> tuple[int, str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as error:
        call()
    response = error.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_its_state_is_its_owners(endpoint: Endpoint) -> None:
    endpoint.client().create_stack(StackName="modes-dev", TemplateBody=EXPORTER.replace("dev-", "modes-"))
    folder = local_paths(endpoint.state).dir
    assert mode(folder) == 0o700
    files = {path.name: mode(path) for path in folder.iterdir()}
    assert files == dict.fromkeys(
        ["credentials.json", "endpoint.json", "lock", "server.log", "stacks.json"], 0o600
    )
    key, secret = credentials(endpoint.state)
    assert re.fullmatch(r"PDLK[A-Z2-7]{16}", key)
    assert len(secret) == 40
    assert credentials(endpoint.state) == (key, secret)  # made once, kept


def test_state_left_open_by_an_older_version_is_closed(tmp_path: Path) -> None:
    folder = tmp_path / ".phasedoit" / "local"
    folder.mkdir(parents=True, mode=0o755)
    (folder / "stacks.json").write_text('{"version": 1, "stacks": []}')
    (folder / "stacks.json").chmod(0o644)
    credentials(tmp_path / ".phasedoit")
    assert (mode(folder), mode(folder / "stacks.json"), mode(folder / "credentials.json")) == (
        0o700,
        0o600,
        0o600,
    )


def test_only_requests_signed_with_its_credentials_are_answered(endpoint: Endpoint) -> None:
    key, secret = credentials(endpoint.state)
    unsigned = boto3.session.Session().client(
        "cloudformation",
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        config=botocore.config.Config(signature_version=UNSIGNED),
    )
    assert refused(unsigned.list_stacks) == (403, "MissingAuthenticationToken", NOT_SIGNED)
    assert refused(client_with(endpoint, "AKIAIOSFODNN7EXAMPLE", secret).list_stacks) == (
        403,
        "InvalidClientTokenId",
        OTHER_KEY,
    )
    assert refused(client_with(endpoint, key, "not-its-secret").list_stacks) == (
        403,
        "SignatureDoesNotMatch",
        BAD_SIGNATURE,
    )
    s3 = client_with(endpoint, "AKIAIOSFODNN7EXAMPLE", secret, "s3")
    assert refused(s3.list_buckets) == (403, "InvalidAccessKeyId", OTHER_KEY)
    assert endpoint.client().list_stacks()["ResponseMetadata"]["HTTPStatusCode"] == 200


def http(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def query_error(body: bytes) -> dict[str, str]:
    """The fields of a query-protocol error document; its RequestId checked, not compared."""
    ns = "{http://cloudformation.amazonaws.com/doc/2010-05-15/}"
    root = ET.fromstring(body)  # noqa: S314 - the local endpoint's own answer
    assert root.tag == f"{ns}ErrorResponse"
    assert re.fullmatch(r"[0-9a-f-]{36}", root.findtext(f"{ns}RequestId") or "")
    error = root.find(f"{ns}Error")  # (an Element's truth is its children: Python 3.12+ warns of testing it)
    assert error is not None
    return {child.tag.removeprefix(ns): child.text or "" for child in error}


def test_moto_api_and_unsigned_http_are_refused(endpoint: Endpoint) -> None:
    client = endpoint.client(region="eu-west-1")
    client.create_stack(StackName="kept-dev", TemplateBody=EXPORTER.replace("dev-", "kept-"))
    moto_api = {
        "Type": "Sender",
        "Code": "AccessDenied",
        "Message": "phasedoit's local endpoint does not serve moto's /moto-api/",
    }
    for method, path in (("POST", "/moto-api/reset"), ("GET", "/moto-api/"), ("GET", "/moto-api/data.json")):
        status, body = http(f"{endpoint.url}{path}", method)
        assert (status, query_error(body)) == (403, moto_api)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, body = http(endpoint.url, "POST", b"Action=DeleteStack&StackName=kept-dev", form)
    assert (status, query_error(body)) == (
        403,
        {"Type": "Sender", "Code": "MissingAuthenticationToken", "Message": NOT_SIGNED},
    )
    status, body = http(f"{endpoint.url}/__phasedoit__/health")
    assert (status, query_error(body)["Code"]) == (403, "AccessDenied")
    assert [stack["StackName"] for stack in client.describe_stacks()["Stacks"]] == ["kept-dev"]


def test_s3_requests_for_artifacts_pass(endpoint: Endpoint) -> None:
    s3 = endpoint.client("s3")
    s3.create_bucket(Bucket="artifacts")
    odd_key = "svc/a b/ü+x=1&y.zip"
    s3.put_object(Bucket="artifacts", Key=odd_key, Body=b"zip bytes")
    assert s3.get_object(Bucket="artifacts", Key=odd_key)["Body"].read() == b"zip bytes"
    big = os.urandom(6 * 1024 * 1024)  # a multipart upload: two parts of S3's 5 MiB minimum
    s3.upload_fileobj(
        io.BytesIO(big), "artifacts", "big.zip", Config=TransferConfig(multipart_threshold=5 * 2**20)
    )
    assert s3.get_object(Bucket="artifacts", Key="big.zip")["Body"].read() == big
    listed = s3.list_objects_v2(Bucket="artifacts", Prefix="svc/")["Contents"]
    assert [item["Key"] for item in listed] == [odd_key]
    key, secret = credentials(endpoint.state)
    v4 = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=botocore.config.Config(signature_version="s3v4"),
    )
    url = v4.generate_presigned_url(
        "get_object", Params={"Bucket": "artifacts", "Key": odd_key}, ExpiresIn=60
    )
    assert http(url) == (200, b"zip bytes")
    status, body = http(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
    assert status == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in body


def signed(
    endpoint: Endpoint,
    *,
    service: str,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    at: datetime.datetime | None = None,
) -> dict[str, str]:
    """The headers botocore's signer gives this request, signed at `at` (now by default)."""
    key, secret = credentials(endpoint.state)
    signer_class = botocore.auth.S3SigV4Auth if service == "s3" else botocore.auth.SigV4Auth
    signer: Any = signer_class(botocore.credentials.Credentials(key, secret), service, "us-east-1")
    request = AWSRequest(method=method, url=f"{endpoint.url}{path}", data=body, headers=headers)
    if at is None:
        signer.add_auth(request)
    else:  # add_auth with another clock: the same steps, the timestamp given
        request.context["timestamp"] = at.strftime("%Y%m%dT%H%M%SZ")
        signer._modify_request_before_signing(request)
        canonical = signer.canonical_request(request)
        signature = signer.signature(signer.string_to_sign(request, canonical), request)
        signer._inject_signature_to_request(request, signature)
    return dict(request.headers.items())


def test_a_changed_or_stale_request_is_refused(endpoint: Endpoint) -> None:
    endpoint.client("s3").create_bucket(Bucket="tamper")
    put = signed(
        endpoint, service="s3", method="PUT", path="/tamper/object", body=b"what was signed", headers={}
    )
    status, body = http(f"{endpoint.url}/tamper/object", "PUT", b"what was sent!!", put)
    assert status == 403
    assert re.fullmatch(
        rb'<\?xml version="1.0" encoding="UTF-8"\?>\n<Error><Code>XAmzContentSHA256Mismatch</Code>'
        rb"<Message>the body does not match its x-amz-content-sha256</Message><RequestId>[0-9a-f-]{36}</RequestId></Error>",
        body,
    )
    form = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    listing = b"Action=ListStacks&Version=2010-05-15"
    headers = signed(endpoint, service="cloudformation", method="POST", path="/", body=listing, headers=form)
    assert http(endpoint.url, "POST", b"Action=DeleteStack&StackName=kept-dev", headers)[0] == 403
    assert http(endpoint.url, "POST", listing, headers)[0] == 200
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    stale = signed(
        endpoint, service="cloudformation", method="POST", path="/", body=listing, headers=form, at=old
    )
    status, body = http(endpoint.url, "POST", listing, stale)
    assert (status, query_error(body)) == (
        403,
        {
            "Type": "Sender",
            "Code": "RequestExpired",
            "Message": f"the request was signed at {old:%Y%m%dT%H%M%SZ}, more than 15 minutes away from the"
            " local endpoint's clock",
        },
    )


def test_local_env_points_the_aws_tools_at_it(endpoint: Endpoint) -> None:
    endpoint.client(region="eu-west-2").create_stack(StackName="env-dev", TemplateBody=EXPORTER)
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "phasedoit.cli",
            "local",
            "env",
            "--state-dir",
            str(endpoint.state),
            "--region",
            "eu-west-2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    key, secret = credentials(endpoint.state)
    assert printed.stdout == (
        f"export AWS_ENDPOINT_URL={endpoint.url} AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret}"
        " AWS_REGION=eu-west-2 AWS_DEFAULT_REGION=eu-west-2\n"
    )
    assert printed.stderr == ""  # already running: nothing to say
    # a shell with nothing but those variables, as a user's `eval "$(phasedoit local env)"` gives
    script = (
        f'eval "$({sys.executable} -m phasedoit.cli local env --state-dir {endpoint.state} --region eu-west-2)"'
        f" && exec {sys.executable} -c 'import boto3;"
        ' print([s["StackName"] for s in boto3.client("cloudformation").describe_stacks()["Stacks"]])'
        "'"
    )
    shell = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": os.environ["PATH"], "HOME": str(endpoint.state)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (shell.returncode, shell.stdout, shell.stderr) == (0, "['env-dev']\n", "")
