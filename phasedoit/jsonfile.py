"""Read JSON as strictly as phasedoit reads YAML: no NaN or Infinity, no key twice, nesting bounded.

Python's json takes `NaN`, `Infinity` and `1e999` (as float infinity), keeps the last of two equal keys and
recurses into a RecursionError. Its hooks refuse the first three; a scan of the text then says where.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from phasedoit.errors import PhasedoitError


class _Problem(Exception):
    """Raised from json's hooks: what is wrong; `_problem` finds where."""


def parse(text: str, shown: str, max_depth: int) -> Any:
    """The data of JSON `text`; errors say `shown: line L, column C: ...`."""
    try:
        data = json.loads(
            text, parse_constant=_not_json, parse_float=_finite_float, object_pairs_hook=_unique_pairs
        )
    except json.JSONDecodeError as e:
        raise PhasedoitError(f"{shown}: line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise PhasedoitError(f"{shown}: {_problem(text, max_depth) or _too_deep(max_depth)}") from None
    except _Problem as e:
        raise PhasedoitError(f"{shown}: {_problem(text, max_depth) or e}") from None
    if _height(data, max_depth) > max_depth:
        raise PhasedoitError(f"{shown}: {_problem(text, max_depth) or _too_deep(max_depth)}")
    return data


def _too_deep(max_depth: int) -> str:
    return f"nested deeper than {max_depth} levels"


def _not_json(constant: str) -> Any:
    raise _Problem(f"{constant} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Problem(f"{text} is not a finite number")
    return value


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Problem(f"duplicate key {key!r}")
            seen.add(key)
    return mapping


def _height(data: Any, max_depth: int) -> int:
    """How deep lists and dicts nest in `data`, without recursing."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            if deepest > max_depth:
                break
            stack.extend((child, depth + 1) for child in children)
    return deepest


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]|-?(?:NaN|Infinity)|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?')


def _problem(text: str, max_depth: int) -> str | None:
    """`line L, column C: what` of the first nesting, constant or duplicate key json's hooks refused.

    Only called on a document json read up to that problem, so its tokens before it are well formed.
    """
    containers: list[dict[str, int] | None] = []  # per open bracket: an object's keys and their offsets
    string: re.Match[str] | None = None  # the string token just before, a key if ':' follows
    for token in _TOKEN.finditer(text):
        value = token.group()
        if value in ("{", "["):
            containers.append({} if value == "{" else None)
            if len(containers) > max_depth:
                return f"{line_column(text, token.start())}: {_too_deep(max_depth)}"
        elif value in ("}", "]"):
            if containers:
                containers.pop()
        elif value == ":":
            keys = containers[-1] if containers else None
            if string is not None and keys is not None:
                name = json.loads(string.group())
                if name in keys:
                    first = text.count("\n", 0, keys[name]) + 1
                    where = line_column(text, string.start())
                    return f"{where}: duplicate key {name!r} (first at line {first})"
                keys[name] = string.start()
        elif value.startswith('"'):
            string = token
            continue
        elif value.lstrip("-") in ("NaN", "Infinity"):
            return f"{line_column(text, token.start())}: {value} is not valid JSON"
        elif not math.isfinite(float(value)):
            return f"{line_column(text, token.start())}: {value} is not a finite number"
        string = None
    return None


def line_column(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"
