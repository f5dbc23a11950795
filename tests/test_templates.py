from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from phasedoit import yamlfile
from phasedoit.deployers.cloudformation import export_definitions
from phasedoit.errors import PhasedoitError
from phasedoit.intrinsics import Scope, Truth, Unknown
from phasedoit.serverless import read_serverless
from phasedoit.stack import digest
from phasedoit.templates import (
    Conditional,
    Dependencies,
    find_dependencies,
    load_template,
    missing_parameters,
    parameter_defaults,
)

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


# Conditions: an import or export under a false condition does not exist; under one that cannot be known
# before deploy it is conditional.


def _deps(exports: str = "", imports: str = "") -> Dependencies:
    return Dependencies(frozenset(exports.split()), frozenset(imports.split()))


HAS_DB = {"HasDb": {"Fn::Not": [{"Fn::Equals": [{"Ref": "DbStack"}, ""]}]}}
DB_URL = {"Fn::ImportValue": {"Fn::Sub": "${DbStack}-Url"}}


def _template(properties: Any, conditions: Any = HAS_DB, **entry: Any) -> dict[str, Any]:
    return {
        "Parameters": {"DbStack": {"Type": "String", "Default": ""}},
        "Conditions": conditions,
        "Resources": {"F": {"Type": "AWS::Lambda::Function", **entry, "Properties": properties}},
    }


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        # the issue's case: the default leaves the condition false, and the import with it
        (_template({"Url": {"Fn::If": ["HasDb", DB_URL, ""]}}), {}, Dependencies()),
        (_template({"Url": {"Fn::If": ["HasDb", DB_URL, ""]}}), {"DbStack": "db"}, _deps(imports="db-Url")),
        (_template({"Url": {"Fn::If": ["HasDb", "", DB_URL]}}), {}, _deps(imports="-Url")),
        (_template({"Url": {"Fn::If": ["HasDb", "", DB_URL]}}), {"DbStack": "db"}, Dependencies()),
        # a resource's own Condition
        (_template({"Url": DB_URL}, Condition="HasDb"), {}, Dependencies()),
        (_template({"Url": DB_URL}, Condition="HasDb"), {"DbStack": "db"}, _deps(imports="db-Url")),
        # nested: the resource's condition and both Fn::If
        (
            _template(
                {"Url": {"Fn::If": ["IsProd", {"Fn::If": ["HasDb", DB_URL, "x"]}, "y"]}},
                {**HAS_DB, "IsProd": {"Fn::Equals": [{"Ref": "AWS::Region"}, "eu-west-1"]}},
                Condition="HasDb",
            ),
            {"DbStack": "db", "AWS::Region": "eu-west-1"},
            _deps(imports="db-Url"),
        ),
        # `Condition` in a policy document and a `Conditions` property are not template conditions
        (
            _template(
                {
                    "Conditions": [{"Field": "path-pattern", "Values": ["/*"]}],
                    "Policy": {"Statement": [{"Condition": {"Bool": {"aws:SecureTransport": "false"}}}]},
                    "Url": DB_URL,
                }
            ),
            {"DbStack": "db"},
            _deps(imports="db-Url"),
        ),
    ],
)
def test_imports_under_conditions(template: Any, values: dict[str, str], expected: Dependencies) -> None:
    assert find_dependencies(template, values, SHOWN) == expected


@pytest.mark.parametrize(
    ("expression", "values", "expected"),
    [
        ({"Fn::Equals": ["a", "a"]}, {}, True),
        ({"Fn::Equals": [{"Ref": "P"}, "x"]}, {"P": "x"}, True),
        ({"Fn::Equals": [{"Fn::Sub": "${P}-${AWS::Region}"}, "x-eu-west-1"]}, {"P": "x"}, True),
        # YAML's true and 80 are CloudFormation's "true" and "80"
        ({"Fn::Equals": [{"Ref": "Flag"}, True]}, {"Flag": "true"}, True),
        ({"Fn::Equals": [80, {"Ref": "Port"}]}, {"Port": "80"}, True),
        ({"Fn::Not": [{"Fn::Equals": ["a", "b"]}]}, {}, True),
        ({"Fn::And": [{"Condition": "Yes"}, {"Condition": "No"}]}, {}, False),
        ({"Fn::Or": [{"Condition": "No"}, {"Condition": "Yes"}]}, {}, True),
        # an operand that decides makes the unknown ones irrelevant…
        ({"Fn::And": [{"Condition": "Unknowable"}, {"Condition": "No"}]}, {}, False),
        ({"Fn::Or": [{"Condition": "Unknowable"}, {"Condition": "Yes"}]}, {}, True),
        # …otherwise the first unknown one decides, with its reason
        (
            {"Fn::And": [{"Condition": "Yes"}, {"Condition": "Unknowable"}]},
            {},
            Unknown("no known value for AWS::AccountId"),
        ),
        ({"Fn::Not": [{"Condition": "Unknowable"}]}, {}, Unknown("no known value for AWS::AccountId")),
        ({"Condition": "Nope"}, {}, Unknown("no condition Nope in Conditions")),
        ({"Condition": "Loop"}, {}, Unknown("condition Loop refers to itself")),
        (
            {"Fn::Equals": [{"Fn::GetAtt": ["R", "Arn"]}, "x"]},
            {},
            Unknown("Fn::GetAtt is known only after deploy"),
        ),
        (
            {"Fn::Equals": [{"Fn::FindInMap": ["M", "a", "b"]}, "x"]},
            {},
            Unknown("Fn::FindInMap is not supported"),
        ),
        (
            {"Fn::Equals": [{"Ref": "Ssm"}, "x"]},
            {"Ssm": "/name"},
            Unknown("parameter Ssm is read from SSM when the stack deploys"),
        ),
        (
            {"Fn::Contains": [["a"], "a"]},
            {},
            Unknown('{"Fn::Contains": [["a"], "a"]} is not a condition phasedoit evaluates'),
        ),
    ],
)
def test_condition_values(expression: Any, values: dict[str, str], expected: Truth) -> None:
    definitions = {
        "Tested": expression,
        "Yes": {"Fn::Equals": ["a", "a"]},
        "No": {"Fn::Equals": ["a", "b"]},
        "Unknowable": {"Fn::Equals": [{"Ref": "AWS::AccountId"}, "000000000000"]},
        "Loop": {"Fn::Not": [{"Condition": "Loop"}]},
    }
    scope = Scope({**values, "AWS::Region": "eu-west-1"}, definitions, deferred={"Ssm"})
    assert scope.condition("Tested") == expected


ALERTS = """\
Parameters:
  AlertStack: {Type: String, Default: ''}
  Port: {Type: Number, Default: 80}
Conditions:
  HasAlerts: !Not [!Equals [!Ref AlertStack, '']]
  InUsEast1: !Equals [!Ref 'AWS::Region', us-east-1]
  AlertsHere: !And [!Condition HasAlerts, !Condition InUsEast1]
  DefaultPort: !Equals [!Ref Port, 80]
Resources:
  Alarm:
    Type: AWS::CloudWatch::Alarm
    Condition: AlertsHere
    Properties:
      AlarmActions: [{'Fn::ImportValue': !Sub '${AlertStack}-TopicARN'}]
      OKActions: [!If [DefaultPort, !If [InUsEast1, '', !ImportValue ops-Fallback], '']]
  Topic:
    Type: AWS::SNS::Topic
Outputs:
  TopicArn:
    Condition: InUsEast1
    Value: !Ref Topic
    Export: {Name: !Sub '${AWS::StackName}-TopicArn'}
  Always:
    Value: !Ref Topic
    Export: {Name: !If [InUsEast1, !Sub '${AWS::StackName}-East', !Sub '${AWS::StackName}-Elsewhere']}
"""


def test_conditions_unknown_before_deploy(tmp_path: Path) -> None:
    (tmp_path / "template.yml").write_text(ALERTS)
    template = load_template(tmp_path / "template.yml", SHOWN)
    # no region known: what depends on it is conditional, and says why
    deps = find_dependencies(template, {"AlertStack": "ops", "AWS::StackName": "web-dev"}, SHOWN)
    assert deps == Dependencies(
        warnings=(
            "services/x/template.yml: Outputs.Always.Export.Name: cannot resolve Export.Name"
            ' {"Fn::If": ["InUsEast1", {"Fn::Sub": "${AWS::StackName}-East"},'
            ' {"Fn::Sub": "${AWS::StackName}-Elsewhere"}]} statically (condition InUsEast1 cannot be known'
            " before deploy: no known value for AWS::Region); phasedoit cannot order it",
        ),
        conditional_exports=(
            Conditional(
                "web-dev-TopicArn",
                "services/x/template.yml: Outputs.TopicArn.Export.Name",
                '{"Fn::Sub": "${AWS::StackName}-TopicArn"}',
                "condition InUsEast1 is true",
                "no known value for AWS::Region",
            ),
        ),
        conditional_imports=(
            Conditional(
                "ops-Fallback",
                "services/x/template.yml: Resources.Alarm.Properties.OKActions[0].Fn::If[1].Fn::If[2]",
                '"ops-Fallback"',
                "condition AlertsHere is true and condition InUsEast1 is false",
                "no known value for AWS::Region",
            ),
            Conditional(
                "ops-TopicARN",
                "services/x/template.yml: Resources.Alarm.Properties.AlarmActions[0]",
                '{"Fn::Sub": "${AlertStack}-TopicARN"}',
                "condition AlertsHere is true",
                "no known value for AWS::Region",
            ),
        ),
    )
    # with the region known, every condition is
    east = {"AlertStack": "ops", "AWS::StackName": "web-dev", "AWS::Region": "us-east-1"}
    assert find_dependencies(template, east, SHOWN) == _deps("web-dev-TopicArn web-dev-East", "ops-TopicARN")
    west = {**east, "AWS::Region": "eu-west-1"}
    assert find_dependencies(template, west, SHOWN) == _deps("web-dev-Elsewhere")


def test_an_import_anywhere_unconditional_is_unconditional() -> None:
    template = _template(
        {"A": {"Fn::If": ["Unknowable", {"Fn::ImportValue": "x"}, ""]}, "B": {"Fn::ImportValue": "x"}},
        {"Unknowable": {"Fn::Equals": [{"Ref": "AWS::AccountId"}, "0"]}},
    )
    assert find_dependencies(template, {}, SHOWN) == _deps(imports="x")


def test_a_missing_parameter_is_no_warning() -> None:
    template = {
        "Parameters": {"Network": {"Type": "String"}, "Stage": {"Type": "String"}},
        "Resources": {
            "Q": {"Type": "T", "Properties": {"Vpc": {"Fn::ImportValue": {"Fn::Sub": "${Network}-Vpc"}}}}
        },
    }
    assert missing_parameters(template, {"Stage": "dev"}) == ["Network"]
    # CloudFormation refuses the stack for want of Network: a warning that its import is unresolved adds nothing
    assert find_dependencies(template, {"Stage": "dev"}, SHOWN) == Dependencies()
    assert find_dependencies(template, {"Stage": "dev", "Network": "net"}, SHOWN) == _deps(imports="net-Vpc")


@pytest.mark.parametrize(
    ("parameters", "values", "expected"),
    [
        ({}, {}, []),
        (
            {
                "B": {"Type": "String"},
                "A": {"Type": "Number", "Default": 1},
                "Empty": {"Type": "String", "Default": ""},
                "Stage": {"Type": "String"},
                "Ssm": {"Type": "AWS::SSM::Parameter::Value<String>"},
            },
            {"Stage": "dev"},
            ["B", "Ssm"],
        ),
    ],
)
def test_missing_parameters(parameters: dict[str, Any], values: dict[str, str], expected: list[str]) -> None:
    assert missing_parameters({"Parameters": parameters, "Resources": {}}, values) == expected


def test_defaults_as_cloudformation_reads_them() -> None:
    params = {
        "On": {"Default": True},
        "Port": {"Default": 80},
        "Ratio": {"Default": 0.5},
        "S": {"Default": "x"},
    }
    assert parameter_defaults({"Parameters": params}) == {
        "On": "true",
        "Port": "80",
        "Ratio": "0.5",
        "S": "x",
    }


def test_serverless_resources_under_conditions(tmp_path: Path) -> None:
    """A Serverless config's `resources` fragments hold its Conditions; its conditional imports are kept."""
    (tmp_path / "serverless.yml").write_text(
        "service: jobs\n"
        "provider: {name: aws}\n"
        "functions:\n"
        "  run:\n"
        "    handler: h.run\n"
        "    environment:\n"
        "      TOPIC: !If [Here, !ImportValue '${sls:stage}-Topic', '']\n"
        "      BUS: !If [Elsewhere, !ImportValue '${sls:stage}-Bus', '']\n"
        "      SOON: !If [Unknowable, !ImportValue '${sls:stage}-Later', '']\n"
        "resources:\n"
        "  - Conditions: {Here: !Equals ['${sls:stage}', dev]}\n"
        "  - Conditions:\n"
        "      Elsewhere: !Not [!Condition Here]\n"
        "      Unknowable: !Equals [!Ref 'AWS::AccountId', '000000000000']\n"
    )
    found = read_serverless(
        tmp_path / "serverless.yml", "jobs/serverless.yml", stage="dev", values={}, env={}
    )
    assert found.dependencies == Dependencies(
        # the framework's own outputs, exported
        exports=frozenset(
            ["sls-jobs-dev-ServerlessDeploymentBucketName", "sls-jobs-dev-RunLambdaFunctionQualifiedArn"]
        ),
        imports=frozenset(["dev-Topic"]),
        conditional_imports=(
            Conditional(
                "dev-Later",
                "jobs/serverless.yml: functions.run.environment.SOON.Fn::If[1]",
                '"dev-Later"',
                "condition Unknowable is true",
                "no known value for AWS::AccountId",
            ),
        ),
    )


def test_export_definitions_are_the_exports_the_graph_sees() -> None:
    """What the in-use check compares with the deployed stack: an export named with a parameter's default
    is defined, one under a false condition is not (deploying the template removes it).
    """
    template = {
        "Parameters": {
            "Prefix": {"Type": "String", "Default": "shop"},
            "Audit": {"Type": "String", "Default": "no"},
        },
        "Conditions": {"HasAudit": {"Fn::Equals": [{"Ref": "Audit"}, "yes"]}},
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            "TopicArn": {"Value": {"Ref": "Topic"}, "Export": {"Name": {"Fn::Sub": "${Prefix}-TopicArn"}}},
            "AuditTopicArn": {
                "Condition": "HasAudit",
                "Value": {"Ref": "AuditTopic"},
                "Export": {"Name": {"Fn::Sub": "${Prefix}-AuditTopicArn"}},
            },
        },
    }
    assert export_definitions(template, {}) == {"shop-TopicArn": digest({"Ref": "Topic"})}
    assert export_definitions(template, {"Prefix": "cart", "Audit": "yes"}) == {
        "cart-TopicArn": digest({"Ref": "Topic"}),
        "cart-AuditTopicArn": digest({"Ref": "AuditTopic"}),
    }
