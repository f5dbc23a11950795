from __future__ import annotations

import stat
from pathlib import Path

import pytest

from phasedoit import graph
from phasedoit.errors import PhasedoitError
from phasedoit.serverless import (
    ServerlessService,
    framework_outputs,
    read_serverless,
    resolve_config,
    stack_outputs,
)
from phasedoit.serverless_package import find_framework
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


def _own(service: ServerlessService) -> ServerlessService:
    """Without the exports the framework adds for its own outputs (sls-...): test_framework_outputs has them."""
    deps = service.dependencies
    exports = frozenset(name for name in deps.exports if not name.startswith("sls-"))
    return ServerlessService(service.stack_name, Dependencies(exports, deps.imports, deps.warnings))


def test_monorepo_dev() -> None:
    read = _read_monorepo("dev")
    assert {name: _own(service) for name, service in read.items()} == {
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


def test_monorepo_account_and_region_unknown() -> None:
    """`${aws:accountId}` is known at deploy time (no warning); `${aws:region}` is then `provider.region`."""
    service = read_serverless(
        MONOREPO / "notify-job" / "serverless.yml",
        "notify-job/serverless.yml",
        stage="prod",
        values={},
        env={},
    )
    assert service.dependencies.imports == {"prod-OrdersTopicArn", "prod-UsersTableName"}
    assert service.dependencies.warnings == ()


def _read(
    tmp_path: Path,
    text: str,
    *,
    stage: str = "dev",
    env: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> ServerlessService:
    folder = tmp_path / "services" / "x"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "serverless.yml").write_text(text)
    return read_serverless(
        folder / "serverless.yml",
        "services/x/serverless.yml",
        stage=stage,
        values=PSEUDO if values is None else values,
        env=env or {},
    )


def _import_of(
    tmp_path: Path, value: str, custom: str = "{}", *, stage: str = "dev", env: dict[str, str] | None = None
) -> frozenset[str]:
    text = (
        f"service: x\nprovider:\n  stage: dev\ncustom: {custom}\n"
        "params:\n  default: {prefix: default-prefix}\n  qa: {prefix: qa-prefix}\n"
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
        ("!ImportValue ${opt:region, 'eu'}-X", "{}", "eu-west-1-X"),
        ("!ImportValue ${opt:nope, 'eu'}-X", "{}", "eu-X"),
        ('!ImportValue ${opt:nope, "eu,1"}-X', "{}", "eu,1-X"),
        ("!ImportValue ${opt:nope, self:provider.stage}-X", "{}", "dev-X"),
        ("!ImportValue ${opt:nope, ${self:provider.stage}}-X", "{}", "dev-X"),
        ("!ImportValue ${opt:nope, 7}-${opt:nope, true}", "{}", "7-true"),
        ("!ImportValue ${aws:region}-X", "{}", "eu-west-1-X"),
        ("!ImportValue ${aws:accountId}-X", "{}", "000000000000-X"),
        ("!ImportValue ${param:prefix}-X", "{}", "qa-prefix-X"),
        ("!ImportValue ${self:custom.stage}-X", "${file(../common.yml):custom}", "qa-X"),
        ("!ImportValue ${self:custom.table}", "${file(../common.yml):custom}", "qa-table"),
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
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "common.yml").write_text(COMMON)
    assert _import_of(tmp_path, value, custom, stage="qa") == {expected}


# Seed's pattern: the services' shared `custom`, whose keys refer to one another through `self:custom`.
COMMON = """\
custom:
  stage: ${opt:stage, self:provider.stage}
  table: ${self:custom.stage}-table
"""


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
    assert _own(service) == ServerlessService(
        "x-dev", Dependencies(frozenset(["shop-O"]), frozenset(["D-shop"]))
    )
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
            "${opt:profile}",
            "services/x/serverless.yml: functions.f.environment.A: cannot resolve ${opt:profile}"
            " (phasedoit knows no opt:profile)",
        ),
        (
            "${param:nope}",
            "services/x/serverless.yml: functions.f.environment.A: cannot resolve ${param:nope}"
            " (no params.dev.nope nor params.default.nope)",
        ),
        (
            "a-${self:custom}",
            "services/x/serverless.yml: functions.f.environment.A: cannot resolve ${self:custom}"
            " (a mapping or list cannot be part of a string)",
        ),
        (
            "${self:custom.loop}",
            "services/x/serverless.yml: custom.loop: cannot resolve ${self:custom.loop}"
            " (custom.loop refers to itself)",
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
        exports=frozenset(
            ["sls-x-dev-ServerlessDeploymentBucketName", "sls-x-dev-FLambdaFunctionQualifiedArn"]
        ),
        warnings=(
            "services/x/serverless.yml: functions.f.environment.B: cannot resolve Fn::ImportValue"
            ' {"Fn::Sub": "${cf:other.Out}-X"} statically (no known value for cf:other.Out);'
            " phasedoit cannot order it",
            "services/x/serverless.yml: import ${ssm:/shop/export} holds a variable phasedoit cannot resolve;"
            " phasedoit cannot order it",
        ),
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


def test_a_warning_names_the_service_and_the_file_the_text_came_from(tmp_path: Path) -> None:
    (tmp_path / "common.yml").write_text("custom:\n  sender: ${env:SENDER}\n")
    warnings: list[str] = []
    for name in ("a", "b"):
        folder = tmp_path / "services" / name
        folder.mkdir(parents=True)
        (folder / "serverless.yml").write_text(
            f"service: {name}\ncustom: ${{file(../../common.yml):custom}}\n"
        )
        shown = f"services/{name}/serverless.yml"
        read = read_serverless(folder / "serverless.yml", shown, stage="dev", values=PSEUDO, env={})
        warnings += read.dependencies.warnings
    assert warnings == [
        "services/a/serverless.yml: custom.sender (from common.yml): cannot resolve ${env:SENDER}"
        " (environment variable SENDER is not set)",
        "services/b/serverless.yml: custom.sender (from common.yml): cannot resolve ${env:SENDER}"
        " (environment variable SENDER is not set)",
    ]


@pytest.mark.parametrize(
    ("custom", "warning"),
    [
        (
            "{a: '${self:custom.b}', b: '${self:custom.a}'}",
            "services/x/serverless.yml: custom.b: cannot resolve ${self:custom.a}"
            " (circular: custom.a, custom.b, custom.a)",
        ),
        (
            "{a: 'x-${self:custom}'}",
            "services/x/serverless.yml: custom.a: cannot resolve ${self:custom} (custom.a refers to itself)",
        ),
    ],
)
def test_a_circular_reference_is_one_warning(tmp_path: Path, custom: str, warning: str) -> None:
    assert _read(tmp_path, f"service: x\ncustom: {custom}\n").dependencies.warnings == (warning,)


def test_a_value_read_at_deploy_time_never_takes_the_fallback(tmp_path: Path) -> None:
    service = _read(
        tmp_path,
        "service: x\ncustom:\n  secret: ${ssm:/x, 'fallback'}\n  y: !ImportValue ${self:custom.secret}\n",
    )
    assert service.dependencies.imports == frozenset()
    assert service.dependencies.warnings == (
        "services/x/serverless.yml: import ${self:custom.secret} holds a variable phasedoit cannot resolve;"
        " phasedoit cannot order it",
    )


def test_opt_region_without_a_region(tmp_path: Path) -> None:
    service = _read(tmp_path, "service: x\ncustom:\n  r: ${opt:region}\n  a: ${aws:region}\n", values={})
    assert service.dependencies.warnings == (
        "services/x/serverless.yml: custom.r: cannot resolve ${opt:region} (phasedoit knows no opt:region)",
    )


def test_resolved_values_keep_their_types(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "serverless.yml").write_text(
        "service: x\nprovider: {region: eu-north-1}\n"
        "custom:\n  n: ${opt:nope, 5}\n  f: ${opt:nope, 1.5}\n  b: ${opt:nope, false}\n  s: '${opt:nope, 5}'\n"
        "  text: n=${self:custom.n} b=${self:custom.b}\n  region: ${aws:region}\n  whole: ${self:provider}\n"
    )
    resolved = resolve_config(folder / "serverless.yml", "x/serverless.yml", stage="dev", values={}, env={})
    assert resolved.config["custom"] == {
        "n": 5,
        "f": 1.5,
        "b": False,
        "s": 5,
        "text": "n=5 b=false",
        "region": "eu-north-1",
        "whole": {"region": "eu-north-1"},
    }
    assert resolved.warnings == ()


def test_framework_outputs() -> None:
    config = {
        "provider": {"versionFunctions": False, "httpApi": {"id": "external"}},
        "functions": {
            "get-user_v2": {"versionFunction": True, "events": [{"httpApi": "GET /"}, {"http": "GET x"}]},
            "hook": {"url": True, "events": [{"websocket": "$connect"}, {"cloudFront": {}}]},
        },
        "layers": {"deps": {"path": "layer"}},
    }
    assert framework_outputs(config) == [
        "ServerlessDeploymentBucketName",
        "GetDashuserUnderscorev2LambdaFunctionQualifiedArn",
        "HookLambdaFunctionUrl",
        "ServiceEndpoint",
        "ServiceEndpointWebsocket",
        "CloudFrontDistribution",
        "CloudFrontDistributionDomainName",
        "DepsLambdaLayerQualifiedArn",
        "DepsLambdaLayerHash",
        "DepsLambdaLayerS3Key",
    ]
    assert framework_outputs({"functions": {"f": {"events": [{"httpApi": "GET /"}]}}}) == [
        "ServerlessDeploymentBucketName",
        "FLambdaFunctionQualifiedArn",
        "HttpApiId",
        "HttpApiUrl",
    ]


def test_stack_outputs_merge_resources_over_the_frameworks() -> None:
    config = {
        "resources": [
            {"Outputs": {"ServerlessDeploymentBucketName": {"Export": {"Name": "mine"}}}},
            {"Outputs": {"Plain": {"Value": "v"}}},
        ]
    }
    assert stack_outputs(config, "svc", "dev") == {
        "ServerlessDeploymentBucketName": {"Export": {"Name": "mine"}},
        "Plain": {"Value": "v"},
    }


def _program(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def monorepo_with_programs(tmp_path: Path) -> Path:
    """An app whose root and one service have the framework in node_modules; PATH has node and serverless."""
    _program(tmp_path / "bin" / "node")
    _program(tmp_path / "bin" / "serverless")
    _program(tmp_path / "without-node" / "osls")
    _program(tmp_path / "app" / "node_modules" / ".bin" / "osls")
    _program(tmp_path / "app" / "services" / "own" / "node_modules" / ".bin" / "serverless")
    (tmp_path / "app" / "services" / "shared").mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize(
    ("service", "path", "found"),
    [
        ("own", "bin", "app/services/own/node_modules/.bin/serverless"),
        ("shared", "bin", "app/node_modules/.bin/osls"),
        ("own", "without-node", "without-node/osls"),  # no node: node_modules/.bin scripts cannot run
        ("own", "nowhere", None),
    ],
)
def test_find_framework(monorepo_with_programs: Path, service: str, path: str, found: str | None) -> None:
    root = monorepo_with_programs / "app"
    folder = root / "services" / service
    result = find_framework(folder, root, path=str(monorepo_with_programs / path))
    assert result == (monorepo_with_programs / found if found else None)


def test_find_framework_on_path(monorepo_with_programs: Path) -> None:
    root = monorepo_with_programs / "elsewhere"
    root.mkdir()
    path = str(monorepo_with_programs / "bin")
    assert find_framework(root, root, path=path) == monorepo_with_programs / "bin" / "serverless"


@pytest.mark.parametrize(
    ("configured", "found"),
    [("serverless", "bin/serverless"), ("node_modules/.bin/osls", "app/node_modules/.bin/osls")],
)
def test_find_the_configured_framework(monorepo_with_programs: Path, configured: str, found: str) -> None:
    root = monorepo_with_programs / "app"
    path = str(monorepo_with_programs / "bin")
    assert (
        find_framework(root / "services" / "own", root, configured, path=path)
        == monorepo_with_programs / found
    )


def test_the_configured_framework_missing(monorepo_with_programs: Path) -> None:
    root = monorepo_with_programs / "app"
    with pytest.raises(PhasedoitError) as e:
        find_framework(root, root, "sls", path=str(monorepo_with_programs / "bin"))
    assert str(e.value) == f"phases.yml: framework: no program 'sls' on PATH or in {root}"
