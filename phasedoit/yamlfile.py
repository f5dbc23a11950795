"""Read YAML and JSON files into plain data, with one-line errors that name the file and position."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from phasedoit.errors import PhasedoitError


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 timestamps: `2010-09-09` stays the string CloudFormation expects."""


_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class CloudFormationLoader(_PlainLoader):
    """Also reads the CloudFormation short forms (`!Ref`, `!Sub`, `!GetAtt a.b`, ...) as their long forms."""


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _short_form)

# libyaml's parser reads templates ~10x faster; the tag constructors and resolvers above are Python and
# work with it unchanged. Its error texts differ, so errors are re-read with the pure-Python loader.
_FastCloudFormationLoader: type[yaml.SafeLoader] | None = None
if yaml.__with_libyaml__:

    class _CCloudFormationLoader(yaml.CSafeLoader):
        yaml_implicit_resolvers = _PlainLoader.yaml_implicit_resolvers

    _CCloudFormationLoader.add_multi_constructor("!", _short_form)
    _FastCloudFormationLoader = _CCloudFormationLoader  # type: ignore[assignment]


def read_text(path: Path, shown: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PhasedoitError(f"{shown}: cannot read: {e.strerror}") from None
    if b"\0" in data:
        raise PhasedoitError(f"{shown}: is a binary file, not YAML or JSON text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PhasedoitError(f"{shown}: is not UTF-8 text (bad byte at offset {e.start})") from None


def load(path: Path, shown: str, *, cloudformation: bool = False) -> Any:
    """Parse `path` (JSON when it ends in .json, else YAML); errors say `shown: line L, column C: ...`."""
    text = read_text(path, shown)
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise PhasedoitError(f"{shown}: line {e.lineno}, column {e.colno}: {e.msg}") from None
    loader = CloudFormationLoader if cloudformation else _PlainLoader
    if cloudformation and _FastCloudFormationLoader is not None:
        try:
            return yaml.load(text, Loader=_FastCloudFormationLoader)  # noqa: S506 - a CSafeLoader
        except yaml.YAMLError:
            pass  # the pure-Python loader below gives the error its usual text
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - both loaders derive from SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise PhasedoitError(f"{shown}: {where}{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise PhasedoitError(f"{shown}: {e}") from None
