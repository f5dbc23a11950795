"""Time dependency inference on a generated app of 300 services.

Run from the repository root: `python -m bench.infer [services]`. Prints a Markdown table of medians.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from phasedoit import graph, yamlfile
from phasedoit.templates import Dependencies, find_dependencies, load_template

RUNS = 5
PHASE_SIZE = 30  # services per generated phase; imports only reach earlier phases


def _function(name: str, environment: dict[str, Any]) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "FunctionName": {"Fn::Sub": f"${{Stage}}-{name}"},
            "Runtime": "python3.12",
            "Handler": "app.handler",
            "MemorySize": 256,
            "Timeout": 30,
            "Role": {"Fn::GetAtt": ["Role", "Arn"]},
            "Code": {"ZipFile": "def handler(event, context):\n    return {'ok': True}\n"},
            "Environment": {"Variables": environment},
            "Tags": [{"Key": "service", "Value": name}, {"Key": "stage", "Value": {"Ref": "Stage"}}],
        },
    }


def _role() -> dict[str, Any]:
    statement = {
        "Effect": "Allow",
        "Action": ["sns:Publish", "sqs:SendMessage", "sqs:ReceiveMessage", "logs:PutLogEvents"],
        "Resource": "*",
    }
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "Policies": [{"PolicyName": "main", "PolicyDocument": {"Statement": [statement]}}],
        },
    }


def _import(export: str, form: int) -> dict[str, Any]:
    suffix = export.removeprefix("${Stage}-")
    forms: list[dict[str, Any]] = [
        {"Fn::ImportValue": {"Fn::Sub": export}},
        {"Fn::ImportValue": {"Fn::Join": ["-", [{"Ref": "Stage"}, suffix]]}},
        {"Fn::ImportValue": {"Fn::Sub": ["${S}-" + suffix, {"S": {"Ref": "Stage"}}]}},
    ]
    return forms[form % len(forms)]


def _template(i: int, rng: random.Random, exports: list[list[str]]) -> dict[str, Any]:
    name = f"svc-{i:03d}"
    earlier = [e for phase in exports[: i // PHASE_SIZE] for e in phase]
    imported = rng.sample(earlier, min(len(earlier), rng.randint(0, 4)))
    environment = {f"IMPORT_{k}": _import(e, k + i) for k, e in enumerate(imported)}
    mine = [f"${{Stage}}-{name}-Out{k}" for k in range(rng.randint(1, 3))]
    exports.append(mine)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{name}: generated for the inference benchmark",
        "Parameters": {"Stage": {"Type": "String", "Default": "dev"}},
        "Resources": {
            "Topic": {
                "Type": "AWS::SNS::Topic",
                "Properties": {"TopicName": {"Fn::Sub": f"${{Stage}}-{name}"}},
            },
            "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"VisibilityTimeout": 60}},
            "Role": _role(),
            "Handler": _function(name, environment),
        },
        "Outputs": {
            f"Out{k}": {"Value": {"Ref": "Topic"}, "Export": {"Name": {"Fn::Sub": export}}}
            for k, export in enumerate(mine)
        },
    }


@dataclass(frozen=True)
class _Tagged:
    tag: str
    value: Any


class _ShortFormDumper(yaml.SafeDumper):
    pass


def _represent_tagged(dumper: yaml.SafeDumper, data: _Tagged) -> yaml.Node:
    if isinstance(data.value, str):
        return dumper.represent_scalar(data.tag, data.value)
    if isinstance(data.value, list):
        return dumper.represent_sequence(data.tag, data.value)
    return dumper.represent_mapping(data.tag, data.value)


_ShortFormDumper.add_representer(_Tagged, _represent_tagged)


def _short_forms(node: Any) -> Any:
    """Long forms as the short forms CloudFormation authors write (`!Sub`, `!Ref`, `!GetAtt a.b`)."""
    if isinstance(node, list):
        return [_short_forms(value) for value in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1 and next(iter(node)) in ("Ref", "Fn::Sub", "Fn::Join", "Fn::ImportValue", "Fn::GetAtt"):
        [(function, value)] = node.items()
        if function == "Fn::GetAtt":
            value = ".".join(value)
        value = _short_forms(value)
        # A YAML node has one tag: `Fn::ImportValue: !Sub ...`, as authors write it.
        return (
            {function: value}
            if isinstance(value, _Tagged)
            else _Tagged("!" + function.removeprefix("Fn::"), value)
        )
    return {key: _short_forms(value) for key, value in node.items()}


def _yaml(template: dict[str, Any]) -> str:
    return yaml.dump(_short_forms(template), Dumper=_ShortFormDumper, sort_keys=False, width=200)


def generate(root: Path, count: int) -> list[Path]:
    rng = random.Random(42)  # noqa: S311 - reproducible test data, not security
    exports: list[list[str]] = []
    paths = []
    for i in range(count):
        folder = root / "services" / f"svc-{i:03d}"
        folder.mkdir(parents=True)
        template = _template(i, rng, exports)
        if i % 3 == 2:
            path = folder / "template.json"
            path.write_text(json.dumps(template, indent=2))
        else:
            path = folder / "template.yml"
            path.write_text(_yaml(template))
        paths.append(path)
    return paths


def _median(step: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _load_all(paths: list[Path]) -> list[dict[str, Any]]:
    return [load_template(path, path.parent.name) for path in paths]


def _load_all_pure_python(paths: list[Path]) -> list[Any]:
    return [
        yaml.load(p.read_text(), Loader=yamlfile.CloudFormationLoader)  # noqa: S506 - a SafeLoader
        if p.suffix != ".json"
        else json.loads(p.read_text())
        for p in paths
    ]


def _infer(templates: list[dict[str, Any]], names: list[str]) -> dict[str, Dependencies]:
    return {
        name: find_dependencies(t, {"Stage": "dev"}, name) for name, t in zip(names, templates, strict=True)
    }


def _plan(dependencies: dict[str, Dependencies]) -> tuple[list[str], str, str]:
    app = graph.build_graph(dependencies)
    phases = graph.as_phases(graph.computed_phases(app))
    return graph.validate(app, phases), graph.to_dot(app, phases), graph.to_mermaid(app, phases)


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = generate(Path(tmp), count)
        names = [p.parent.name for p in paths]
        templates = _load_all(paths)
        dependencies = _infer(templates, names)
        edges = len(graph.build_graph(dependencies).edges)
        rows = [
            (
                f"load + parse {count} templates (libyaml: {yaml.__with_libyaml__})",
                _median(lambda: _load_all(paths)),
            ),
            (
                "load + parse, pure-Python PyYAML (for comparison)",
                _median(lambda: _load_all_pure_python(paths)),
            ),
            ("find_dependencies, all templates", _median(lambda: _infer(templates, names))),
            (
                f"graph ({edges} edges) + validate + computed phases + DOT + Mermaid",
                _median(lambda: _plan(dependencies)),
            ),
        ]
    print(f"Median of {RUNS} runs, Python {sys.version.split()[0]}, PyYAML {yaml.__version__}\n")
    print("| step | median |\n|---|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds * 1000:.1f} ms |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
