"""Read CloudFormation templates (YAML with short-form tags, or JSON) into plain data."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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


def parameter_defaults(template: Mapping[str, Any]) -> dict[str, str]:
    params = template.get("Parameters")
    if not isinstance(params, dict):
        return {}
    return {
        name: str(spec["Default"])
        for name, spec in params.items()
        if isinstance(spec, dict) and isinstance(spec.get("Default"), (str, int, float))
    }


@dataclass(frozen=True)
class Dependencies:
    """What one stack exports and imports (names resolved for one stage), and what could not be resolved."""

    exports: frozenset[str] = frozenset()
    imports: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()


def find_dependencies(template: Mapping[str, Any], values: Mapping[str, str], shown: str) -> Dependencies:
    """Exports and imports of a template; `values` are the stage's parameters and known pseudo parameters.

    A parameter missing from `values` takes its `Default`.
    """
    known = {**parameter_defaults(template), **values}
    return collect_dependencies(template.get("Outputs"), "Outputs", template, known, shown)


def collect_dependencies(
    outputs: Any, outputs_key: str, document: Any, known: Mapping[str, str], shown: str
) -> Dependencies:
    """Exports of the `outputs` mapping (found at `outputs_key`) and imports anywhere in `document`."""
    warnings: list[str] = []
    exports = _resolve_all(_export_names(outputs, outputs_key), "Export.Name", known, shown, warnings)
    imports = _resolve_all(_imports(document, ""), "Fn::ImportValue", known, shown, warnings)
    return Dependencies(frozenset(exports), frozenset(imports), tuple(warnings))


def _export_names(outputs: Any, outputs_key: str) -> Iterator[tuple[str, Any]]:
    if not isinstance(outputs, dict):
        return
    for name, output in outputs.items():
        if isinstance(output, dict) and isinstance(output.get("Export"), dict):
            export = output["Export"]
            if "Name" in export:
                yield f"{outputs_key}.{name}.Export.Name", export["Name"]


def _imports(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Fn::ImportValue":
                yield where or key, value
            else:
                yield from _imports(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _imports(value, f"{where}[{i}]")


def _resolve_all(
    found: Iterator[tuple[str, Any]], what: str, known: Mapping[str, str], shown: str, warnings: list[str]
) -> list[str]:
    names = []
    for where, expression in found:
        try:
            names.append(resolve(expression, known))
        except UnresolvedError as e:
            shown_expression = json.dumps(expression, default=str)
            warnings.append(
                f"{shown}: {where}: cannot resolve {what} {shown_expression} statically ({e});"
                " phasedoit cannot order it"
            )
    return names


class UnresolvedError(Exception):
    """An expression whose value is only known to CloudFormation at deploy time (or not at all)."""


# `${Name}` in Fn::Sub; `${!Name}` is the escape for a literal `${Name}`.
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def resolve(expression: Any, known: Mapping[str, str]) -> str:
    """The string value of a literal, Ref, Fn::Sub or Fn::Join; raises UnresolvedError otherwise."""
    if isinstance(expression, str):
        return expression
    if isinstance(expression, dict) and len(expression) == 1:
        [(function, argument)] = expression.items()
        if function == "Ref" and isinstance(argument, str):
            return _lookup(argument, known, {})
        if function == "Fn::Sub":
            return _resolve_sub(argument, known)
        if function == "Fn::Join":
            return _resolve_join(argument, known)
        if function == "Fn::GetAtt":
            raise UnresolvedError("Fn::GetAtt is known only after deploy")
        raise UnresolvedError(f"{function} is not supported")
    raise UnresolvedError("not a string or function")


def _lookup(name: str, known: Mapping[str, str], local: Mapping[str, Any]) -> str:
    if name in local:
        return resolve(local[name], known)
    if name in known:
        return known[name]
    if re.fullmatch(r"\w+\.[\w.]+", name):  # `${Resource.Attribute}`
        raise UnresolvedError(f"${{{name}}} is an attribute, known only after deploy")
    raise UnresolvedError(f"no known value for {name}")


def _resolve_sub(argument: Any, known: Mapping[str, str]) -> str:
    local: Mapping[str, Any] = {}
    if isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
        argument, local = argument
    if not isinstance(argument, str):
        raise UnresolvedError("Fn::Sub takes a string or [string, {variables}]")

    def substitute(match: re.Match[str]) -> str:
        name = match[1]
        if name.startswith("!"):
            return f"${{{name[1:]}}}"
        return _lookup(name.strip(), known, local)

    return _SUB_VARIABLE.sub(substitute, argument)


def _resolve_join(argument: Any, known: Mapping[str, str]) -> str:
    if not (isinstance(argument, list) and len(argument) == 2 and isinstance(argument[0], str)):
        raise UnresolvedError("Fn::Join takes [delimiter, [values]]")
    if not isinstance(argument[1], list):
        raise UnresolvedError("Fn::Join of a list parameter is not supported")
    return argument[0].join(resolve(item, known) for item in argument[1])
