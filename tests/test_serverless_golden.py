"""phasedoit's reading of serverless.yml against the Serverless Framework's own: `osls print` for the
resolved `service`, `provider.stage` and `custom`, and `osls package` (the template it would deploy) for the
exports and imports. The corpus: a monorepo laid out like Seed's examples (serverless-seed) and the other
Serverless fixtures. The framework reaches AWS (SSM, STS, CloudFormation) only at the test's moto server.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from phasedoit.config import load_config
from phasedoit.errors import PhasedoitError
from phasedoit.planning import plan_stage
from phasedoit.serverless import read_serverless, resolve_config, stack_outputs
from phasedoit.serverless_package import find_framework, packaged_dependencies
from phasedoit.templates import Dependencies, collect_dependencies
from tests.conftest import CREDENTIALS, REPO, Moto
from tests.osls import osls

FIXTURES = REPO / "tests" / "fixtures"
# What `${env:...}` reads, for the framework and for phasedoit alike.
ENV = {"NOTIFY_SENDER": "notify@example.com"}


@dataclass(frozen=True)
class Case:
    app: str  # a folder of tests/fixtures
    service: str  # the service's folder in it
    stage: str
    region: str  # phasedoit passes the stage's region as --region
    external: tuple[str, ...] = ()  # keys of `custom` the framework reads from AWS (${cf:...}), at deploy

    @property
    def folder(self) -> Path:
        return FIXTURES / self.app / self.service

    @property
    def shown(self) -> str:
        return f"{self.service}/serverless.yml"

    @property
    def values(self) -> dict[str, str]:
        return {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::Region": self.region}

    def __str__(self) -> str:
        return f"{self.app}/{self.service}@{self.stage}"


CASES = [
    Case("serverless-seed", "services/notes-api", "dev", "us-east-1"),
    Case("serverless-seed", "services/notes-api", "prod", "us-east-1"),
    Case("serverless-seed", "services/billing-api", "dev", "us-east-1", external=("notesApiId",)),
    Case("serverless-seed", "services/notify-job", "prod", "us-east-1"),
    Case("serverless-seed", "infra/database", "prod", "us-east-1"),
    Case("serverless-seed", "infra/topics", "dev", "us-east-1"),
    Case("serverless-monorepo", "users-api", "dev", "eu-west-1"),
    *(
        Case("serverless-monorepo", service, stage, "eu-west-1")
        for service in ("orders-api", "notify-job")
        for stage in ("dev", "prod")
    ),
]


@dataclass(frozen=True)
class Framework:
    """What the framework made of one case."""

    printed: dict[str, Any]
    packaged: Dependencies


@pytest.fixture(scope="session")
def framework(request: pytest.FixtureRequest) -> Iterator[dict[Case, Framework]]:
    """`print` and `package` of every case, run once; two folders at a time, never one folder twice at once
    (the framework packages in the service's `.serverless` folder, then moves it)."""
    executable = osls()  # before the moto server starts: skipped at once without Node.js
    moto_server: Moto = request.getfixturevalue("moto_server")
    moto_server.reset()
    _aws_the_fixtures_read(moto_server)
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith(("AWS_", "PHASEDOIT_"))]:
            env.delenv(name)
        credentials = {k: v for k, v in CREDENTIALS.items() if k != "AWS_REGION"}
        for name, value in {**credentials, "AWS_ENDPOINT_URL": moto_server.url, **ENV}.items():
            env.setenv(name, value)
        folders = {case.folder: [c for c in CASES if c.folder == case.folder] for case in CASES}
        with ThreadPoolExecutor(2) as pool:
            done = pool.map(lambda cases: {case: _run(executable, case) for case in cases}, folders.values())
            yield {case: made for runs in done for case, made in runs.items()}


def _aws_the_fixtures_read(moto: Moto) -> None:
    """users-api reads an SSM parameter; billing-api reads an output of notes-api's stack (`${cf:...}`)."""
    ssm = boto3.client(
        "ssm",
        region_name="eu-west-1",
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for stage in ("dev", "prod"):
        ssm.put_parameter(Name=f"/shop/{stage}/users/secret", Value="not-a-secret", Type="String")
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"ApiGatewayRestApiId": {"Value": "a1b2c3"}},
    }
    moto.client().create_stack(StackName="notes-api-dev", TemplateBody=json.dumps(template))


def _run(executable: Path, case: Case) -> Framework:
    printed = subprocess.run(
        [str(executable), "print", "--stage", case.stage, "--region", case.region, "--format", "json"],
        cwd=case.folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert printed.returncode == 0, printed.stdout + printed.stderr
    packaged = packaged_dependencies([str(executable)], case.folder, case.shown, case.stage, case.values)
    return Framework(json.loads(printed.stdout), packaged)


def _compared(config: dict[str, Any], case: Case) -> dict[str, Any]:
    return {
        "service": config["service"],
        "provider.stage": config["provider"]["stage"],
        "custom": config["custom"],
    }


@pytest.mark.parametrize("case", CASES, ids=str)
def test_resolution_as_print(framework: dict[Case, Framework], case: Case) -> None:
    resolved = resolve_config(
        case.folder / "serverless.yml", case.shown, stage=case.stage, values=case.values, env=ENV
    )
    mine, theirs = _compared(resolved.config, case), _compared(framework[case].printed, case)
    for key in case.external:
        assert mine["custom"].pop(key).startswith("${cf:")
        assert "${" not in theirs["custom"].pop(key)
    assert mine == theirs
    assert resolved.warnings == ()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_exports_and_imports_as_print(framework: dict[Case, Framework], case: Case) -> None:
    printed = framework[case].printed
    stack_name = printed["provider"].get("stackName") or f"{printed['service']}-{case.stage}"
    outputs = stack_outputs(printed, printed["service"], case.stage)
    known = {**case.values, "AWS::StackName": stack_name}
    theirs = collect_dependencies(outputs, "resources.Outputs", printed, known, case.shown)
    assert _read(case) == theirs


@pytest.mark.parametrize("case", CASES, ids=str)
def test_exports_and_imports_as_package(framework: dict[Case, Framework], case: Case) -> None:
    assert _read(case) == framework[case].packaged


def _read(case: Case) -> Dependencies:
    path = case.folder / "serverless.yml"
    return read_serverless(path, case.shown, stage=case.stage, values=case.values, env=ENV).dependencies


def test_packaging_leaves_the_service_folder_as_it_was(framework: dict[Case, Framework]) -> None:
    assert not [case for case in CASES if (case.folder / ".serverless").exists()]


def test_the_framework_found_for_a_fixture() -> None:
    executable = osls()
    folder = FIXTURES / "serverless-seed" / "services" / "notes-api"
    path = f"{executable.parent}{os.pathsep}{os.environ['PATH']}"
    assert find_framework(folder, folder.parent.parent, path=path) in (
        executable,
        executable.parent / "serverless",
    )


def test_a_failed_package_is_one_line(tmp_path: Path) -> None:
    executable = osls()
    (tmp_path / "serverless.yml").write_text(
        "service: xy\nprovider: {name: aws}\nfunctions: {f: {handler: f.main}}\n"
    )
    with pytest.raises(PhasedoitError) as e:
        packaged_dependencies([str(executable)], tmp_path, "services/x/serverless.yml", "dev", {})
    assert str(e.value) == (
        "services/x/serverless.yml: osls package failed (exit 1): No file matches include / exclude patterns"
    )


@pytest.mark.parametrize(
    ("stage", "phases"),
    [
        ("dev", [("database", "topics"), ("notes-api", "notify-job"), ("billing-api",)]),
        ("prod", [("database", "topics"), ("notes-api", "notify-job"), ("billing-api",)]),
    ],
)
def test_seed_phases_without_a_warning(
    stage: str, phases: list[tuple[str, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    plan = plan_stage(load_config(FIXTURES / "serverless-seed" / "phases.yml"), stage, ENV)
    assert [phase.services for phase in plan.phases] == phases
    assert capsys.readouterr().err == ""
