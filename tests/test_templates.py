from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from phasedoit import yamlfile
from phasedoit.errors import PhasedoitError
from phasedoit.templates import Dependencies, find_dependencies, load_template

VALUES = {"Stage": "dev", "AWS::Region": "eu-west-1", "AWS::AccountId": "000000000000"}
SHOWN = "services/x/template.yml"


def _importing(expression: Any, **parameters: Any) -> dict[str, Any]:
    return {
        "Parameters": parameters,
        "Resources": {
            "Q": {"Type": "AWS::SQS::Queue", "Properties": {"Name": {"Fn::ImportValue": expression}}}
        },
    }


def _exporting(name: Any, **parameters: Any) -> dict[str, Any]:
    return {
        "Parameters": parameters,
        "Resources": {"T": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"TopicArn": {"Value": {"Ref": "T"}, "Export": {"Name": name}}},
    }


@pytest.mark.parametrize(
    ("expression", "parameters", "expected"),
    [
        ("dev-Literal", {}, "dev-Literal"),
        ({"Fn::Sub": "${Stage}-TopicArn"}, {}, "dev-TopicArn"),
        ({"Fn::Sub": "${AWS::Region}-${AWS::AccountId}-X"}, {}, "eu-west-1-000000000000-X"),
        ({"Fn::Sub": ["${Env}-X", {"Env": "qa"}]}, {}, "qa-X"),
        ({"Fn::Sub": ["${Env}-X", {"Env": {"Ref": "Stage"}}]}, {}, "dev-X"),
        ({"Fn::Sub": ["${Env}-${Stage}", {"Env": {"Fn::Sub": "${AWS::Region}"}}]}, {}, "eu-west-1-dev"),
        ({"Fn::Sub": "${!Literal}-${Stage}"}, {}, "${Literal}-dev"),
        ({"Fn::Join": ["-", [{"Ref": "Stage"}, "Topic", "Arn"]]}, {}, "dev-Topic-Arn"),
        ({"Fn::Join": ["", ["a", {"Fn::Sub": "${Stage}"}]]}, {}, "adev"),
        ({"Ref": "Name"}, {"Name": {"Type": "String", "Default": "from-default"}}, "from-default"),
        ({"Fn::Sub": "${Prefix}-X"}, {"Prefix": {"Type": "String", "Default": "p"}}, "p-X"),
        # a value given for the stage beats the Default
        ({"Ref": "Stage"}, {"Stage": {"Type": "String", "Default": "other"}}, "dev"),
    ],
)
def test_import_forms(expression: Any, parameters: dict[str, Any], expected: str) -> None:
    assert find_dependencies(_importing(expression, **parameters), VALUES, SHOWN) == Dependencies(
        imports=frozenset([expected])
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dev-Literal", "dev-Literal"),
        ({"Fn::Sub": "${Stage}-TopicArn"}, "dev-TopicArn"),
        ({"Fn::Sub": "${AWS::StackName}-TopicArn"}, "x-dev-TopicArn"),
        ({"Fn::Join": [":", [{"Ref": "AWS::Region"}, "X"]]}, "eu-west-1:X"),
    ],
)
def test_export_forms(name: Any, expected: str) -> None:
    values = {**VALUES, "AWS::StackName": "x-dev"}
    assert find_dependencies(_exporting(name), values, SHOWN) == Dependencies(exports=frozenset([expected]))


def test_imports_anywhere_and_short_forms(tmp_path: Path) -> None:
    (tmp_path / "template.yml").write_text(
        "Parameters:\n  Stage: {Type: String}\n"
        "Conditions:\n  C: !Equals [!ImportValue cond-import, x]\n"
        "Resources:\n"
        "  F:\n    Type: AWS::Lambda::Function\n    Properties:\n"
        "      Environment:\n        Variables:\n"
        "          A: !ImportValue\n            Fn::Sub: ${Stage}-A\n"
        "          B: !Sub\n            - ${X}/b\n            - X: !ImportValue b-import\n"
        "      Layers:\n        - !ImportValue {'Fn::Join': ['-', [!Ref Stage, layer]]}\n"
        "Outputs:\n  O:\n    Value: !Ref F\n    Export: {Name: !Sub '${Stage}-F'}\n"
    )
    template = load_template(tmp_path / "template.yml", SHOWN)
    assert find_dependencies(template, {"Stage": "prod"}, SHOWN) == Dependencies(
        exports=frozenset(["prod-F"]),
        imports=frozenset(["cond-import", "prod-A", "b-import", "prod-layer"]),
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            {"Fn::GetAtt": ["A", "B"]},
            "services/x/template.yml: Resources.Q.Properties.Name: cannot resolve Fn::ImportValue"
            ' {"Fn::GetAtt": ["A", "B"]} statically (Fn::GetAtt is known only after deploy);'
            " phasedoit cannot order it",
        ),
        (
            {"Ref": "Q"},
            "services/x/template.yml: Resources.Q.Properties.Name: cannot resolve Fn::ImportValue"
            ' {"Ref": "Q"} statically (no known value for Q); phasedoit cannot order it',
        ),
        (
            {"Fn::Sub": "${Unknown}-X"},
            "services/x/template.yml: Resources.Q.Properties.Name: cannot resolve Fn::ImportValue"
            ' {"Fn::Sub": "${Unknown}-X"} statically (no known value for Unknown); phasedoit cannot order it',
        ),
        (
            {"Fn::Sub": "${Q.Arn}"},
            "services/x/template.yml: Resources.Q.Properties.Name: cannot resolve Fn::ImportValue"
            ' {"Fn::Sub": "${Q.Arn}"} statically (${Q.Arn} is an attribute, known only after deploy);'
            " phasedoit cannot order it",
        ),
        (
            {"Fn::Select": [0, ["a"]]},
            "services/x/template.yml: Resources.Q.Properties.Name: cannot resolve Fn::ImportValue"
            ' {"Fn::Select": [0, ["a"]]} statically (Fn::Select is not supported); phasedoit cannot order it',
        ),
        (
            {"Fn::Join": ["-", {"Ref": "List"}]},
            "services/x/template.yml: Resources.Q.Properties.Name: cannot resolve Fn::ImportValue"
            ' {"Fn::Join": ["-", {"Ref": "List"}]} statically'
            " (Fn::Join of a list parameter is not supported); phasedoit cannot order it",
        ),
        (
            {"Fn::Sub": "${AWS::AccountId}-X"},
            "services/x/template.yml: Resources.Q.Properties.Name: cannot resolve Fn::ImportValue"
            ' {"Fn::Sub": "${AWS::AccountId}-X"} statically (no known value for AWS::AccountId);'
            " phasedoit cannot order it",
        ),
    ],
)
def test_unresolvable_import_is_a_warning(expression: Any, message: str) -> None:
    deps = find_dependencies(_importing(expression), {"Stage": "dev"}, SHOWN)
    assert deps == Dependencies(warnings=(message,))


def test_unresolvable_export_is_a_warning() -> None:
    deps = find_dependencies(_exporting({"Fn::GetAtt": ["T", "TopicName"]}), VALUES, SHOWN)
    assert deps.warnings == (
        "services/x/template.yml: Outputs.TopicArn.Export.Name: cannot resolve Export.Name"
        ' {"Fn::GetAtt": ["T", "TopicName"]} statically (Fn::GetAtt is known only after deploy);'
        " phasedoit cannot order it",
    )


def test_no_outputs_no_imports() -> None:
    assert find_dependencies({"Resources": {}}, VALUES, SHOWN) == Dependencies()


SHORT_FORMS = """\
Resources:
  A:
    Type: T
    Properties:
      Ref: !Ref X
      Sub: !Sub "${Stage}-x"
      SubList: !Sub ["${A}", {A: !Ref B}]
      GetAtt: !GetAtt R.Arn
      Import: !ImportValue {"Fn::Sub": "${Stage}-y"}
      Date: 2010-09-09
      Condition: !Condition C
"""


def test_libyaml_loader_reads_what_the_pure_loader_reads(tmp_path: Path) -> None:
    (tmp_path / "template.yml").write_text(SHORT_FORMS)
    pure = yaml.load(SHORT_FORMS, Loader=yamlfile.CloudFormationLoader)  # noqa: S506 - a SafeLoader
    assert load_template(tmp_path / "template.yml", SHOWN) == pure
    assert pure["Resources"]["A"]["Properties"] == {
        "Ref": {"Ref": "X"},
        "Sub": {"Fn::Sub": "${Stage}-x"},
        "SubList": {"Fn::Sub": ["${A}", {"A": {"Ref": "B"}}]},
        "GetAtt": {"Fn::GetAtt": ["R", "Arn"]},
        "Import": {"Fn::ImportValue": {"Fn::Sub": "${Stage}-y"}},
        "Date": "2010-09-09",
        "Condition": {"Condition": "C"},
    }


def test_yaml_error_keeps_the_pure_loader_message(tmp_path: Path) -> None:
    (tmp_path / "template.yml").write_text("Resources:\n  A: [1\n")
    with pytest.raises(PhasedoitError) as excinfo:
        load_template(tmp_path / "template.yml", SHOWN)
    assert (
        str(excinfo.value)
        == "services/x/template.yml: line 3, column 1: expected ',' or ']', but got '<stream end>'"
    )
