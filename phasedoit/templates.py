"""Read CloudFormation templates (YAML with short-form tags, or JSON) into plain data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from phasedoit import yamlfile
from phasedoit.errors import PhasedoitError

TEMPLATE_NAMES = ("template.yml", "template.yaml", "template.json")
# CloudFormation takes at most this many bytes as TemplateBody; larger ones must come from S3.
MAX_BODY_BYTES = 51_200


def load_template(path: Path, shown: str) -> dict[str, Any]:
    template = yamlfile.load(path, shown, cloudformation=True)
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise PhasedoitError(f"{shown}: not a CloudFormation template (no Resources mapping)")
    return template


def template_body(template: dict[str, Any], shown: str) -> str:
    """The normalized body sent to CloudFormation: compact JSON, short forms already expanded."""
    body = json.dumps(template, separators=(",", ":"), default=str)
    if len(body.encode()) > MAX_BODY_BYTES:
        raise PhasedoitError(
            f"{shown}: template is {len(body.encode())} bytes as JSON;"
            f" CloudFormation takes at most {MAX_BODY_BYTES} inline"
        )
    return body


def parameter_names(template: dict[str, Any]) -> set[str]:
    params = template.get("Parameters")
    return set(params) if isinstance(params, dict) else set()
