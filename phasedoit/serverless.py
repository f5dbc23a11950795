"""Read a Serverless Framework service (`serverless.yml`) for its stack name, exports and imports.

Serverless' own variables (`${opt:stage}`, `${self:...}`, `${file(...):...}`, ...) are resolved as the
Serverless Framework v3 (and osls, its open-source fork) resolves them, for the stage phasedoit deploys (it
plays `--stage`, and `--region` when the stage has one): one property at a time, each when it is first needed.
A file's content replaces the property that includes it, then its own variables are resolved as properties of
the service, so `${self:custom.stage}` inside `custom: ${file(../common.yml):custom}` means the service's
`custom.stage`. CloudFormation's own `${...}` (in `Fn::Sub`) are left for `intrinsics.resolve`.
tests/test_serverless_golden.py compares this with the framework's own `print` and `package`.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from phasedoit import yamlfile
from phasedoit.errors import PhasedoitError
from phasedoit.templates import Dependencies, collect_dependencies

CONFIG_NAMES = ("serverless.yml", "serverless.yaml", "serverless.json")
# Serverless gives up on a value whose variables resolve to more variables this many times over.
MAX_NEST = 10


@dataclass(frozen=True)
class ServerlessService:
    stack_name: str
    dependencies: Dependencies
    files: tuple[Path, ...] = field(default=(), compare=False)  # what its `${file(...)}` variables read


@dataclass(frozen=True)
class Resolved:
    """A service's configuration with its variables resolved (those that could not be stay as written)."""

    config: dict[str, Any]
    warnings: tuple[str, ...]
    files: tuple[Path, ...]  # what its `${file(...)}` variables read


def read_serverless(
    path: Path, shown: str, *, stage: str, values: Mapping[str, str], env: Mapping[str, str]
) -> ServerlessService:
    """`values`: known pseudo parameters (`AWS::Region`, ...); `env`: the environment `${env:X}` reads."""
    resolved = resolve_config(path, shown, stage=stage, values=values, env=env)
    config = resolved.config
    stack_name = _stack_name(config, shown, stage)
    # Serverless names the stack; `${AWS::StackName}` in a Sub is therefore known here.
    known = {**values, "AWS::StackName": stack_name}
    outputs = stack_outputs(config, _service_name(config, shown), stage)
    conditions = _merged(config.get("resources"), "Conditions")
    deps = collect_dependencies(outputs, "resources.Outputs", config, known, shown, conditions=conditions)
    dependencies = _still_variables(deps, list(resolved.warnings), shown)
    return ServerlessService(stack_name, dependencies, resolved.files)


def resolve_config(
    path: Path, shown: str, *, stage: str, values: Mapping[str, str], env: Mapping[str, str]
) -> Resolved:
    """The configuration in `path` as the framework resolves it for `--stage stage`."""
    raw = yamlfile.load(path, shown, cloudformation=True)
    if not isinstance(raw, dict):
        raise PhasedoitError(f"{shown}: not a Serverless Framework config (not a mapping)")
    resolver = _Resolver(raw, path.parent, shown=shown, stage=stage, values=values, env=env)
    resolver.resolve_tree((), strict=False)
    return Resolved(resolver.config, tuple(dict.fromkeys(resolver.warnings)), tuple(resolver.files))


def _service_name(config: dict[str, Any], shown: str) -> str:
    service = config.get("service")
    # Serverless v1 allowed `service: {name: ...}`.
    if isinstance(service, dict):
        service = service.get("name")
    if not isinstance(service, str) or "${" in service:
        raise PhasedoitError(f"{shown}: service: needs a name (a string), got {service!r}")
    return service


def _stack_name(config: dict[str, Any], shown: str, stage: str) -> str:
    provider = config.get("provider")
    if isinstance(provider, dict) and isinstance(provider.get("stackName"), str):
        return str(provider["stackName"])
    return f"{_service_name(config, shown)}-{stage}"


def stack_outputs(config: dict[str, Any], service: str, stage: str) -> dict[str, Any]:
    """The Outputs of the stack the framework packages: its own, then `resources`' merged over them.

    The framework exports each of its own outputs as `sls-<service>-<stage>-<output>`, before it merges
    `resources`: an output of `resources` without an `Export` has none.
    """
    outputs: dict[str, Any] = {
        name: {"Export": {"Name": f"sls-{service}-{stage}-{name}"}} for name in framework_outputs(config)
    }
    for name, output in _merged(config.get("resources"), "Outputs").items():
        mine = outputs.get(name)
        outputs[name] = {**mine, **output} if isinstance(mine, dict) and isinstance(output, dict) else output
    return outputs


def framework_outputs(config: Mapping[str, Any]) -> list[str]:
    """The Outputs the framework adds for the functions, layers and APIs of `config` (their names only)."""
    provider = _mapping(config.get("provider"))
    functions = _mapping(config.get("functions"))
    names = ["ServerlessDeploymentBucketName"]
    events: set[str] = set()
    for function_name, settings in functions.items():
        function = _mapping(settings)
        versioned = function.get("versionFunction", provider.get("versionFunctions", True))
        if versioned is not False:
            names.append(f"{_logical_name(function_name)}LambdaFunctionQualifiedArn")
        if function.get("url"):
            names.append(f"{_logical_name(function_name)}LambdaFunctionUrl")
        listed = function.get("events")
        for event in listed if isinstance(listed, list) else ():
            events.update(event if isinstance(event, dict) else ())
    if "httpApi" in events and not _mapping(provider.get("httpApi")).get("id"):
        names += ["HttpApiId", "HttpApiUrl"]
    if "http" in events:
        names.append("ServiceEndpoint")
    if "websocket" in events:
        names.append("ServiceEndpointWebsocket")
    if "cloudFront" in events:
        names += ["CloudFrontDistribution", "CloudFrontDistributionDomainName"]
    for layer in _mapping(config.get("layers")):
        names += [f"{_logical_name(layer)}LambdaLayer{end}" for end in ("QualifiedArn", "Hash", "S3Key")]
    return names


def _logical_name(name: str) -> str:
    """The framework's `getNormalizedFunctionName`: `get-user_v2` is `GetDashuserUnderscorev2`."""
    name = name.replace("-", "Dash").replace("_", "Underscore")
    return name[:1].upper() + name[1:]


def _mapping(node: Any) -> dict[str, Any]:
    return node if isinstance(node, dict) else {}


def _merged(resources: Any, section: str) -> dict[str, Any]:
    # `resources` is a CloudFormation fragment, or a list of them (often `${file(...)}` each) merged.
    fragments = resources if isinstance(resources, list) else [resources]
    merged: dict[str, Any] = {}
    for fragment in fragments:
        if isinstance(fragment, dict) and isinstance(fragment.get(section), dict):
            merged.update(fragment[section])
    return merged


def _still_variables(deps: Dependencies, warnings: list[str], shown: str) -> Dependencies:
    """Names still holding a Serverless variable (`${ssm:...}`, ...) are known only at deploy time."""
    found = [*warnings, *deps.warnings]
    for kind, names in (("export", deps.exports), ("import", deps.imports)):
        found.extend(
            f"{shown}: {kind} {name} holds a variable phasedoit cannot resolve; phasedoit cannot order it"
            for name in sorted(names)
            if "${" in name
        )
    return replace(
        deps,
        exports=frozenset(n for n in deps.exports if "${" not in n),
        imports=frozenset(n for n in deps.imports if "${" not in n),
        warnings=tuple(dict.fromkeys(found)),
    )


@dataclass
class _Variable:
    """`${...}` in a string: its contents (text and nested variables) and its original text."""

    parts: list[_Part]
    text: str


_Part = str | _Variable
# `source:address` or `source(argument)`; `AWS::Region` and `Stage` are CloudFormation's (Fn::Sub).
_SERVERLESS_SOURCE = re.compile(r"\s*(\w+\(|\w+:(?!:))")
_QUOTED = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)")\s*""")
_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*")
_LITERALS = {"true": True, "false": False}


def _parse(text: str, start: int = 0, nested: bool = False) -> tuple[list[_Part], int]:
    """Split `text` into literal text and Serverless variables; returns the parts and where it stopped."""
    parts: list[_Part] = []
    i = literal = start
    while i < len(text) and not (nested and text[i] == "}"):
        if not text.startswith("${", i):
            i += 1
            continue
        parts.append(text[literal:i])
        inner, end = _parse(text, i + 2, nested=True)
        if end >= len(text):  # unterminated: plain text, as Serverless leaves it
            return [*parts, text[i:]], end
        variable = _Variable(inner, text[i : end + 1])
        is_ours = isinstance(inner[0], str) and _SERVERLESS_SOURCE.match(inner[0])
        parts.append(variable if is_ours else variable.text)
        i = literal = end + 1
    parts.append(text[literal:i])
    return _merge_text(parts), i


def _has_variables(node: Any) -> bool:
    return isinstance(node, str) and "${" in node and any(isinstance(p, _Variable) for p in _parse(node)[0])


def _merge_text(parts: list[_Part]) -> list[_Part]:
    merged: list[_Part] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif part != "":
            merged.append(part)
    return merged or [""]


def _split_fallbacks(parts: list[_Part]) -> list[list[_Part]]:
    """`source:address, fallback, ...` split at the commas outside quotes."""
    pieces: list[list[_Part]] = [[]]
    quote = ""
    for part in parts:
        if isinstance(part, _Variable):
            pieces[-1].append(part)
            continue
        for char in part:
            if char in "'\"" and quote in ("", char):
                quote = "" if quote else char
            if char == "," and not quote:
                pieces.append([])
            else:
                pieces[-1].append(char)
    return [_merge_text(piece) for piece in pieces]


class _Missing(Exception):
    """A variable without a value.

    `final`: no fallback is tried (the value exists but is not known here, or the reference is circular);
    `quiet`: no warning (Serverless resolves it at deploy time, or the property it needs has its warning).
    """

    def __init__(self, reason: str, *, quiet: bool = False, final: bool = False, fatal: bool = False) -> None:
        super().__init__(reason)
        self.quiet = quiet
        self.final = final or quiet
        self.fatal = fatal
        self.variable = ""  # the innermost variable that failed


def _deploy_time(reason: str) -> _Missing:
    return _Missing(reason, quiet=True)


Key = str | int
Where = tuple[Key, ...]


def _get(node: Any, where: Where) -> Any:
    for key in where:
        node = node[key]
    return node


def _step(node: Any, key: str) -> Key | None:
    """`key` of an address as a key of `node`: a mapping's key, or a list's index; None when absent."""
    if isinstance(node, dict) and node.get(key) is not None:
        return key
    if isinstance(node, list) and key.isdigit() and int(key) < len(node):
        return int(key)
    return None


def _name(where: Where) -> str:
    """`custom.stage`, `resources[1].Outputs`: a property as the user reads it."""
    text = ""
    for key in where:
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else key
    return text


def _as_text(value: Any) -> str:
    """A value inside a string, as the framework (JavaScript) writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Resolver:
    """Resolves the properties of one configuration in place, each once, each when first needed."""

    def __init__(
        self,
        config: dict[str, Any],
        service_dir: Path,
        *,
        shown: str,
        stage: str,
        values: Mapping[str, str],
        env: Mapping[str, str],
    ) -> None:
        self.config, self.service_dir, self.shown = config, service_dir, shown
        self.stage, self.values, self.env = stage, values, env
        self.warnings: list[str] = []
        self.done: set[Where] = set()
        self.failed: set[Where] = set()
        self.resolving: list[Where] = []  # the properties being resolved, innermost last
        self.origins: dict[Where, str] = {}  # properties whose value a file gave: that file, for messages
        self.files: dict[Path, Any] = {}

    def resolve_tree(self, where: Where, *, strict: bool) -> None:
        """Every property at and under `where`; `strict`: one that could not be resolved raises."""
        self.resolve_property(where, strict=strict)
        node = _get(self.config, where)
        keys = list(node) if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else ()
        for key in keys:
            self.resolve_tree((*where, key), strict=strict)

    def resolve_property(self, where: Where, *, strict: bool) -> None:
        """Replace the string at `where` by its value; one that cannot be resolved stays as written."""
        if where in self.resolving:
            cycle = self.resolving[self.resolving.index(where) :]
            if len(cycle) == 1:
                raise _Missing(f"{_name(where)} refers to itself", final=True)
            raise _Missing(f"circular: {', '.join(map(_name, [*cycle, where]))}", final=True)
        if where in self.failed and strict:
            raise _Missing(f"{_name(where)} is not resolved", quiet=True)  # it has its own warning
        text = _get(self.config, where)
        if where in self.done or not _has_variables(text):
            return
        self.resolving.append(where)
        try:
            value = self.resolve_text(text)
        except _Missing as e:
            self.failed.add(where)
            if not e.quiet:
                self.warn(where, f"cannot resolve {e.variable or text} ({e})")
            if strict:
                raise _Missing(f"{_name(where)} is not resolved", quiet=True) from None
            return
        finally:
            self.resolving.pop()
            self.done.add(where)
        if where:
            _get(self.config, where[:-1])[where[-1]] = value

    def resolve_text(self, text: str) -> Any:
        """The value of a string; a file's text may hold variables in turn."""
        for _ in range(MAX_NEST):
            value = self.join(_parse(text)[0])
            if not _has_variables(value):
                return value
            text = value
        raise _Missing("its variables resolve to variables too many times over")

    def warn(self, where: Where, message: str) -> None:
        origin = max((w for w in self.origins if where[: len(w)] == w), key=len, default=None)
        written = f" (from {self.origins[origin]})" if origin is not None else ""
        self.warnings.append(f"{self.shown}: {_name(where)}{written}: {message}")

    def join(self, parts: list[_Part]) -> Any:
        """The value of `parts`: a lone variable keeps its type (a mapping, a list), else a string."""
        if len(parts) == 1 and isinstance(parts[0], _Variable):
            return self.variable(parts[0])
        return "".join(part if isinstance(part, str) else self.text_variable(part) for part in parts)

    def text_variable(self, variable: _Variable) -> str:
        value = self.variable(variable)
        if isinstance(value, (dict, list)):
            missing = _Missing("a mapping or list cannot be part of a string")
            missing.variable = variable.text
            raise missing
        return _as_text(value)

    def variable(self, variable: _Variable) -> Any:
        pieces = _split_fallbacks(variable.parts)
        first: _Missing | None = None
        for i, piece in enumerate(pieces):
            try:
                return self.piece(piece, fallback=i > 0)
            except _Missing as e:
                first = first or e
                if e.final:
                    break
        assert first is not None  # there is always a first piece
        first.variable = first.variable or variable.text
        if first.fatal:
            raise PhasedoitError(f"{self.shown}: {first.variable}: {first}")
        raise first

    def piece(self, piece: list[_Part], *, fallback: bool) -> Any:
        meaningful = [p for p in piece if not (isinstance(p, str) and p.isspace())]
        if fallback and len(meaningful) == 1 and isinstance(meaningful[0], _Variable):
            return self.variable(meaningful[0])
        text = self.join(piece)
        if fallback and (quoted := _QUOTED.fullmatch(text)):
            return quoted[1] if quoted[1] is not None else quoted[2]
        if fallback and (number := _NUMBER.fullmatch(text)):
            return float(number[1]) if "." in number[1] else int(number[1])
        if fallback and text.strip() in _LITERALS:
            return _LITERALS[text.strip()]
        return self.source(text.strip())

    def source(self, address: str) -> Any:
        source, _, rest = address.partition(":")
        if source.startswith("file("):
            return self.file(address)
        if source == "self":
            return self.lookup(rest.split(".") if rest else [])
        if source == "env":
            if rest not in self.env:
                raise _Missing(f"environment variable {rest} is not set")
            return self.env[rest]
        if source == "param":
            return self.param(rest)
        return self.option(source, rest)

    def option(self, source: str, rest: str) -> Any:
        """`opt:`, `sls:` and `aws:`: what phasedoit passes the framework (`--stage`, `--region`), or AWS."""
        if rest == "stage" and source in ("opt", "sls"):
            return self.stage
        if rest == "region" and source in ("opt", "aws") and "AWS::Region" in self.values:
            return self.values["AWS::Region"]  # phasedoit passes the stage's region as `--region`
        if (source, rest) == ("aws", "region"):
            return self.default_region()
        if (source, rest) == ("aws", "accountId"):
            if "AWS::AccountId" in self.values:
                return self.values["AWS::AccountId"]
            raise _deploy_time("the account is known at deploy time")
        if source in ("opt", "sls", "aws"):
            raise _Missing(f"phasedoit knows no {source}:{rest}")
        raise _deploy_time(f"{source}: is resolved by Serverless at deploy time")

    def default_region(self) -> Any:
        """`${aws:region}` without `--region`: `provider.region`, else the framework's default."""
        try:
            return self.lookup(["provider", "region"])
        except _Missing as e:
            if e.final:
                raise
            return "us-east-1"

    def param(self, name: str) -> Any:
        """`${param:name}`: the stage's `params.<stage>.name`, else `params.default.name`."""
        for stage in (self.stage, "default"):
            try:
                return self.lookup(["params", stage, name])
            except _Missing as e:
                if e.final:
                    raise
        raise _Missing(f"no params.{self.stage}.{name} nor params.default.{name}")

    def lookup(self, keys: list[str]) -> Any:
        """`${self:a.b}`: the value at `a.b`, resolving the properties on the way there and under it."""
        where: Where = ()
        for key in keys:
            self.resolve_property(where, strict=True)
            step = _step(_get(self.config, where), key)
            if step is None:
                raise _Missing(f"{self.shown}: {_name((*where, key))} does not exist")
            where = (*where, step)
        self.resolve_tree(where, strict=True)
        value = _get(self.config, where)
        if value is None:
            raise _Missing(f"{self.shown}: {_name(where)} is empty")
        return copy.deepcopy(value)

    def file(self, address: str) -> Any:
        match = re.fullmatch(r"file\(\s*['\"]?([^'\")]+?)['\"]?\s*\)(?::(.*))?", address)
        if not match:
            raise _Missing(f"cannot read {address}")
        relative, key = match[1], match[2] or ""
        # the framework reads every file(...) relative to the service's folder, even inside another file
        shown = posixpath.normpath(posixpath.join(posixpath.dirname(self.shown), relative))
        path = self.service_dir / relative
        if path.suffix not in (".yml", ".yaml", ".json"):
            raise _Missing("phasedoit reads only YAML and JSON files")
        if not path.is_file():
            raise _Missing(f"no file {shown}", fatal=True)
        if path not in self.files:
            self.files[path] = yamlfile.load(path, shown, cloudformation=True)
        node, found = self.files[path], ""
        for part in filter(None, key.split(".")):
            # on the way to the address, a string is resolved (as the property that includes the file)
            node = self.resolve_text(node) if _has_variables(node) else node
            step = _step(node, part)
            found = f"{found}.{part}" if found else part
            if step is None:
                raise _Missing(f"{shown}: {found} does not exist")
            node = node[step]
        if node is None:
            raise _Missing(f"{shown}: {found} is empty")
        if isinstance(node, (dict, list)) and self.resolving:
            self.origins[self.resolving[-1]] = shown
        return copy.deepcopy(node)
