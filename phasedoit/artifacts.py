"""The artifacts bucket, the S3 side of packaging: find or create it, upload what it lacks, keep what is used.

Objects are keyed by their content's digest (packaging.py): an object the bucket has is never sent again,
whichever machine or service sent it first.

Lifecycle. CloudFormation reads code objects again after the deploy that sent them: a rollback returns
Lambda functions to the previous template's code, a replaced function is created from the current one,
and a parent stack's update reads its nested templates. So no object a stack may go back to may expire.
Objects expire EXPIRE_DAYS after their last use, and a deploy renews (copies onto itself) each object it
uses that is older than RENEW_DAYS: the objects of a stack's current template were renewed by the deploy
that made it, and stay for a year after it; a stack not deployed for a year loses no running code either
(Lambda keeps its own copy).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from phasedoit import aws, packaging
from phasedoit.errors import PhasedoitError
from phasedoit.packaging import Artifact, Package
from phasedoit.stack import Target

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sts import STSClient

Say = Callable[[str], None]
Clock = Callable[[], datetime.datetime]
EXPIRE_DAYS = 365
RENEW_DAYS = 30
NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
# S3 answers 403 for a missing object to a caller who may not list the bucket: it is sent, and the
# PutObject says whether it may be
FORBIDDEN = {"403", "AccessDenied", "Forbidden"}


@dataclass(frozen=True)
class Bucket:
    name: str
    region: str
    owner: str | None  # the account that must own it: phasedoit's default bucket; None: a configured one
    setting: str = ""  # where phases.yml names it, for errors


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def prepare(target: Target, package: Package, say: Say, setting: str = "") -> dict[str, str]:
    """Upload what `package` needs, and return the template part of its CreateStack/UpdateStack request.

    `setting`: where phases.yml names its bucket (`stages.prod.artifacts_bucket`), for errors. No call at
    all for a template that packages nothing.
    """
    if not packaging.needs_bucket(package):
        return {"TemplateBody": package.body}
    with aws.translated("S3"):
        s3, bucket = open_bucket(target, package.store.bucket, setting)
        with _about(bucket):
            publish(s3, bucket, package.uploads, say)
    return packaging.template_arguments(package, bucket.name, bucket.region)


# One checked bucket per target in each worker process: the STS call, the PBKDF2 of the default name and
# HeadBucket happen once, not once per service.
_opened: dict[tuple[Target, str | None], tuple[S3Client, Bucket]] = {}


def open_bucket(target: Target, configured: str | None, setting: str = "") -> tuple[S3Client, Bucket]:
    """The S3 client and bucket of `target`: `configured`, or phasedoit's default, created on first use."""
    if (target, configured) not in _opened:
        s3: S3Client = aws.client(target, "s3")
        region = s3.meta.region_name
        if configured:
            bucket = Bucket(configured, region, None, setting)
        else:
            sts: STSClient = aws.client(target, "sts")
            account = sts.get_caller_identity()["Account"]
            bucket = Bucket(packaging.default_bucket(account, region), region, account)
        with _about(bucket):
            ensure_bucket(s3, bucket)
        _opened[(target, configured)] = (s3, bucket)
    return _opened[(target, configured)]


def _owner(bucket: Bucket) -> dict[str, Any]:
    # the default bucket's name can be guessed by whoever knows the account id: never write code into a
    # bucket of that name in another account
    return {"ExpectedBucketOwner": bucket.owner} if bucket.owner else {}


def ensure_bucket(s3: S3Client, bucket: Bucket) -> None:
    try:
        s3.head_bucket(Bucket=bucket.name, **_owner(bucket))
        return
    except botocore.exceptions.ClientError as e:
        code = aws.code(e)
        if code in FORBIDDEN:
            raise PhasedoitError(
                f"artifacts bucket {bucket.name}: owned by another account,"
                " or these credentials may not use it"
            ) from None
        if code not in NOT_FOUND:
            raise
    if bucket.owner is None:
        raise PhasedoitError(f"phases.yml: {bucket.setting or 'artifacts_bucket'}: no bucket {bucket.name}")
    create_bucket(s3, bucket)


def create_bucket(s3: S3Client, bucket: Bucket) -> None:
    """phasedoit's default bucket: private, encrypted, TLS only, old artifacts expiring."""
    where: Any = {} if bucket.region == "us-east-1" else {"LocationConstraint": bucket.region}
    try:
        s3.create_bucket(
            Bucket=bucket.name,
            ObjectOwnership="BucketOwnerEnforced",
            **({"CreateBucketConfiguration": where} if where else {}),
        )
    except botocore.exceptions.ClientError as e:
        if aws.code(e) == "BucketAlreadyExists":
            raise PhasedoitError(
                f"the default artifacts bucket's name {bucket.name} is taken by another account:"
                " name a bucket of yours as artifacts_bucket for the stage in phases.yml"
            ) from None
        if aws.code(e) != "BucketAlreadyOwnedByYou":  # another worker or machine was first: configure it too
            raise
    owner = _owner(bucket)
    s3.put_public_access_block(
        Bucket=bucket.name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
        **owner,
    )
    s3.put_bucket_encryption(
        Bucket=bucket.name,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}
            ]
        },
        **owner,
    )
    s3.put_bucket_lifecycle_configuration(Bucket=bucket.name, LifecycleConfiguration=LIFECYCLE, **owner)
    if s3.meta.endpoint_url.startswith("https://"):  # over plain http (a local endpoint) it locks all out
        s3.put_bucket_policy(Bucket=bucket.name, Policy=json.dumps(_tls_only(bucket.name)), **owner)


LIFECYCLE: Any = {
    "Rules": [
        {
            "ID": "phasedoit-old-artifacts",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "Expiration": {"Days": EXPIRE_DAYS},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
    ]
}


def _tls_only(name: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def publish(
    s3: S3Client, bucket: Bucket, artifacts: Iterable[Artifact], say: Say, now: Clock = _utcnow
) -> int:
    """Upload each artifact the bucket lacks, saying so; renew the old ones it has. How many it sent."""
    sent = 0
    for artifact in artifacts:
        modified = last_modified(s3, bucket, artifact.key)
        if modified is not None:
            if now() - modified > datetime.timedelta(days=RENEW_DAYS):
                renew(s3, bucket, artifact.key)
            continue
        # built only now: HeadObject first spares zipping what another run or machine already sent
        data = packaging.build(artifact, bucket.name, bucket.region)
        say(f"uploading {artifact.shown} ({packaging.human_size(len(data))})")
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        s3.put_object(
            Bucket=bucket.name, Key=artifact.key, Body=data, ChecksumSHA256=checksum, **_owner(bucket)
        )
        sent += 1
    return sent


def last_modified(s3: S3Client, bucket: Bucket, key: str) -> datetime.datetime | None:
    try:
        return s3.head_object(Bucket=bucket.name, Key=key, **_owner(bucket))["LastModified"]
    except botocore.exceptions.ClientError as e:
        if aws.code(e) in NOT_FOUND | FORBIDDEN:
            return None
        raise


def renew(s3: S3Client, bucket: Bucket, key: str) -> None:
    """Restart an object's lifecycle clock: a copy onto itself (S3 wants some change: its metadata)."""
    owner = _owner(bucket)
    source: dict[str, Any] = {"ExpectedSourceBucketOwner": bucket.owner} if bucket.owner else {}
    s3.copy_object(
        Bucket=bucket.name,
        Key=key,
        CopySource={"Bucket": bucket.name, "Key": key},
        MetadataDirective="REPLACE",
        Metadata={"renewed-by": "phasedoit"},
        **owner,
        **source,
    )


@contextlib.contextmanager
def _about(bucket: Bucket) -> Iterator[None]:
    """An S3 refusal, as one line naming the bucket (the name holds no account id)."""
    try:
        yield
    except botocore.exceptions.ClientError as e:
        raise PhasedoitError(f"artifacts bucket {bucket.name}: {aws.message(e)}") from None
