"""Read CloudFormation templates (YAML with short-form tags, or JSON) into plain data."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phasedoit import yamlfile
from phasedoit.errors import PhasedoitError
from phasedoit.intrinsics import Scope, Unknown, UnresolvedError

if TYPE_CHECKING:
    from phasedoit.templatecache import TemplateCache

TEMPLATE_NAMES = ("template.yml", "template.yaml", "template.json")
# CloudFormation takes at most this many bytes as TemplateBody; larger ones must come from S3,
# up to 1 MB (CloudFormation counts in KiB: the inline limit is 50 KiB).
MAX_BODY_BYTES = 51_200
# A parameter of this type is sent as an SSM parameter's name; CloudFormation reads its value when it deploys.
SSM_PARAMETER_TYPE = "AWS::SSM::Parameter::Value<"
MAX_URL_BYTES = 1_048_576


def load_template(path: Path, shown: str, cache: TemplateCache | None = None) -> dict[str, Any]:
    """The template at `path`; `cache`: parsed templates kept between runs (a file as it was is not read)."""
    if cache is not None:
        return cache.load(path, lambda: load_template(path, shown))
    template = yamlfile.load(path, shown, cloudformation=True)
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise PhasedoitError(f"{shown}: not a CloudFormation template (no Resources mapping)")
    return template


def render(template: Mapping[str, Any]) -> str:
    """A template as compact JSON (what phasedoit sends, inline or through S3)."""
    return json.dumps(template, separators=(",", ":"), default=str)


def parameter_names(template: dict[str, Any]) -> set[str]:
    params = template.get("Parameters")
    return set(params) if isinstance(params, dict) else set()


def parameter_defaults(template: Mapping[str, Any]) -> dict[str, str]:
    """Each parameter's Default as the text CloudFormation takes: YAML's `true` is "true", `80` is "80"."""
    params = template.get("Parameters")
    if not isinstance(params, dict):
        return {}
    return {
        name: str(spec["Default"]).lower() if isinstance(spec["Default"], bool) else str(spec["Default"])
        for name, spec in params.items()
        if isinstance(spec, dict) and isinstance(spec.get("Default"), (str, int, float))
    }


def deploy_time_parameters(template: Mapping[str, Any]) -> set[str]:
    """Parameters whose value CloudFormation reads when it deploys: what is sent is an SSM name."""
    params = template.get("Parameters")
    return {
        name
        for name, spec in (params if isinstance(params, dict) else {}).items()
        if isinstance(spec, dict) and str(spec.get("Type", "")).startswith(SSM_PARAMETER_TYPE)
    }


def missing_parameters(template: Mapping[str, Any], values: Mapping[str, str]) -> list[str]:
    """Parameters CloudFormation would refuse as missing: no Default, and no value among `values`.

    `values`: the parameters phasedoit sends (`Stage` included); in the template's order.
    """
    params = template.get("Parameters")
    return [
        name
        for name, spec in (params if isinstance(params, dict) else {}).items()
        if name not in values and not (isinstance(spec, dict) and "Default" in spec)
    ]


@dataclass(frozen=True, order=True)
class Conditional:
    """An export or import that exists only if conditions phasedoit cannot evaluate before deploy hold."""

    name: str
    where: str  # the file and the path of its expression: `services/x/template.yml: Resources.Q...`
    expression: str  # the expression, as JSON
    when: str  # `condition HasAlerts is true`, `condition A is true and condition B is false`
    reason: str  # why that cannot be known before deploy


@dataclass(frozen=True)
class Dependencies:
    """What one stack exports and imports (names resolved for one stage), and what could not be resolved.

    An export or import under a condition known to be false does not exist; under a condition that cannot
    be known before deploy it is conditional (never also among the unconditional ones).
    """

    exports: frozenset[str] = frozenset()
    imports: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()
    conditional_exports: tuple[Conditional, ...] = ()  # one per name, by name
    conditional_imports: tuple[Conditional, ...] = ()


def find_dependencies(template: Mapping[str, Any], values: Mapping[str, str], shown: str) -> Dependencies:
    """Exports and imports of a template; `values` are the parameters sent and the known pseudo parameters.

    A parameter missing from `values` takes its `Default`. One with neither is a user error of its own
    (`missing_parameters`): what it leaves unresolved is no warning here.
    """
    known = {**parameter_defaults(template), **values}
    return collect_dependencies(
        template.get("Outputs"),
        "Outputs",
        template,
        known,
        shown,
        deferred=deploy_time_parameters(template),
        absent=missing_parameters(template, values),
    )


def collect_dependencies(
    outputs: Any,
    outputs_key: str,
    document: Any,
    known: Mapping[str, str],
    shown: str,
    *,
    conditions: Any = None,
    deferred: Collection[str] = (),
    absent: Collection[str] = (),
) -> Dependencies:
    """Exports of the `outputs` mapping (found at `outputs_key`) and imports anywhere in `document`.

    `conditions`: the `Conditions` mapping that `Condition:` keys and `Fn::If` name (by default the
    document's own, as in a template: a Serverless config's are under `resources`); `deferred`: parameters
    whose value CloudFormation reads when it deploys; `absent`: parameters with no value at all, whose
    consequences are reported once elsewhere.
    """
    if conditions is None and isinstance(document, dict):
        conditions = document.get("Conditions")
    reader = _Reader(Scope(known, conditions, deferred), shown, absent)
    exports, conditional_exports = reader.resolve_all(_export_names(outputs, outputs_key), "Export.Name")
    imports, conditional_imports = reader.resolve_all(_imports(document, "", ()), "Fn::ImportValue")
    return Dependencies(
        frozenset(exports),
        frozenset(imports),
        tuple(reader.warnings),
        conditional_exports,
        conditional_imports,
    )


# Conditions that must all hold for an expression to be part of the stack: (condition, its required value)
Guard = tuple[tuple[str, bool], ...]
# Sections whose entries may carry a `Condition:` of their own, told apart by a key every entry has.
_CONDITIONAL_ENTRIES = {"Resources": "Type", "Outputs": "Value"}


@dataclass(frozen=True)
class _Found:
    where: str
    expression: Any
    guard: Guard


def _entry_guard(entry: Any, section: str) -> Guard:
    if (
        isinstance(entry, dict)
        and isinstance(entry.get("Condition"), str)
        and _CONDITIONAL_ENTRIES[section] in entry
    ):
        return ((entry["Condition"], True),)
    return ()


def _export_names(outputs: Any, outputs_key: str) -> Iterator[_Found]:
    if not isinstance(outputs, dict):
        return
    for name, output in outputs.items():
        if isinstance(output, dict) and isinstance(output.get("Export"), dict):
            export = output["Export"]
            if "Name" in export:
                where = f"{outputs_key}.{name}.Export.Name"
                yield _Found(where, export["Name"], _entry_guard(output, "Outputs"))


def _imports(node: Any, where: str, guard: Guard) -> Iterator[_Found]:
    if isinstance(node, dict):
        branches = node.get("Fn::If") if len(node) == 1 else None
        if isinstance(branches, list) and len(branches) == 3 and isinstance(branches[0], str):
            # each branch exists only when the condition has its value; the condition itself is not walked
            yield from _imports(branches[1], f"{where}.Fn::If[1]", (*guard, (branches[0], True)))
            yield from _imports(branches[2], f"{where}.Fn::If[2]", (*guard, (branches[0], False)))
            return
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "Fn::ImportValue":
                yield _Found(where or key, value, guard)
            elif key in _CONDITIONAL_ENTRIES and isinstance(value, dict):
                for name, entry in value.items():
                    yield from _imports(entry, f"{path}.{name}", (*guard, *_entry_guard(entry, key)))
            else:
                yield from _imports(value, path, guard)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _imports(value, f"{where}[{i}]", guard)


@dataclass
class _Reader:
    scope: Scope
    shown: str
    absent: Collection[str]
    warnings: list[str] = field(default_factory=list)

    def resolve_all(self, found: Iterator[_Found], what: str) -> tuple[set[str], tuple[Conditional, ...]]:
        """The names that exist, and those that exist only under conditions unknown before deploy."""
        names: set[str] = set()
        conditional: dict[str, Conditional] = {}
        for item in found:
            holds = _holds(item.guard, self.scope)
            if holds is False:
                continue  # under a false condition: not part of the stack
            try:
                name = self.scope.resolve(item.expression)
            except UnresolvedError as e:
                if e.missing not in self.absent:
                    self.warnings.append(
                        f"{self.shown}: {item.where}: cannot resolve {what} {_json(item.expression)}"
                        f" statically ({e}); phasedoit cannot order it"
                    )
                continue
            if holds is True:
                names.add(name)
            elif name not in conditional:
                when = " and ".join(f"condition {c} is {str(value).lower()}" for c, value, _ in holds)
                where = f"{self.shown}: {item.where}"
                conditional[name] = Conditional(name, where, _json(item.expression), when, holds[0][2])
        return names, tuple(conditional[name] for name in sorted(conditional) if name not in names)


def _json(expression: Any) -> str:
    return json.dumps(expression, default=str)


def _holds(guard: Guard, scope: Scope) -> bool | tuple[tuple[str, bool, str], ...]:
    """False if a condition of `guard` is known false, else the ones unknown (with why), or True if none."""
    unknown = []
    for name, wanted in dict.fromkeys(guard):
        value = scope.condition(name)
        if isinstance(value, Unknown):
            unknown.append((name, wanted, value.reason))
        elif value != wanted:
            return False
    return tuple(unknown) or True


def resource_types(template: Mapping[str, Any]) -> tuple[str, ...]:
    """The types of the template's resources, sorted, each once."""
    resources = template.get("Resources")
    kinds = {
        r.get("Type")
        for r in (resources if isinstance(resources, dict) else {}).values()
        if isinstance(r, dict)
    }
    return tuple(sorted(kind for kind in kinds if isinstance(kind, str)))
