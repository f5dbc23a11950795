"""The CloudFormation query protocol as the fault layer speaks it: HTTP to moto, XML answers, templates.

Plain functions over bytes and ElementTree, no boto3: the layer forwards the client's signed requests as
they are, and reads moto's answers in the same XML the client will parse.
"""

from __future__ import annotations

import datetime
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

NS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
# moto reads the account and region from the credential scope and checks no signature
INTERNAL_AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/cloudformation/aws4_request, "
    "SignedHeaders=host, Signature=0"
)
STACK_ARN = re.compile(r"^arn:[^:]+:cloudformation:([^:]*):([^:]*):stack/([^/]+)/")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "text/xml"

    def xml(self) -> ET.Element | None:
        try:
            return ET.fromstring(self.body)  # noqa: S314 (the answers of our own moto server, or our own)
        except ET.ParseError:
            return None

    def error(self) -> tuple[str, str] | None:
        """(code, message) of an XML error answer."""
        root = self.xml()
        if self.status < 400 or root is None:
            return None
        return text(root, ".//{*}Error/{*}Code"), text(root, ".//{*}Error/{*}Message")


def forward(upstream: str, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
    kept = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")}
    request = urllib.request.Request(upstream + path, body, kept, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return Answer(answer.status, answer.read(), answer.headers.get("Content-Type", "text/xml"))
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.read(), e.headers.get("Content-Type", "text/xml"))


def query(upstream: str, action: str, params: Mapping[str, str] | None = None) -> Answer:
    """One CloudFormation call of the layer's own to moto."""
    form = {"Action": action, "Version": "2010-05-15", **(params or {})}
    headers = {"Authorization": INTERNAL_AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    return forward(upstream, "/", encode(form), headers)


def decode(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace"), True).items()}


def encode(form: Mapping[str, str]) -> bytes:
    return urllib.parse.urlencode(form).encode()


def listed(form: Mapping[str, str], name: str) -> list[str]:
    """The values of a flattened list (`Name.member.N`) of a query form."""
    prefix = f"{name}.member."
    found = {
        int(k[len(prefix) :]): v
        for k, v in form.items()
        if k.startswith(prefix) and "." not in k[len(prefix) :]
    }
    return [found[i] for i in sorted(found)]


def records(form: Mapping[str, str], name: str) -> list[dict[str, str]]:
    """The structures of a flattened list (`Name.member.N.Field`) of a query form."""
    prefix = f"{name}.member."
    found: dict[int, dict[str, str]] = {}
    for key, value in form.items():
        index, dot, field_name = key[len(prefix) :].partition(".")
        if key.startswith(prefix) and dot:
            found.setdefault(int(index), {})[field_name] = value
    return [found[i] for i in sorted(found)]


def pairs(form: Mapping[str, str], name: str, key: str, value: str) -> dict[str, str]:
    return {record.get(key, ""): record.get(value, "") for record in records(form, name)}


def flattened(name: str, items: Mapping[str, str], key: str, value: str) -> dict[str, str]:
    """The query form fields of a mapping sent as a list of structures (Tags, Parameters)."""
    form: dict[str, str] = {}
    for index, (k, v) in enumerate(sorted(items.items()), 1):
        form[f"{name}.member.{index}.{key}"] = k
        form[f"{name}.member.{index}.{value}"] = v
    return form


def text(element: ET.Element, path: str) -> str:
    found = element.find(path)
    return "" if found is None or found.text is None else found.text


def stack_name(name_or_id: str) -> str:
    match = STACK_ARN.match(name_or_id)
    return match.group(3) if match else name_or_id


def timestamp(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def response(action: str, result: ET.Element | None = None) -> Answer:
    """A successful answer, as CloudFormation shapes them: <ActionResponse><ActionResult>…"""
    root = ET.Element(f"{action}Response", xmlns=NS)
    if result is not None:
        result.tag = f"{action}Result"
        root.append(result)
    metadata = ET.SubElement(root, "ResponseMetadata")
    ET.SubElement(metadata, "RequestId").text = str(uuid.uuid4())
    return Answer(200, ET.tostring(root, encoding="utf-8"))


def error(code: str, message: str, status: int = 400) -> Answer:
    root = ET.Element("ErrorResponse", xmlns=NS)
    error = ET.SubElement(root, "Error")
    ET.SubElement(error, "Type").text = "Sender" if status < 500 else "Receiver"
    ET.SubElement(error, "Code").text = code
    ET.SubElement(error, "Message").text = message
    ET.SubElement(root, "RequestId").text = str(uuid.uuid4())
    return Answer(status, ET.tostring(root, encoding="utf-8"))


def element(tag: str, **children: str | None) -> ET.Element:
    node = ET.Element(tag)
    for name, value in children.items():
        if value is not None:
            ET.SubElement(node, name).text = value
    return node


def serialize(root: ET.Element, status: int = 200) -> Answer:
    ET.register_namespace("", NS)
    return Answer(status, ET.tostring(root, encoding="utf-8"))


@dataclass(frozen=True)
class Output:
    key: str
    value: str
    export: str | None


@dataclass(frozen=True)
class Stack:
    """A stack as moto's DescribeStacks shows it."""

    id: str
    name: str
    status: str
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    outputs: tuple[Output, ...] = ()
    capabilities: tuple[str, ...] = ()

    @property
    def exports(self) -> dict[str, str]:
        return {o.export: o.value for o in self.outputs if o.export}

    @property
    def region(self) -> str:
        match = STACK_ARN.match(self.id)
        return match.group(1) if match else "us-east-1"

    @property
    def account(self) -> str:
        match = STACK_ARN.match(self.id)
        return match.group(2) if match else ""


def stacks_of(root: ET.Element) -> Iterator[Stack]:
    for member in root.iterfind(".//{*}Stacks/{*}member"):
        yield Stack(
            text(member, "{*}StackId"),
            text(member, "{*}StackName"),
            text(member, "{*}StackStatus"),
            _pairs(member, "Parameters", "ParameterKey", "ParameterValue"),
            _pairs(member, "Tags", "Key", "Value"),
            tuple(
                Output(text(o, "{*}OutputKey"), text(o, "{*}OutputValue"), text(o, "{*}ExportName") or None)
                for o in member.iterfind("{*}Outputs/{*}member")
            ),
            tuple(c.text or "" for c in member.iterfind("{*}Capabilities/{*}member")),
        )


def _pairs(member: ET.Element, name: str, key: str, value: str) -> dict[str, str]:
    return {
        text(m, f"{{*}}{key}"): text(m, f"{{*}}{value}") for m in member.iterfind(f"{{*}}{name}/{{*}}member")
    }


def set_child(parent: ET.Element, tag: str, value: str | None, after: str) -> None:
    """Set (or, for None, remove) a child element of a moto answer, keeping CloudFormation's field order."""
    current = parent.find(f"{{*}}{tag}")
    if value is None:
        if current is not None:
            parent.remove(current)
        return
    if current is None:
        current = ET.Element(f"{{{NS}}}{tag}")
        anchor = parent.find(f"{{*}}{after}")
        parent.insert(list(parent).index(anchor) + 1 if anchor is not None else len(parent), current)
    current.text = value


# ---- templates ----------------------------------------------------------------------------------------


class _TemplateLoader(yaml.SafeLoader):
    """YAML templates with CloudFormation's short forms (`!Sub`, `!GetAtt a.b`) read as their long forms."""


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _short_form)


def load_template(body: str) -> dict[str, Any]:
    try:
        loaded = json.loads(body)
    except ValueError:
        loaded = yaml.load(body, _TemplateLoader)  # noqa: S506 (a SafeLoader with CloudFormation's tags)
    return loaded if isinstance(loaded, dict) else {}


def same_template(one: str, other: str) -> bool:
    """Two bodies CloudFormation sees as one template: formatting aside, the same document."""
    try:
        return load_template(one) == load_template(other)
    except yaml.YAMLError:
        return one.strip() == other.strip()


def resources(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    found = template.get("Resources")
    return {k: v for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}


def imports(template: Mapping[str, Any], stack: Stack) -> set[str]:
    """The export names a stack's template imports, resolved with its parameters and pseudo parameters."""
    defaults = {
        name: str(spec["Default"])
        for name, spec in (template.get("Parameters") or {}).items()
        if isinstance(spec, dict) and "Default" in spec
    }
    known = {
        **defaults,
        **stack.parameters,
        "AWS::StackName": stack.name,
        "AWS::StackId": stack.id,
        "AWS::Region": stack.region,
        "AWS::AccountId": stack.account,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    found: set[str] = set()
    for value in _import_values(template):
        name = _resolve(value, known)
        if name is not None:
            found.add(name)
    return found


def _import_values(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Fn::ImportValue":
                yield value
            else:
                yield from _import_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from _import_values(item)


def _resolve(node: Any, known: Mapping[str, str]) -> str | None:
    if isinstance(node, str):
        return node
    if not isinstance(node, dict) or len(node) != 1:
        return None
    [(function, argument)] = node.items()
    if function == "Ref":
        return known.get(argument) if isinstance(argument, str) else None
    if function == "Fn::Sub":
        return _substitute(argument, known)
    if function == "Fn::Join" and isinstance(argument, list) and len(argument) == 2:
        parts = [_resolve(part, known) for part in argument[1]] if isinstance(argument[1], list) else [None]
        return None if None in parts else str(argument[0]).join(p for p in parts if p is not None)
    return None


def _substitute(argument: Any, known: Mapping[str, str]) -> str | None:
    if isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
        local = {name: _resolve(value, known) for name, value in argument[1].items()}
        if None in local.values():
            return None
        known = {**known, **{k: v for k, v in local.items() if v is not None}}
        argument = argument[0]
    if not isinstance(argument, str):
        return None
    missing: list[str] = []

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name not in known:
            missing.append(name)
        return known.get(name, "")

    resolved = re.sub(r"\$\{([^}]+)\}", value, argument)
    return None if missing else resolved


# ---- stack events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    at: float
    stack_id: str
    stack_name: str
    logical: str
    physical: str
    type: str
    status: str
    reason: str | None = None
    token: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def xml(self) -> ET.Element:
        return element(
            "member",
            StackId=self.stack_id,
            EventId=self.id,
            StackName=self.stack_name,
            LogicalResourceId=self.logical,
            PhysicalResourceId=self.physical,
            ResourceType=self.type,
            Timestamp=timestamp(self.at),
            ResourceStatus=self.status,
            ResourceStatusReason=self.reason,
            ClientRequestToken=self.token,
        )


def events_of(root: ET.Element) -> Iterator[Event]:
    for member in root.iterfind(".//{*}StackEvents/{*}member"):
        yield Event(
            _epoch(text(member, "{*}Timestamp")),
            text(member, "{*}StackId"),
            text(member, "{*}StackName"),
            text(member, "{*}LogicalResourceId"),
            text(member, "{*}PhysicalResourceId"),
            text(member, "{*}ResourceType"),
            text(member, "{*}ResourceStatus"),
            text(member, "{*}ResourceStatusReason") or None,
            text(member, "{*}ClientRequestToken") or None,
            text(member, "{*}EventId"),
        )


def _epoch(stamp: str) -> float:
    moment = datetime.datetime.fromisoformat(stamp.rstrip("Z"))
    return moment.replace(tzinfo=datetime.timezone.utc).timestamp()
