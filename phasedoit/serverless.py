"""Read a Serverless Framework service (`serverless.yml`) for its stack name, exports and imports only.

Serverless' own variables (`${opt:stage}`, `${self:...}`, `${file(...):...}`, ...) are resolved the way the
Serverless Framework does, for the stage phasedoit deploys (it plays `--stage`). CloudFormation's own
`${...}` (in `Fn::Sub`) are left for `templates.resolve`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phasedoit import yamlfile
from phasedoit.errors import PhasedoitError
from phasedoit.templates import Dependencies, collect_dependencies

CONFIG_NAMES = ("serverless.yml", "serverless.yaml", "serverless.json")


@dataclass(frozen=True)
class ServerlessService:
    stack_name: str
    dependencies: Dependencies
    files: tuple[Path, ...] = field(default=(), compare=False)  # what its `${file(...)}` variables read


def read_serverless(
    path: Path, shown: str, *, stage: str, values: Mapping[str, str], env: Mapping[str, str]
) -> ServerlessService:
    """`values`: known pseudo parameters (`AWS::Region`, ...); `env`: the environment `${env:X}` reads."""
    raw = yamlfile.load(path, shown, cloudformation=True)
    if not isinstance(raw, dict):
        raise PhasedoitError(f"{shown}: not a Serverless Framework config (not a mapping)")
    resolver = _Resolver(raw, path.parent, shown=shown, stage=stage, values=values, env=env)
    config = resolver.resolve(raw, f"{shown}: ")
    stack_name = _stack_name(config, shown, stage)
    # Serverless names the stack; `${AWS::StackName}` in a Sub is therefore known here.
    known = {**values, "AWS::StackName": stack_name}
    deps = collect_dependencies(_outputs(config.get("resources")), "resources.Outputs", config, known, shown)
    dependencies = _still_variables(deps, resolver.warnings, shown)
    return ServerlessService(stack_name, dependencies, tuple(resolver.files))


def _stack_name(config: dict[str, Any], shown: str, stage: str) -> str:
    provider = config.get("provider")
    if isinstance(provider, dict) and isinstance(provider.get("stackName"), str):
        return str(provider["stackName"])
    service = config.get("service")
    # Serverless v1 allowed `service: {name: ...}`.
    if isinstance(service, dict):
        service = service.get("name")
    if not isinstance(service, str) or "${" in service:
        raise PhasedoitError(f"{shown}: service: needs a name (a string), got {service!r}")
    return f"{service}-{stage}"


def _outputs(resources: Any) -> dict[str, Any]:
    # `resources` is a CloudFormation fragment, or a list of them (often `${file(...)}` each) merged.
    fragments = resources if isinstance(resources, list) else [resources]
    outputs: dict[str, Any] = {}
    for fragment in fragments:
        if isinstance(fragment, dict) and isinstance(fragment.get("Outputs"), dict):
            outputs.update(fragment["Outputs"])
    return outputs


def _still_variables(deps: Dependencies, warnings: list[str], shown: str) -> Dependencies:
    """Names still holding a Serverless variable (`${ssm:...}`, ...) are known only at deploy time."""
    found = [*warnings, *deps.warnings]
    for kind, names in (("export", deps.exports), ("import", deps.imports)):
        found.extend(
            f"{shown}: {kind} {name} holds a variable phasedoit cannot resolve; phasedoit cannot order it"
            for name in sorted(names)
            if "${" in name
        )
    return Dependencies(
        frozenset(n for n in deps.exports if "${" not in n),
        frozenset(n for n in deps.imports if "${" not in n),
        tuple(dict.fromkeys(found)),
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
    """A variable without a value. `quiet`: one Serverless resolves at deploy time (ssm, cf, ...)."""

    def __init__(self, reason: str, *, quiet: bool = False, fatal: bool = False) -> None:
        super().__init__(reason)
        self.quiet = quiet
        self.fatal = fatal
        self.variable = ""  # the innermost variable that failed


class _Resolver:
    def __init__(
        self,
        root: dict[str, Any],
        service_dir: Path,
        *,
        shown: str,
        stage: str,
        values: Mapping[str, str],
        env: Mapping[str, str],
    ) -> None:
        self.root, self.service_dir, self.shown = root, service_dir, shown
        self.stage, self.values, self.env = stage, values, env
        self.warnings: list[str] = []
        self.resolving: set[str] = set()  # `self:` addresses being resolved, to catch circular ones
        self.files: dict[Path, Any] = {}

    def resolve(self, node: Any, where: str) -> Any:
        """`node` with every Serverless variable replaced; unresolved ones stay as written, with a warning."""
        if isinstance(node, str):
            return self.resolve_string(node, where)
        if isinstance(node, dict):
            return {key: self.resolve(value, _join(where, str(key))) for key, value in node.items()}
        if isinstance(node, list):
            return [self.resolve(value, f"{where}[{i}]") for i, value in enumerate(node)]
        return node

    def resolve_string(self, text: str, where: str) -> Any:
        if "${" not in text:
            return text
        parts, _ = _parse(text)
        try:
            return self.join(parts)
        except _Missing as e:
            if not e.quiet:
                self.warnings.append(f"{where}: cannot resolve {e.variable or text} ({e})")
            return text

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
        return str(value)

    def variable(self, variable: _Variable) -> Any:
        pieces = _split_fallbacks(variable.parts)
        first: _Missing | None = None
        for i, piece in enumerate(pieces):
            try:
                return self.piece(piece, fallback=i > 0)
            except _Missing as e:
                first = first or e
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
            return number[1]
        return self.source(text.strip())

    def source(self, address: str) -> Any:
        source, _, rest = address.partition(":")
        if source.startswith("file("):
            return self.file(address)
        if source in ("opt", "sls") and rest == "stage":
            return self.stage
        if source == "self":
            return self.self_path(rest)
        if source == "env":
            if rest not in self.env:
                raise _Missing(f"environment variable {rest} is not set")
            return self.env[rest]
        if source == "aws" and rest in ("region", "accountId"):
            return self._pseudo("AWS::Region" if rest == "region" else "AWS::AccountId")
        if source in ("opt", "sls", "aws"):
            raise _Missing(f"phasedoit knows no {source}:{rest}")
        raise _Missing(f"{source}: is resolved by Serverless at deploy time", quiet=True)

    def _pseudo(self, name: str) -> str:
        if name not in self.values:
            raise _Missing(f"{name} is not known before deploy")
        return self.values[name]

    def self_path(self, address: str) -> Any:
        if address in self.resolving:
            raise _Missing(f"self:{address} refers to itself")
        self.resolving.add(address)
        try:
            return _navigate(self.root, address, self, f"{self.shown}: ")
        finally:
            self.resolving.discard(address)

    def file(self, address: str) -> Any:
        match = re.fullmatch(r"file\(\s*['\"]?([^'\")]+?)['\"]?\s*\)(?::(.*))?", address)
        if not match:
            raise _Missing(f"cannot read {address}")
        relative, key = match[1], match[2] or ""
        shown = posixpath.normpath(posixpath.join(posixpath.dirname(self.shown), relative))
        path = self.service_dir / relative
        if path.suffix not in (".yml", ".yaml", ".json"):
            raise _Missing("phasedoit reads only YAML and JSON files")
        if not path.is_file():
            raise _Missing(f"no file {shown}", fatal=True)
        if path not in self.files:
            self.files[path] = yamlfile.load(path, shown, cloudformation=True)
        return _navigate(self.files[path], key, self, f"{shown}: ")


def _navigate(node: Any, address: str, resolver: _Resolver, where: str) -> Any:
    """The value at dotted `address` in `node`, resolving variables on the way (a key may hold a file).

    `where` is `file: ` of `node`, for messages.
    """
    for key in filter(None, address.split(".")):
        node = resolver.resolve(node, where) if isinstance(node, str) else node
        where = _join(where, key)
        if isinstance(node, dict) and node.get(key) is not None:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise _Missing(f"{where} does not exist")
    if node is None:
        raise _Missing(f"{where} is empty")
    return resolver.resolve(node, where)


def _join(where: str, key: str) -> str:
    """`where` is `file: key.path`; a top-level key follows `file: ` directly."""
    return f"{where}{key}" if where.endswith(": ") else f"{where}.{key}"
