from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from mypy_boto3_cloudformation.type_defs import ParameterTypeDef

from phasedoit.config import FromEnv, load_config
from phasedoit.errors import PhasedoitError
from phasedoit.parameters import Secret, fingerprinted, missing_parameters_message, resolve_parameter
from tests.conftest import Moto

WHERE = "phases.yml: services.db.parameters.DbPassword"


def test_missing_parameters_message() -> None:
    assert missing_parameters_message(
        [
            ("billing-job", "AlarmThreshold", "dev"),
            ("billing-job", "Topic", "dev"),
            ("db", "DbPassword", "dev"),
        ]
    ) == (
        "phases.yml: services.billing-job: parameter AlarmThreshold has no value and no default:"
        " set services.billing-job.parameters.AlarmThreshold or stages.dev.parameters.AlarmThreshold\n"
        "phases.yml: services.billing-job: parameter Topic has no value and no default:"
        " set services.billing-job.parameters.Topic or stages.dev.parameters.Topic\n"
        "phases.yml: services.db: parameter DbPassword has no value and no default:"
        " set services.db.parameters.DbPassword or stages.dev.parameters.DbPassword"
    )


def test_a_value_from_the_environment() -> None:
    value = resolve_parameter(FromEnv("DB_PASSWORD"), {"DB_PASSWORD": "hunter2"}, WHERE)
    assert value == "hunter2"  # what CloudFormation is sent
    digest = "sha256:f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7"
    assert repr(value) == f"Secret({digest!r})"
    assert "hunter2" not in repr({"DbPassword": value})
    assert fingerprinted({"DbPassword": value, "Size": "5"}) == {"DbPassword": digest, "Size": "5"}
    # doit sends the request to its workers pickled: still the value, still a Secret
    unpickled = pickle.loads(pickle.dumps(value))  # noqa: S301 - our own bytes
    assert unpickled == "hunter2"
    assert isinstance(unpickled, Secret)
    assert resolve_parameter("plain", {}, WHERE) == "plain"
    assert fingerprinted({"Size": "5"}) == {"Size": "5"}
    # an empty variable is set: its value is the empty string
    assert resolve_parameter(FromEnv("EMPTY"), {"EMPTY": ""}, WHERE) == ""


def test_a_variable_that_is_not_set() -> None:
    with pytest.raises(PhasedoitError) as excinfo:
        resolve_parameter(FromEnv("DB_PASSWORD"), {"OTHER": "x"}, WHERE)
    assert str(excinfo.value) == (
        "phases.yml: services.db.parameters.DbPassword: environment variable DB_PASSWORD is not set"
    )


def _app(tmp_path: Path, parameters: str) -> Path:
    (tmp_path / "services" / "db").mkdir(parents=True)
    (tmp_path / "services" / "db" / "template.yml").write_text("Resources: {}\n")
    (tmp_path / "phases.yml").write_text(
        f"app: shop\nservices:\n  db:\n    parameters: {parameters}\nstages:\n"
        "  prod: {parameters: {Token: {env: PROD_TOKEN}}}\n"
    )
    return tmp_path / "phases.yml"


def test_env_form_in_phases_yml(tmp_path: Path) -> None:
    app = load_config(_app(tmp_path, "{DbPassword: {env: DB_PASSWORD}, Size: 5}"))
    assert app.services["db"].settings.parameters == {"DbPassword": FromEnv("DB_PASSWORD"), "Size": "5"}
    assert app.stages["prod"].parameters == {"Token": FromEnv("PROD_TOKEN")}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            "{DbPassword: {env: 1}}",
            "phases.yml: services.db.parameters.DbPassword: {env: NAME} takes the name of an environment"
            " variable, got '1'",
        ),
        (
            "{DbPassword: {env: DB-PASSWORD}}",
            "phases.yml: services.db.parameters.DbPassword: {env: NAME} takes the name of an environment"
            " variable, got 'DB-PASSWORD'",
        ),
        (
            "{DbPassword: {env: DB_PASSWORD, default: x}}",
            "phases.yml: services.db.parameters.DbPassword: {env: NAME} takes no other key,"
            " got {'env': 'DB_PASSWORD', 'default': 'x'}",
        ),
    ],
)
def test_env_form_errors(tmp_path: Path, parameters: str, message: str) -> None:
    with pytest.raises(PhasedoitError) as excinfo:
        load_config(_app(tmp_path, parameters))
    assert str(excinfo.value) == message


def test_a_secret_reaches_cloudformation_as_its_value(moto: Moto) -> None:
    """botocore serializes the str subclass as the text it holds (a real client, moto over HTTP)."""
    cfn = moto.client()
    body = '{"Parameters": {"P": {"Type": "String", "NoEcho": true}}, "Resources": {"T": {"Type": "AWS::SNS::Topic"}}}'
    parameters: list[ParameterTypeDef] = [{"ParameterKey": "P", "ParameterValue": Secret("hunter2")}]
    cfn.create_stack(StackName="secret-dev", TemplateBody=body, Parameters=parameters)
    [stack] = cfn.describe_stacks(StackName="secret-dev")["Stacks"]
    assert stack["Parameters"] == [{"ParameterKey": "P", "ParameterValue": "hunter2"}]
