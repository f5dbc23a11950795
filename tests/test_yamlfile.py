"""yamlfile: what it reads, what it refuses (one line, file and position), with libyaml and without."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from phasedoit import yamlfile
from phasedoit.errors import PhasedoitError


def error_of(tmp_path: Path, text: str | bytes, name: str = "template.yml", **options: Any) -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(PhasedoitError) as e:
        yamlfile.load(path, name, **options)
    return str(e.value)


def laughs(levels: int = 9) -> str:
    """The billion laughs: 9 lines, each alias list nine times the one before."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def merges(levels: int = 9) -> str:
    """The same bomb through merge keys: each mapping merges the one before nine times."""
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9}"]
    lines += [f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 9) + "]}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_the_bombs_fit_in_a_kilobyte() -> None:
    assert len(laughs()) < 1100
    assert len(merges()) < 1100


YAML_REFUSED = [
    (laughs(), "line 7, column 5: holds more than 1,000,000 values once its aliases are expanded"),
    (merges(), "line 6, column 14: holds more than 1,000,000 values once its aliases are expanded"),
    ("a: &a [1, *a]\n", "line 1, column 4: holds an alias to itself"),
    ("a: &a {b: {c: *a}}\n", "line 1, column 4: holds an alias to itself"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "line 1, column 103: nested deeper than 100 levels"),
    ("a:\n" + "- " * 5000 + "x\n", "line 2, column 199: nested deeper than 100 levels"),
    ("a:\n" + "".join(f"{' ' * i}b:\n" for i in range(1, 150)) + "  x\n", "line 101, column 101: nested deeper than 100 levels"),
    # deep through aliases: a small file whose anchors nest into one another
    ("a0: &a0 " + "[" * 60 + "]" * 60 + "\na1: &a1 " + "[" * 50 + "*a0" + "]" * 50 + "\n", "line 1, column 58: nested deeper than 100 levels"),
    ("Resources: {}\nResources: {}\n", "line 2, column 1: duplicate key 'Resources' (first at line 1)"),
    ("a:\n  b: 1\n  c: 2\n  b: 3\n", "line 4, column 3: duplicate key 'b' (first at line 2)"),
    ("a: {1: x, 01: y}\n", "line 1, column 11: duplicate key '1' (first at line 1)"),
    ("a: &a {x: 1}\nb: {<<: *a, x: 2, x: 3}\n", "line 2, column 19: duplicate key 'x' (first at line 2)"),
    ("a: .nan\n", "line 1, column 4: .nan is not a finite number (quote it if it is text)"),
    ("a: [1, -.Inf]\n", "line 1, column 8: -.Inf is not a finite number (quote it if it is text)"),
    ("a: 1.0e+999\n", "line 1, column 4: 1.0e+999 is not a finite number (quote it if it is text)"),
    ("a: !!binary aGVsbG8=\n", "line 1, column 4: !!binary is not supported (only strings, numbers, booleans, lists and mappings)"),
    ("a: !!set {x, y}\n", "line 1, column 4: !!set is not supported (only strings, numbers, booleans, lists and mappings)"),
    ("a: !!omap [x: 1]\n", "line 1, column 4: !!omap is not supported (only strings, numbers, booleans, lists and mappings)"),
    ("a: !!pairs [x: 1]\n", "line 1, column 4: !!pairs is not supported (only strings, numbers, booleans, lists and mappings)"),
    ("a: !!timestamp 2010-09-09\n", "line 1, column 4: !!timestamp is not supported (only strings, numbers, booleans, lists and mappings)"),
    ("a: !!python/object/apply:os.system [id]\n", "line 1, column 4: unknown tag !!python/object/apply:os.system"),
    ("a: !<tag:example.com,2024:x> 1\n", "line 1, column 4: unknown tag tag:example.com,2024:x"),
    ("a: b\x07\n", "line 1, column 5: control character #x0007 is not allowed in YAML"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), YAML_REFUSED)
def test_refused_in_templates(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text, cloudformation=True) == f"template.yml: {message}"


@pytest.mark.skipif(yamlfile._FastCloudFormationLoader is None, reason="PyYAML without libyaml")
@pytest.mark.parametrize(("text", "message"), YAML_REFUSED)
def test_libyaml_refuses_what_the_pure_loader_refuses(text: str, message: str) -> None:
    """Templates are read with libyaml first: it must refuse each of these itself, not return its data."""
    assert yamlfile._FastCloudFormationLoader is not None
    with pytest.raises(yaml.YAMLError):
        yamlfile._load_yaml(text, yamlfile._FastCloudFormationLoader, None)


@pytest.mark.parametrize(("text", "message"), YAML_REFUSED)
def test_refused_in_phases_yml(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text, "phases.yml") == f"phases.yml: {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !Foo x\n", "line 1, column 4: unknown tag !Foo (not a CloudFormation short form such as !Ref or !Sub)"),
        ("a: !ToJsonString {b: 1}\n", "line 1, column 4: unknown tag !ToJsonString (CloudFormation has no short form of it: write Fn::ToJsonString)"),
        ("a: !Length [1, 2]\n", "line 1, column 4: unknown tag !Length (CloudFormation has no short form of it: write Fn::Length)"),
        ("a: !ForEach [x]\n", "line 1, column 4: unknown tag !ForEach (CloudFormation has no short form of it: write Fn::ForEach)"),
        ("a: !ref x\n", "line 1, column 4: unknown tag !ref (not a CloudFormation short form such as !Ref or !Sub)"),
    ],
)  # fmt: skip
def test_unknown_tags_in_templates(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text, cloudformation=True) == f"template.yml: {message}"


def test_phases_yml_takes_no_short_forms(tmp_path: Path) -> None:
    assert error_of(tmp_path, "a: !Ref x\n", "phases.yml") == "phases.yml: line 1, column 4: unknown tag !Ref"


# json's own words: Python 3.13 names a trailing comma (and points at it)
TRAILING_COMMA = (
    "line 1, column 8: Illegal trailing comma before end of object"
    if sys.version_info >= (3, 13)
    else "line 1, column 9: Expecting property name enclosed in double quotes"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"Resources": {"T": {"Type": "AWS::SNS::Topic", "Properties": {"N": NaN}}}}', "line 1, column 69: NaN is not valid JSON"),
        ('{\n  "a": 1,\n  "b": {"x": Infinity}\n}', "line 3, column 14: Infinity is not valid JSON"),
        ('{"a": [-Infinity]}', "line 1, column 8: -Infinity is not valid JSON"),
        ('{"a": 1e999}', "line 1, column 7: 1e999 is not a finite number"),
        ('{\n  "a": 1,\n  "b": 2,\n  "a": 3\n}', "line 4, column 3: duplicate key 'a' (first at line 2)"),
        ('{"x": {"a": "{\\"a\\":", "b": 1, "a": 2}}', "line 1, column 32: duplicate key 'a' (first at line 1)"),
        ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "line 1, column 106: nested deeper than 100 levels"),
        ('{"a": ' + "[" * 150 + "]" * 150 + "}", "line 1, column 106: nested deeper than 100 levels"),
        ('{"a": 1,}', TRAILING_COMMA),
    ],
)  # fmt: skip
def test_refused_in_json(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text, "template.json", cloudformation=True) == f"template.json: {message}"


def test_what_json_refuses_is_text_in_strings(tmp_path: Path) -> None:
    path = tmp_path / "template.json"
    path.write_text('{"a": "NaN", "b": "[[[[", "c": 1.5e3, "d": {"a": 1}, "e": ' + "[" * 99 + "]" * 99 + "}")
    data = yamlfile.load(path, "template.json")
    assert (data["a"], data["b"], data["c"], data["d"]) == ("NaN", "[[[[", 1500.0, {"a": 1})


def test_anchors_merges_and_depth_within_bounds(tmp_path: Path) -> None:
    text = (
        "defaults: &defaults {memorySize: 512, timeout: 30, tags: {team: a}}\n"
        "functions:\n"
        "  a: {<<: *defaults, timeout: 60}\n"
        "  b: {<<: [*defaults], handler: b.handler}\n"
        "  c: *defaults\n"
        "deep: " + "[" * 99 + "]" * 99 + "\n"
        "numbers: [1, 1.5, .5, 0x1F, true, ~, '.nan']\n"
    )
    (tmp_path / "serverless.yml").write_text(text)
    data = yamlfile.load(tmp_path / "serverless.yml", "serverless.yml", cloudformation=True)
    defaults = {"memorySize": 512, "timeout": 30, "tags": {"team": "a"}}
    assert data["functions"] == {
        "a": {**defaults, "timeout": 60},
        "b": {**defaults, "handler": "b.handler"},
        "c": defaults,
    }
    assert data["numbers"] == [1, 1.5, 0.5, 31, True, None, ".nan"]


def test_libyaml_refusals_read_like_the_pure_loaders(tmp_path: Path) -> None:
    """libyaml stops at 1,000 levels with its own words; phasedoit's message stays the same either way."""
    text = "a: " + "[" * 1500 + "]" * 1500 + "\n"
    assert error_of(tmp_path, text, cloudformation=True) == (
        "template.yml: line 1, column 103: nested deeper than 100 levels"
    )


def test_keep_text_where_asked(tmp_path: Path) -> None:
    path = tmp_path / "phases.yml"
    path.write_text(
        "tags: {version: 1.10, mode: 0755, team: yes, at: 12:30, quoted: '1.10', none: ~, on: x}\n"
        "other: {version: 1.10, mode: 0755, team: yes}\n"
        "1.10: key\n"
        "list: [0755, [yes]]\n"
    )
    data = yamlfile.load(path, "phases.yml", text_at=lambda at: at[:1] in (("tags",), ("list",)))
    assert data == {
        "tags": {
            "version": "1.10",
            "mode": "0755",
            "team": "yes",
            "at": "12:30",
            "quoted": "1.10",
            "none": None,
            "on": "x",
        },
        "other": {"version": 1.1, "mode": 493, "team": True},  # YAML 1.1, as read anywhere else
        "1.10": "key",
        "list": ["0755", ["yes"]],
    }


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.symlink_to("/dev/zero"), "template.yml: is not a regular file (a character device)"),
        (os.mkfifo, "template.yml: is not a regular file (a named pipe)"),
        (lambda p: p.mkdir(), "template.yml: is not a regular file (a folder)"),
        (
            lambda p: p.symlink_to(p.parent / "gone.yml"),
            "template.yml: cannot read: No such file or directory",
        ),
        (lambda p: p.symlink_to(p), "template.yml: cannot read: Too many levels of symbolic links"),
        (
            lambda p: p.write_bytes(b"#" * (yamlfile.MAX_BYTES + 1)),
            "template.yml: is larger than 4 MB, the most phasedoit reads",
        ),
    ],
)
def test_files_that_are_not_text(tmp_path: Path, make: Any, message: str) -> None:
    make(tmp_path / "template.yml")
    with pytest.raises(PhasedoitError) as e:
        yamlfile.load(tmp_path / "template.yml", "template.yml")
    assert str(e.value) == message


def test_the_largest_file_read(tmp_path: Path) -> None:
    path = tmp_path / "template.yml"
    path.write_bytes(b"a: 1\n" + b"#" * (yamlfile.MAX_BYTES - 5))
    assert yamlfile.load(path, "template.yml", cloudformation=True) == {"a": 1}
