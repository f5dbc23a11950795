"""SAM on the local endpoint: moto ignores `Transform: AWS::Serverless-2016-10-31` and creates nothing of a
SAM template's functions, so the endpoint's gate expands it first (`rewrite`, one of
local_cloudformation's TEMPLATE_REWRITERS), with AWS's own translator (`aws-sam-translator`, as
CloudFormation's transform runs it); moto then creates the functions, roles and event resources it
expands to. A template refused by the translator is refused as CloudFormation refuses it.

Runs in the local endpoint's process, inside its gate's lock: the translator keeps its region in a class
attribute. A template sent by TemplateURL (over 51,200 bytes) is not expanded there.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from phasedoit import yamlfile

SAM = "AWS::Serverless-2016-10-31"


class SamError(Exception):
    """The translator refused the template: CloudFormation's transform would too, with this reason."""


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
    finally:
        translator.metrics.publish()  # to its dummy publisher: else it warns of unpublished metrics at exit
    return json.dumps(expanded, separators=(",", ":"), default=str)


def rewrite(body: str, call: Any) -> str:
    """A TEMPLATE_REWRITER: the body of a CreateStack/UpdateStack/CreateChangeSet `call`, expanded."""
    parameters = {
        p["ParameterKey"]: p["ParameterValue"] for p in call.members("Parameters") if "ParameterValue" in p
    }
    return expand_if_sam(body, parameters, call.region)


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


_sessions: dict[str, Any] = {}


def _session(region: str) -> Any:
    """A boto3 session only for its region: the translator fills in AWS::Region and the partition from it."""
    if region not in _sessions:
        import boto3

        _sessions[region] = boto3.session.Session(region_name=region)
    return _sessions[region]
