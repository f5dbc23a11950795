"""The local endpoint's gatekeeper: only requests signed (AWS Signature Version 4) with its own credentials.

The canonical request is rebuilt from the WSGI environ (the raw path and query as sent, the signed headers,
the body or S3's `x-amz-content-sha256` value) and signed with botocore's own signer classes, so what is
compared is what any AWS SDK or the AWS CLI computed. A refusal is an AWS-style error, HTTP 403, in the
shape the caller's protocol parses (S3's `<Error>`, the query protocol's `<ErrorResponse>`, or JSON).

Runs in the server process only (botocore is imported here, not in doit's processes).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from phasedoit.local import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = datetime.timedelta(minutes=15)  # what AWS allows between the signing time and its clock
SET_THEM = 'eval "$(phasedoit local env)" sets them'
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<headers>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]+)\s*$"
)
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: an AWS error code (S3 has its own for some) and a message."""

    code: str
    message: str
    s3_code: str | None = None


@dataclass(frozen=True)
class Signed:
    """The parts of a request's signature (from its Authorization header or a presigned URL's query)."""

    key_id: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    headers: tuple[str, ...]
    signature: str
    timestamp: str  # X-Amz-Date, YYYYMMDDTHHMMSSZ
    presigned: bool


UNSIGNED = Refusal(
    "MissingAuthenticationToken",
    "the request is not signed: phasedoit's local endpoint answers only requests signed with its own"
    f" credentials ({SET_THEM})",
    "AccessDenied",
)
FOREIGN_KEY = Refusal(
    "InvalidClientTokenId",
    f"the request is signed with another access key than phasedoit's local endpoint's own ({SET_THEM})",
    "InvalidAccessKeyId",
)
BAD_SIGNATURE = Refusal(
    "SignatureDoesNotMatch",
    "the request's signature does not match the one computed with phasedoit's local endpoint's secret key"
    f" ({SET_THEM})",
)
MOTO_API = Refusal("AccessDenied", "phasedoit's local endpoint does not serve moto's /moto-api/")


def signing_service(environ: Mapping[str, Any]) -> str | None:
    """The service named by the request's credential scope (`s3`, `cloudformation`, ...), if signed."""
    signed = _signature_parts(environ)
    return signed.service if isinstance(signed, Signed) else None


def verify(
    environ: Mapping[str, Any], body: bytes, credentials: Credentials, now: datetime.datetime
) -> Refusal | None:
    """None if the request is signed with `credentials` and was signed within MAX_SKEW of `now`."""
    signed = _signature_parts(environ)
    if not isinstance(signed, Signed):
        return signed
    if signed.key_id != credentials.access_key_id:
        return FOREIGN_KEY
    refusal = _check_time(signed, environ, now)
    if refusal is not None:
        return refusal
    expected = _signature(environ, body, signed, credentials)
    if not hmac.compare_digest(expected, signed.signature):
        return BAD_SIGNATURE
    declared = _header(environ, "x-amz-content-sha256")
    if declared and _HEX_SHA256.fullmatch(declared) and hashlib.sha256(body).hexdigest() != declared:
        # the signature covers the declared hash only: the body must match it (S3 checks this too)
        return Refusal("XAmzContentSHA256Mismatch", "the body does not match its x-amz-content-sha256")
    return None


def _signature_parts(environ: Mapping[str, Any]) -> Signed | Refusal:
    authorization = environ.get("HTTP_AUTHORIZATION")
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if authorization is None and "X-Amz-Signature" not in query:
        return UNSIGNED
    if authorization is not None:
        match = _AUTHORIZATION.match(authorization)
        if match is None:
            return _not_sigv4()
        credential, headers, signature = match["credential"], match["headers"], match["signature"]
        timestamp = _header(environ, "x-amz-date") or ""
    else:
        if query.get("X-Amz-Algorithm") != [ALGORITHM]:
            return _not_sigv4()
        credential = query.get("X-Amz-Credential", [""])[0]
        headers = query.get("X-Amz-SignedHeaders", [""])[0]
        signature = query.get("X-Amz-Signature", [""])[0]
        timestamp = query.get("X-Amz-Date", [""])[0]
    scope = credential.split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return _not_sigv4()
    return Signed(
        key_id=scope[0],
        date=scope[1],
        region=scope[2],
        service=scope[3],
        headers=tuple(headers.split(";")),
        signature=signature,
        timestamp=timestamp,
        presigned=authorization is None,
    )


def _not_sigv4() -> Refusal:
    return Refusal(
        "IncompleteSignature",
        "the request is not signed with AWS Signature Version 4 by phasedoit's local endpoint's"
        f" credentials ({SET_THEM})",
        "AccessDenied",
    )


def _check_time(signed: Signed, environ: Mapping[str, Any], now: datetime.datetime) -> Refusal | None:
    try:
        signed_at = datetime.datetime.strptime(signed.timestamp, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc
        )
    except ValueError:
        return Refusal("IncompleteSignature", "the request has no valid X-Amz-Date", "AccessDenied")
    if signed.timestamp[:8] != signed.date:
        return BAD_SIGNATURE
    if signed.presigned:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        expires = query.get("X-Amz-Expires", ["0"])[0]
        if not expires.isdigit() or now > signed_at + datetime.timedelta(seconds=int(expires)):
            return Refusal("AccessDenied", "the presigned URL has expired")
        return None
    if abs(now - signed_at) > MAX_SKEW:
        return Refusal(
            "RequestExpired",
            f"the request was signed at {signed.timestamp}, more than 15 minutes away from the local"
            " endpoint's clock",
            "RequestTimeTooSkewed",
        )
    return None


def _signature(environ: Mapping[str, Any], body: bytes, signed: Signed, credentials: Credentials) -> str:
    """The signature botocore computes for this request with `credentials`."""
    from botocore import auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    signer_class: Any
    if signed.presigned:
        signer_class = auth.S3SigV4QueryAuth if signed.service == "s3" else auth.SigV4QueryAuth
    else:
        signer_class = auth.S3SigV4Auth if signed.service == "s3" else auth.SigV4Auth
    signer = signer_class(
        BotoCredentials(credentials.access_key_id, credentials.secret_access_key),
        signed.service,
        signed.region,
        **({"expires": 0} if signed.presigned else {}),
    )
    headers = {name: _header(environ, name) or "" for name in signed.headers}
    request = AWSRequest(method=environ["REQUEST_METHOD"], url=_raw_url(environ, signed), headers=headers)
    request.data = body
    request.context["timestamp"] = signed.timestamp
    canonical = signer.canonical_request(request)
    signature: str = signer.signature(signer.string_to_sign(request, canonical), request)
    return signature


def _raw_url(environ: Mapping[str, Any], signed: Signed) -> str:
    """The URL as the client signed it: its path and query exactly as sent, not as decoded for WSGI."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:  # not werkzeug's server: rebuild the path (a decoded one signs the same if plain ASCII)
        raw = urllib.parse.quote(environ.get("PATH_INFO", "/"), safe="/~!$&'()*+,;=:@")
        if environ.get("QUERY_STRING"):
            raw += "?" + environ["QUERY_STRING"]
    path, _, query = raw.partition("?")
    if signed.presigned:  # the signature is not part of what it signs
        query = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-Signature="))
    host = _header(environ, "host") or "localhost"
    return f"http://{host}{path}" + (f"?{query}" if query else "")


def _header(environ: Mapping[str, Any], name: str) -> str | None:
    key = name.upper().replace("-", "_")
    value = environ.get(key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}")
    return None if value is None else str(value)


# ------------------------------------------------------------------------------------- error answers


def error_response(
    environ: Mapping[str, Any], status: str, code: str, message: str, s3_code: str | None = None
) -> tuple[str, list[tuple[str, str]], bytes]:
    """An AWS error in the shape the caller's protocol parses: S3, JSON, or the query protocol."""
    request_id = str(uuid.uuid4())
    service = signing_service(environ)
    content_type = str(environ.get("CONTENT_TYPE") or "")
    if service == "s3":
        code = s3_code or code
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        kind = "application/xml"
    elif "json" in content_type:
        body = json.dumps({"__type": code, "message": message}).encode()
        kind = "application/x-amz-json-1.1"
    else:
        body = query_error(code, message, request_id, sender=status.startswith("4"))
        kind = "text/xml"
    headers = [
        ("Content-Type", kind),
        ("Content-Length", str(len(body))),
        ("x-amzn-RequestId", request_id),
        ("x-amzn-ErrorType", code),
    ]
    return status, headers, body


def query_error(code: str, message: str, request_id: str, *, sender: bool = True) -> bytes:
    """The query protocol's error document (CloudFormation, STS, IAM, SNS, ...)."""
    return (
        '<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">'
        f"<Error><Type>{'Sender' if sender else 'Receiver'}</Type><Code>{escape(code)}</Code>"
        f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
