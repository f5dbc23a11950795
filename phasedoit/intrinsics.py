"""What a template's expressions are worth before deploy: names (Ref, Fn::Sub, Fn::Join, ...), Conditions.

Only what phasedoit knows at plan time counts: parameter values and defaults, the pseudo parameters known
for the stage. Anything else (resource attributes, values CloudFormation reads when it deploys) is unknown:
a name raises UnresolvedError, a condition evaluates to `Unknown` with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any


class UnresolvedError(Exception):
    """An expression whose value is only known to CloudFormation at deploy time (or not at all)."""

    def __init__(self, message: str, missing: str | None = None) -> None:
        super().__init__(message)
        self.missing = missing  # the name with no known value, when that is why


@dataclass(frozen=True)
class Unknown:
    """A condition that cannot be evaluated before deploy, and why."""

    reason: str


Truth = bool | Unknown

# `${Name}` in Fn::Sub; `${!Name}` is the escape for a literal `${Name}`.
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class Scope:
    """One template's values known before deploy, and its `Conditions` evaluated with them (each once)."""

    def __init__(
        self, known: Mapping[str, str], conditions: Any = None, deferred: Collection[str] = ()
    ) -> None:
        self.known = known
        self.deferred = deferred  # parameters whose value CloudFormation reads from SSM when it deploys
        self._definitions: Mapping[str, Any] = conditions if isinstance(conditions, dict) else {}
        self._values: dict[str, Truth] = {}

    def resolve(self, expression: Any) -> str:
        """The text of a literal, Ref, Fn::Sub, Fn::Join or Fn::If; raises UnresolvedError otherwise."""
        if isinstance(expression, str):
            return expression
        if isinstance(expression, dict) and len(expression) == 1:
            [(function, argument)] = expression.items()
            if function == "Ref" and isinstance(argument, str):
                return self._lookup(argument, {})
            if function == "Fn::Sub":
                return self._resolve_sub(argument)
            if function == "Fn::Join":
                return self._resolve_join(argument)
            if function == "Fn::If" and _is_if(argument):
                return self.resolve(argument[1 if self._decided(argument[0]) else 2])
            if function == "Fn::GetAtt":
                raise UnresolvedError("Fn::GetAtt is known only after deploy")
            raise UnresolvedError(f"{function} is not supported")
        raise UnresolvedError("not a string or function")

    def condition(self, name: str) -> Truth:
        """The value of the condition `name`; a condition that refers to itself is unknown, not a loop."""
        if name not in self._values:
            if name not in self._definitions:
                return Unknown(f"no condition {name} in Conditions")
            self._values[name] = Unknown(f"condition {name} refers to itself")
            self._values[name] = self._evaluate(self._definitions[name])
        return self._values[name]

    def _decided(self, name: str) -> bool:
        value = self.condition(name)
        if isinstance(value, Unknown):
            raise UnresolvedError(f"condition {name} cannot be known before deploy: {value.reason}")
        return value

    def _evaluate(self, expression: Any) -> Truth:
        if isinstance(expression, dict) and len(expression) == 1:
            [(function, argument)] = expression.items()
            if function == "Condition" and isinstance(argument, str):
                return self.condition(argument)
            if function == "Fn::Not" and isinstance(argument, list) and len(argument) == 1:
                value = self._evaluate(argument[0])
                return value if isinstance(value, Unknown) else not value
            if function in ("Fn::And", "Fn::Or") and isinstance(argument, list):
                return _combine(function == "Fn::And", [self._evaluate(a) for a in argument])
            if function == "Fn::Equals" and isinstance(argument, list) and len(argument) == 2:
                try:
                    left, right = (self._scalar(a) for a in argument)
                except UnresolvedError as e:
                    return Unknown(str(e))
                return left == right
        return Unknown(f"{json.dumps(expression, default=str)} is not a condition phasedoit evaluates")

    def _scalar(self, expression: Any) -> str:
        # CloudFormation compares text: YAML's `true` and `80` are its "true" and "80"
        if isinstance(expression, bool):
            return str(expression).lower()
        if isinstance(expression, (int, float)):
            return str(expression)
        return self.resolve(expression)

    def _lookup(self, name: str, local: Mapping[str, Any]) -> str:
        if name in local:
            return self.resolve(local[name])
        if name in self.deferred:
            raise UnresolvedError(f"parameter {name} is read from SSM when the stack deploys")
        if name in self.known:
            return self.known[name]
        if re.fullmatch(r"\w+\.[\w.]+", name):  # `${Resource.Attribute}`
            raise UnresolvedError(f"${{{name}}} is an attribute, known only after deploy")
        raise UnresolvedError(f"no known value for {name}", missing=name)

    def _resolve_sub(self, argument: Any) -> str:
        local: Mapping[str, Any] = {}
        if isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
            argument, local = argument
        if not isinstance(argument, str):
            raise UnresolvedError("Fn::Sub takes a string or [string, {variables}]")

        def substitute(match: re.Match[str]) -> str:
            name = match[1]
            if name.startswith("!"):
                return f"${{{name[1:]}}}"
            return self._lookup(name.strip(), local)

        return _SUB_VARIABLE.sub(substitute, argument)

    def _resolve_join(self, argument: Any) -> str:
        if not (isinstance(argument, list) and len(argument) == 2 and isinstance(argument[0], str)):
            raise UnresolvedError("Fn::Join takes [delimiter, [values]]")
        if not isinstance(argument[1], list):
            raise UnresolvedError("Fn::Join of a list parameter is not supported")
        return argument[0].join(self.resolve(item) for item in argument[1])


def _is_if(argument: Any) -> bool:
    return isinstance(argument, list) and len(argument) == 3 and isinstance(argument[0], str)


def _combine(conjunction: bool, values: list[Truth]) -> Truth:
    """Fn::And is false as soon as one operand is, Fn::Or true as soon as one is; else an unknown decides."""
    deciding = not conjunction
    if any(value is deciding for value in values):
        return deciding
    return next((value for value in values if isinstance(value, Unknown)), conjunction)


def resolve(expression: Any, known: Mapping[str, str]) -> str:
    """The string value of `expression` from `known` values alone (no conditions)."""
    return Scope(known).resolve(expression)
