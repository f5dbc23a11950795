"""SAM on the local endpoint: moto ignores `Transform: AWS::Serverless-2016-10-31` and creates nothing of a
SAM template's functions, so the endpoint's gate expands it first, with AWS's own translator
(`aws-sam-translator`, as CloudFormation's transform runs it), and moto creates the functions, roles and
event resources it expands to.

Runs in the local endpoint's process, inside its gate's lock: moto's S3 (for a template sent by
TemplateURL) is read in-process, and the translator keeps its region in a class attribute.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import yaml

from phasedoit import yamlfile

SAM = "AWS::Serverless-2016-10-31"
# The requests that carry a template to deploy.
ACTIONS = ("CreateStack", "UpdateStack", "CreateChangeSet")


class SamError(Exception):
    """The translator refused the template: CloudFormation's transform would too, with this reason."""

    def xml(self) -> bytes:
        """The answer CloudFormation gives: a ValidationError, in its query protocol's XML."""
        message = str(self).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return (
            '<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/"><Error>'
            f"<Type>Sender</Type><Code>ValidationError</Code><Message>{message}</Message>"
            "</Error><RequestId>phasedoit-local</RequestId></ErrorResponse>"
        ).encode()


def expand_if_sam(body: str, parameters: dict[str, str], region: str) -> str:
    """The template `body` as CloudFormation runs it: expanded if it uses the SAM transform, else as it is."""
    template = _parse(body)
    if not _uses_sam(template):
        return body
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    translator = Translator(None, Parser(), boto_session=_session(region))
    try:
        # the translator bundles the ARNs of AWS's managed policies: the fallback map (from IAM) stays empty
        expanded = translator.translate(template, dict(parameters), get_managed_policy_map=dict)
    except InvalidDocumentException as e:
        reasons = " ".join(cause.message for cause in e.causes)
        raise SamError(f"Transform {SAM} failed with: {e.message} {reasons}".strip()) from None
    return json.dumps(expanded, separators=(",", ":"), default=str)


def expand_request(form: bytes, region: str, access_key: str = "") -> bytes:
    """A CreateStack/UpdateStack/CreateChangeSet request (form-encoded) with its template expanded.

    A template sent by TemplateURL (too large to send inline) is read from moto's S3 and sent inline:
    moto takes a body of any size.
    """
    fields = urllib.parse.parse_qs(form.decode(), keep_blank_values=True)
    body = fields.get("TemplateBody", [None])[0]
    url = fields.get("TemplateURL", [None])[0]
    if body is None and url:
        body = _read_url(url, access_key)
    if body is None:
        return form
    expanded = expand_if_sam(body, _parameters(fields), region)
    if expanded is body:
        return form
    fields.pop("TemplateURL", None)
    fields["TemplateBody"] = [expanded]
    return urllib.parse.urlencode(fields, doseq=True).encode()


def expand_in_request(environ: dict[str, Any], form: bytes) -> bytes | None:
    """The gate's one call: replace the request's form by its expanded one; an error answer if refused."""
    scope = environ.get("HTTP_AUTHORIZATION", "").split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    region = scope[2] if len(scope) == 5 else "us-east-1"
    try:
        expanded = expand_request(form, region, scope[0])
    except SamError as e:
        return e.xml()
    if expanded is not form:
        import io

        environ["wsgi.input"] = io.BytesIO(expanded)
        environ["CONTENT_LENGTH"] = str(len(expanded))
    return None


def _parse(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        pass
    try:  # a YAML body, as the AWS CLI sends one
        return yaml.load(body, Loader=yamlfile.CloudFormationLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError:
        return None  # not ours to refuse: moto answers it as it does


def _uses_sam(template: Any) -> bool:
    if not isinstance(template, dict):
        return False
    transform = template.get("Transform")
    return transform == SAM or (isinstance(transform, list) and SAM in transform)


def _parameters(fields: dict[str, list[str]]) -> dict[str, str]:
    """`Parameters.member.N.ParameterKey` and `.ParameterValue` of a query-protocol request."""
    keys = {k.split(".")[2]: v[0] for k, v in fields.items() if k.endswith(".ParameterKey")}
    values = {k.split(".")[2]: v[0] for k, v in fields.items() if k.endswith(".ParameterValue")}
    return {key: values[n] for n, key in keys.items() if n in values}


_sessions: dict[str, Any] = {}


def _session(region: str) -> Any:
    """A boto3 session only for its region: the translator fills in AWS::Region and the partition from it."""
    if region not in _sessions:
        import boto3

        _sessions[region] = boto3.session.Session(region_name=region)
    return _sessions[region]


def _read_url(url: str, access_key: str) -> str | None:
    from moto.cloudformation.utils import get_stack_from_s3_url
    from moto.iam.models import get_account_id_from

    try:
        text: str = get_stack_from_s3_url(url, account_id=get_account_id_from(access_key), partition="aws")
    except Exception:  # moto answers the request itself, with its own error
        return None
    return text
