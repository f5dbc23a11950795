from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from mypy_boto3_cloudformation import CloudFormationClient

from tests.faults import Layer, cloudformation_client, running_layer

REPO = Path(__file__).resolve().parent.parent
# what a run prints when the sample app is up to date (the order within a phase varies)
UP_TO_DATE = [
    "phase 1 'api'",
    "checkout-api: up to date",
    "phase 2 'jobs'",
    "confirmation-job: up to date",
    "reset-cart-job: up to date",
]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@dataclass(frozen=True)
class Moto:
    url: str

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")).close()

    def client(self) -> CloudFormationClient:
        return cloudformation_client(self.url)

    def account(self) -> str:
        """moto's own account id: read, never written down."""
        sts = boto3.client(
            "sts",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        return str(sts.get_caller_identity()["Account"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """One real moto server for the session, in its own process, reached over HTTP like CloudFormation."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    moto = Moto(f"http://127.0.0.1:{port}")
    try:
        wait_until_up(moto, server, log)
        moto.client().describe_stacks()  # moto loads its backends on first use: pay that once, here
        yield moto
    finally:
        server.terminate()
        server.wait(10)


def wait_until_up(moto: Moto, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(f"{moto.url}/moto-api/", timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not start: {log.read_text()}")


@pytest.fixture
def moto(moto_server: Moto) -> Moto:
    moto_server.reset()
    return moto_server


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake AWS credentials and a region, and none of the test runner's other AWS or phasedoit settings."""
    for name in [n for n in os.environ if n.startswith(("AWS_", "PHASEDOIT_"))]:
        monkeypatch.delenv(name)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return dict(CREDENTIALS)


@pytest.fixture
def aws_env(moto: Moto, credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a user whose AWS variables point at the test's moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    return {**credentials, "AWS_ENDPOINT_URL": moto.url}


SERVERLESS_SERVICE = "receipt-job"  # the sample app's Serverless Framework service (it needs Node.js)
FRAMEWORK_LINE = "framework: .tools/osls/node_modules/.bin/osls\n"


def sample_app(folder: Path, framework: Path | None = None) -> Path:
    """The repo's sample app (phases.yml and services/) written into `folder`.

    With `framework` (the real one, tests/osls.py), its Serverless service packages with it; without,
    that service is left out: the tests of everything else need no Node.js.
    """
    folder.mkdir(parents=True, exist_ok=True)
    phases = (REPO / "phases.yml").read_text()
    assert FRAMEWORK_LINE in phases
    shutil.copytree(REPO / "services", folder / "services")
    if framework is not None:
        phases = phases.replace(FRAMEWORK_LINE, f"framework: {framework}\n")
    else:
        phases = phases.replace(FRAMEWORK_LINE, "").replace(f", {SERVERLESS_SERVICE}]", "]")
        assert SERVERLESS_SERVICE not in phases.split("services:", 2)[1]
        shutil.rmtree(folder / "services" / SERVERLESS_SERVICE)
    (folder / "phases.yml").write_text(phases)
    return folder


def copy_app(source: Path, destination: Path) -> Path:
    """A copy of an app with the repo's dodo.py beside its phases.yml, as a user would have it."""
    shutil.copytree(
        source, destination, ignore=shutil.ignore_patterns(".phasedoit", "__pycache__", ".doit.db*")
    )
    shutil.copy(REPO / "dodo.py", destination / "dodo.py")
    return destination


def doit(app: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_module("doit", *args, cwd=app, env=env)


def run_module(
    module: str, *args: str, cwd: Path, env: dict[str, str] | None
) -> subprocess.CompletedProcess[str]:
    """`python -m module args` as a user runs it: a real process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def layer(moto: Moto, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Layer]:
    """The CloudFormation fault layer in front of the test's moto server; AWS_ENDPOINT_URL points at it."""
    with running_layer(moto.url) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL", running.url)
        yield running
