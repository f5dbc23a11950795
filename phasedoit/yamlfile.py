"""Read YAML and JSON files into plain data, with one-line errors that name the file and position.

A file is bounded before its data is trusted: at most MAX_BYTES long, collections nested at most MAX_DEPTH
deep and at most MAX_VALUES nodes once YAML aliases are expanded (an alias bomb is refused before anything
walks it). Duplicate keys, numbers that are not finite, tags that are not plain data, and (in templates) a
`!Tag` that is not a CloudFormation short form are errors too.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from phasedoit import jsonfile
from phasedoit.errors import PhasedoitError

MAX_BYTES = 4 * 1024 * 1024  # a CloudFormation template is at most 1 MB, even from S3
MAX_DEPTH = 100  # nested lists and mappings; every reader of the data recurses
MAX_VALUES = 1_000_000  # nodes once aliases are expanded: "billion laughs" fit in a kilobyte

_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
# A path in a document: mapping keys (as written) and list indexes.
DocumentPath = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_MERGE = f"{_TAG}merge"
_STR = f"{_TAG}str"
_TYPED = {f"{_TAG}bool", f"{_TAG}int", f"{_TAG}float"}
# Standard tags SafeLoader knows whose values are no JSON (bytes, sets, dates, ordered pairs).
_REFUSED_TAGS = ("binary", "set", "omap", "pairs", "timestamp")

# CloudFormation's documented YAML short forms; any other `!Tag` in a template is a mistake.
SHORT_FORMS = frozenset({
    "And", "Base64", "Cidr", "Condition", "Equals", "FindInMap", "GetAtt", "GetAZs", "GetStackOutput", "If",
    "ImportValue", "Join", "Not", "Or", "Ref", "Select", "Split", "Sub", "Transform",
})  # fmt: skip
# Functions CloudFormation has in long form only (AWS::LanguageExtensions, Rules).
_LONG_ONLY = frozenset({
    "ForEach", "Length", "ToJsonString", "Contains", "EachMemberEquals", "EachMemberIn", "RefAll", "ValueOf",
    "ValueOfAll",
})  # fmt: skip


class _Refused(yaml.MarkedYAMLError):
    """What phasedoit refuses in a document that YAML itself accepts."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def _shown_tag(tag: str) -> str:
    return f"!!{tag.removeprefix(_TAG)}" if tag.startswith(_TAG) else tag


def _undefined(loader: yaml.SafeLoader, node: Node) -> Any:
    raise ConstructorError(None, None, f"unknown tag {_shown_tag(node.tag)}", node.start_mark)


def _refused_tag(loader: yaml.SafeLoader, node: Node) -> Any:
    raise ConstructorError(
        None,
        None,
        f"{_shown_tag(node.tag)} is not supported (only strings, numbers, booleans, lists and mappings)",
        node.start_mark,
    )


def _finite_float(loader: yaml.SafeLoader, node: Node) -> float:
    value = yaml.constructor.SafeConstructor.construct_yaml_float(loader, node)  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise ConstructorError(
            None, None, f"{node.value} is not a finite number (quote it if it is text)", node.start_mark
        )
    return value


def _short_form(loader: yaml.SafeLoader, suffix: str, node: Node) -> dict[str, Any]:
    if suffix not in SHORT_FORMS:
        hint = (
            f"CloudFormation has no short form of it: write Fn::{suffix}"
            if suffix in _LONG_ONLY
            else "not a CloudFormation short form such as !Ref or !Sub"
        )
        raise ConstructorError(None, None, f"unknown tag !{suffix} ({hint})", node.start_mark)
    value: Any
    if isinstance(node, ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 timestamps (`2010-09-09` stays the string CloudFormation expects), that
    stops composing at MAX_DEPTH instead of recursing into a RecursionError."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        collection = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        if collection and self._depth >= MAX_DEPTH:
            raise _Refused(_TOO_DEEP, self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        self._depth += collection
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= collection


class CloudFormationLoader(_PlainLoader):
    """Also reads the CloudFormation short forms (`!Ref`, `!Sub`, `!GetAtt a.b`, ...) as their long forms."""


# libyaml's parser reads templates (and phases.yml) ~10x faster; the tag constructors and resolvers are
# Python and work with it unchanged. libyaml stops at 1,000 nested levels itself, so composing cannot
# overflow its C stack. Its error texts differ, so errors are re-read with the pure-Python loader.
_FastCloudFormationLoader: type[yaml.CSafeLoader] | None = None
_FastPlainLoader: type[yaml.CSafeLoader] | None = None
if yaml.__with_libyaml__:

    class _CCloudFormationLoader(yaml.CSafeLoader):
        pass

    class _CPlainLoader(yaml.CSafeLoader):
        pass

    _FastCloudFormationLoader, _FastPlainLoader = _CCloudFormationLoader, _CPlainLoader


def _configure(loader: type[yaml.SafeLoader | yaml.CSafeLoader], cloudformation: bool) -> None:
    loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != f"{_TAG}timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    loader.add_constructor(None, _undefined)
    loader.add_constructor(f"{_TAG}float", _finite_float)
    for name in _REFUSED_TAGS:
        loader.add_constructor(f"{_TAG}{name}", _refused_tag)
    if cloudformation:
        loader.add_multi_constructor("!", _short_form)


_configure(_PlainLoader, cloudformation=False)
_configure(CloudFormationLoader, cloudformation=True)
if _FastCloudFormationLoader is not None and _FastPlainLoader is not None:
    _configure(_FastCloudFormationLoader, cloudformation=True)
    _configure(_FastPlainLoader, cloudformation=False)


def read_text(path: Path, shown: str) -> str:
    """The text of a regular file of at most MAX_BYTES; a FIFO or a device is refused before it is read."""
    data = _read_bytes(path, shown)
    if len(data) > MAX_BYTES:
        megabytes = MAX_BYTES // 2**20
        raise PhasedoitError(f"{shown}: is larger than {megabytes} MB, the most phasedoit reads")
    if b"\0" in data:
        raise PhasedoitError(f"{shown}: is a binary file, not YAML or JSON text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PhasedoitError(f"{shown}: is not UTF-8 text (bad byte at offset {e.start})") from None


def _read_bytes(path: Path, shown: str) -> bytes:
    """Up to MAX_BYTES + 1 bytes of a regular file (non-blocking: opening a FIFO would wait for a writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        try:
            kind = _kind(os.fstat(fd).st_mode)
            if kind is None:
                return _read_up_to(fd, MAX_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as e:
        raise PhasedoitError(f"{shown}: cannot read: {e.strerror}") from None
    raise PhasedoitError(f"{shown}: is not a regular file ({kind})")


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str | None:
    """What a file that is not a regular file is, in words."""
    kinds = [
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def load(
    path: Path,
    shown: str,
    *,
    cloudformation: bool = False,
    text_at: Callable[[DocumentPath], bool] | None = None,
) -> Any:
    """Parse `path` (JSON when it ends in .json, else YAML); errors say `shown: line L, column C: ...`.

    `text_at`: YAML only; the paths whose plain scalars are strings whatever they look like (`1.10`,
    `0755`, `yes` stay as written). Every mapping key is then its text too (`on:` is 'on').
    """
    text = read_text(path, shown)
    if path.suffix == ".json":
        return jsonfile.parse(text, shown, MAX_DEPTH)
    fast = _FastCloudFormationLoader if cloudformation else _FastPlainLoader
    if fast is not None:
        try:
            return _load_yaml(text, fast, text_at)
        except yaml.YAMLError:
            pass  # the pure-Python loader below gives the error its usual text
    try:
        return _load_yaml(text, CloudFormationLoader if cloudformation else _PlainLoader, text_at)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise PhasedoitError(f"{shown}: {where}{_one_line(e.problem or e.context or '')}") from None
    except yaml.reader.ReaderError as e:
        raise PhasedoitError(
            f"{shown}: {jsonfile.line_column(text, e.position)}: control character #x{e.character:04x}"
            " is not allowed in YAML"
        ) from None
    except yaml.YAMLError as e:
        raise PhasedoitError(f"{shown}: {_one_line(str(e))}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split("\n"))


def _load_yaml(
    text: str,
    loader_class: type[yaml.SafeLoader | yaml.CSafeLoader],
    text_at: Callable[[DocumentPath], bool] | None,
) -> Any:
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        mappings = _bound(root)
        if text_at is not None:
            _keep_text(root, text_at)
        for mapping in mappings:
            _unique_keys(loader, mapping)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    return node.value if isinstance(node, SequenceNode) else []


_SCALAR = (1, 0)  # a scalar is one node, and no nested collection


def _bound(root: Node) -> list[MappingNode]:
    """Refuse a document that expands to too many nodes, nests too deep or holds itself; its mappings.

    Aliases make the nodes a graph: each distinct collection is measured once (the size and height of what
    it expands to), so an alias bomb is measured in as many steps as it has lines.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(collection) -> (nodes once expanded, nested collections)
    on_path: set[int] = set()
    mappings: list[MappingNode] = []
    # (a collection, None) before its children are measured; (it, its collections, its scalars) after
    stack: list[tuple[Node, list[Node] | None, int]] = [] if type(root) is ScalarNode else [(root, None, 0)]
    while stack:
        node, collections, scalars = stack.pop()
        key = id(node)
        if collections is not None:
            size, height = 1 + scalars, 0
            for child in collections:
                child_size, child_height = measured[id(child)]
                size, height = size + child_size, max(height, child_height)
            if size > MAX_VALUES:
                raise _Refused(
                    f"holds more than {MAX_VALUES:,} values once its aliases are expanded", node.start_mark
                )
            measured[key] = (size, height + 1)
            on_path.discard(key)
        elif key in on_path:
            raise _Refused("holds an alias to itself", node.start_mark)
        elif key not in measured:
            on_path.add(key)
            if type(node) is MappingNode:
                mappings.append(node)
            children = _children(node)
            collections = [child for child in children if type(child) is not ScalarNode]
            stack.append((node, collections, len(children) - len(collections)))
            stack.extend((child, None, 0) for child in reversed(collections))
    if measured.get(id(root), _SCALAR)[1] > MAX_DEPTH:
        raise _Refused(_TOO_DEEP, _too_deep(root, measured).start_mark)
    return mappings


def _too_deep(root: Node, measured: dict[int, tuple[int, int]]) -> Node:
    """The first collection, in document order, nested one level deeper than MAX_DEPTH."""
    node, depth = root, 1
    while depth <= MAX_DEPTH:
        node = next(c for c in _children(node) if depth + measured.get(id(c), _SCALAR)[1] > MAX_DEPTH)
        depth += 1
    return node


def _keep_text(root: Node, text_at: Callable[[DocumentPath], bool]) -> None:
    stack: list[tuple[Node, DocumentPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if key.tag != _MERGE:
                    _as_text(key)
                stack.append((value, (*path, key.value if isinstance(key, ScalarNode) else "?")))
        elif isinstance(node, SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
        elif text_at(path):
            _as_text(node)


def _as_text(node: Node) -> None:
    # a plain scalar's value is its text as written: `1.10`, not 1.1 (its style: None, or '' from libyaml)
    if isinstance(node, ScalarNode) and node.tag in _TYPED and not node.style:
        node.tag = _STR


def _unique_keys(loader: yaml.SafeLoader | yaml.CSafeLoader, node: MappingNode) -> None:
    """Keys written twice in one mapping (merged `<<` keys may be overridden); compared as JSON sees them."""
    keys = [
        (key, _key_text(loader, key)) for key, _ in node.value if key.tag != _MERGE and key.id == "scalar"
    ]
    if len({name for _, name in keys}) == len(keys):
        return
    first: dict[str, yaml.Mark] = {}
    for key, name in keys:
        if name in first:
            raise _Refused(f"duplicate key {name!r} (first at line {first[name].line + 1})", key.start_mark)
        first[name] = key.start_mark


def _key_text(loader: yaml.SafeLoader | yaml.CSafeLoader, key: Node) -> str:
    """A scalar key as it is sent in JSON: `1` and `01` are one key."""
    if key.tag == _STR:
        return key.value  # type: ignore[no-any-return]
    value = loader.construct_object(key)
    return value if isinstance(value, str) else json.dumps(value, default=str)
