from __future__ import annotations

from pathlib import Path

import pytest

from phasedoit import graph
from phasedoit.errors import PhasedoitError
from phasedoit.serverless import ServerlessService, read_serverless
from phasedoit.templates import Dependencies

MONOREPO = Path(__file__).parent / "fixtures" / "serverless-monorepo"
SERVICES = ("users-api", "orders-api", "notify-job")
PSEUDO = {"AWS::Region": "eu-west-1", "AWS::AccountId": "000000000000"}


def _read_monorepo(stage: str) -> dict[str, ServerlessService]:
    return {
        name: read_serverless(
            MONOREPO / name / "serverless.yml", f"{name}/serverless.yml", stage=stage, values=PSEUDO, env={}
        )
        for name in SERVICES
    }


def test_monorepo_dev() -> None:
    read = _read_monorepo("dev")
    assert read == {
        "users-api": ServerlessService(
            "users-api-dev", Dependencies(frozenset(["dev-UsersTableName", "users-api-dev-UsersTableArn"]))
        ),
        "orders-api": ServerlessService("orders-api-dev", Dependencies(frozenset(["dev-OrdersTopicArn"]))),
        "notify-job": ServerlessService(
            "notify-job-dev", Dependencies(imports=frozenset(["dev-OrdersTopicArn"]))
        ),
    }
    app = graph.build_graph({name: service.dependencies for name, service in read.items()})
    assert graph.computed_phases(app) == [["users-api", "orders-api"], ["notify-job"]]


def test_monorepo_prod() -> None:
    read = _read_monorepo("prod")
    assert read["orders-api"].dependencies.imports == {"users-api-prod-UsersTableArn"}
    assert read["notify-job"].dependencies.imports == {"prod-OrdersTopicArn", "prod-UsersTableName"}
    app = graph.build_graph({name: service.dependencies for name, service in read.items()})
    assert graph.computed_phases(app) == [["users-api"], ["orders-api"], ["notify-job"]]
    assert app.external == ()


def test_monorepo_unknown_account_is_a_warning() -> None:
    service = read_serverless(
        MONOREPO / "notify-job" / "serverless.yml",
        "notify-job/serverless.yml",
        stage="prod",
        values={},
        env={},
    )
    assert service.dependencies.warnings == (
        "notify-job/resources-prod.yml: Resources.UsersReadPolicy.Properties.PolicyDocument.Statement[0]"
        ".Resource.Fn::Join[1][0]: cannot resolve ${aws:region} (AWS::Region is not known before deploy)",
    )


def _read(
    tmp_path: Path, text: str, *, stage: str = "dev", env: dict[str, str] | None = None
) -> ServerlessService:
    folder = tmp_path / "services" / "x"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "serverless.yml").write_text(text)
    return read_serverless(
        folder / "serverless.yml", "services/x/serverless.yml", stage=stage, values=PSEUDO, env=env or {}
    )


def _import_of(
    tmp_path: Path, value: str, custom: str = "{}", *, stage: str = "dev", env: dict[str, str] | None = None
) -> frozenset[str]:
    text = (
        f"service: x\nprovider:\n  stage: dev\ncustom: {custom}\n"
        f"functions:\n  f:\n    environment:\n      A: {value}\n"
    )
    service = _read(tmp_path, text, stage=stage, env=env)
    assert service.dependencies.warnings == ()
    return service.dependencies.imports


@pytest.mark.parametrize(
    ("value", "custom", "expected"),
    [
        ("!ImportValue ${opt:stage}-X", "{}", "qa-X"),
        ("!ImportValue ${sls:stage}-X", "{}", "qa-X"),
        ("!ImportValue ${self:provider.stage}-X", "{}", "dev-X"),
        ("!ImportValue ${opt:stage, 'dev'}-X", "{}", "qa-X"),
        ("!ImportValue ${opt:region, 'eu'}-X", "{}", "eu-X"),
        ('!ImportValue ${opt:region, "eu,1"}-X', "{}", "eu,1-X"),
        ("!ImportValue ${opt:region, self:provider.stage}-X", "{}", "dev-X"),
        ("!ImportValue ${opt:region, ${self:provider.stage}}-X", "{}", "dev-X"),
        ("!ImportValue ${self:custom.${opt:stage}.name}", "{qa: {name: nested}}", "nested"),
        ("!ImportValue ${self:custom.name}", "{name: '${self:custom.base}-N', base: b}", "b-N"),
        ("!ImportValue ${env:PREFIX, 'p'}-X", "{}", "p-X"),
        ("!ImportValue ${self:service}-${opt:stage}-X", "{}", "x-qa-X"),
        ("!ImportValue {'Fn::Sub': '${AWS::Region}-${opt:stage}'}", "{}", "eu-west-1-qa"),
        ("{'Fn::ImportValue': {'Fn::Join': ['-', ['${opt:stage}', 'Y']]}}", "{}", "qa-Y"),
        ("${self:custom.imported}", "{imported: !ImportValue '${opt:stage}-C'}", "qa-C"),
    ],
)
def test_variables(tmp_path: Path, value: str, custom: str, expected: str) -> None:
    assert _import_of(tmp_path, value, custom, stage="qa") == {expected}


def test_env_variable(tmp_path: Path) -> None:
    assert _import_of(tmp_path, "!ImportValue ${env:PREFIX, 'p'}-X", env={"PREFIX": "e"}) == {"e-X"}


def test_file_includes(tmp_path: Path) -> None:
    (tmp_path / "services" / "common.yml").parent.mkdir(parents=True)
    (tmp_path / "services" / "common.yml").write_text("prefix: shop\nstages:\n  dev: {suffix: D}\n")
    (tmp_path / "services" / "outputs.json").write_text(
        '{"Outputs": {"O": {"Value": "v", "Export": {"Name": "${self:custom.prefix}-O"}}}}'
    )
    service = _read(
        tmp_path,
        "service: x\n"
        "custom:\n"
        "  prefix: ${file(../common.yml):prefix}\n"
        "  all: ${file(../common.yml)}\n"
        "functions:\n  f:\n    environment:\n"
        "      A: !ImportValue ${self:custom.all.stages.${sls:stage}.suffix}-${self:custom.prefix}\n"
        "resources: ${file(../outputs.json)}\n",
    )
    assert service == ServerlessService("x-dev", Dependencies(frozenset(["shop-O"]), frozenset(["D-shop"])))
    folder = tmp_path / "services" / "x"
    assert service.files == (folder / "../common.yml", folder / "../outputs.json")


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PhasedoitError) as excinfo:
        _read(tmp_path, "service: x\ncustom:\n  a: ${file(../nope.yml):a}\n")
    assert (
        str(excinfo.value) == "services/x/serverless.yml: ${file(../nope.yml):a}: no file services/nope.yml"
    )


def test_missing_file_with_a_fallback(tmp_path: Path) -> None:
    assert _import_of(tmp_path, "!ImportValue ${file(./nope.yml):a, 'fb'}") == {"fb"}


@pytest.mark.parametrize(
    ("value", "warning"),
    [
        (
            "${self:custom.nope}",
            "services/x/serverless.yml: functions.f.environment.A: cannot resolve ${self:custom.nope}"
            " (services/x/serverless.yml: custom.nope does not exist)",
        ),
        (
            "${env:NOPE}",
            "services/x/serverless.yml: functions.f.environment.A: cannot resolve ${env:NOPE}"
            " (environment variable NOPE is not set)",
        ),
        (
            "${opt:region}",
            "services/x/serverless.yml: functions.f.environment.A: cannot resolve ${opt:region}"
            " (phasedoit knows no opt:region)",
        ),
        (
            "a-${self:custom}",
            "services/x/serverless.yml: functions.f.environment.A: cannot resolve ${self:custom}"
            " (a mapping or list cannot be part of a string)",
        ),
        (
            "${self:custom.loop}",
            "services/x/serverless.yml: custom.loop: cannot resolve ${self:custom.loop}"
            " (self:custom.loop refers to itself)",
        ),
        (
            "${file(./code.js):x}",
            "services/x/serverless.yml: functions.f.environment.A: cannot resolve ${file(./code.js):x}"
            " (phasedoit reads only YAML and JSON files)",
        ),
    ],
)
def test_unresolvable_variables_are_warnings(tmp_path: Path, value: str, warning: str) -> None:
    text = (
        "service: x\ncustom:\n  loop: ${self:custom.loop}\n"
        f"functions:\n  f:\n    environment:\n      A: {value}\n"
    )
    if "loop" not in value:
        text = text.replace("  loop: ${self:custom.loop}\n", "  k: v\n")
    assert warning in _read(tmp_path, text).dependencies.warnings


def test_deploy_time_variables_are_quiet_unless_they_name_an_import(tmp_path: Path) -> None:
    service = _read(
        tmp_path,
        "service: x\nfunctions:\n  f:\n    environment:\n"
        "      SECRET: ${ssm:/shop/secret}\n"
        "      A: !ImportValue ${ssm:/shop/export}\n"
        "      B: !ImportValue {'Fn::Sub': '${cf:other.Out}-X'}\n",
    )
    assert service.dependencies == Dependencies(
        warnings=(
            "services/x/serverless.yml: functions.f.environment.B: cannot resolve Fn::ImportValue"
            ' {"Fn::Sub": "${cf:other.Out}-X"} statically (no known value for cf:other.Out);'
            " phasedoit cannot order it",
            "services/x/serverless.yml: import ${ssm:/shop/export} holds a variable phasedoit cannot resolve;"
            " phasedoit cannot order it",
        )
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("service: x\n", "x-prod"),
        ("service:\n  name: legacy\n", "legacy-prod"),
        ("service: x\nprovider:\n  stackName: custom-${sls:stage}\n", "custom-prod"),
    ],
)
def test_stack_name(tmp_path: Path, text: str, expected: str) -> None:
    assert _read(tmp_path, text, stage="prod").stack_name == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n", "services/x/serverless.yml: not a Serverless Framework config (not a mapping)"),
        ("provider: {}\n", "services/x/serverless.yml: service: needs a name (a string), got None"),
    ],
)
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PhasedoitError) as excinfo:
        _read(tmp_path, text)
    assert str(excinfo.value) == message
