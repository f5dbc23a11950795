from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from mypy_boto3_cloudformation import CloudFormationClient

REPO = Path(__file__).resolve().parent.parent
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@dataclass(frozen=True)
class Moto:
    url: str

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")).close()

    def client(self) -> CloudFormationClient:
        return boto3.client(
            "cloudformation",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    """One real moto server for the session, reached over HTTP like any CloudFormation endpoint."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    moto = Moto(f"http://127.0.0.1:{port}")
    moto.client().describe_stacks()  # moto loads its backends on first use: pay that once, here
    yield moto
    server.stop()


@pytest.fixture
def moto(moto_server: Moto) -> Moto:
    moto_server.reset()
    return moto_server


@pytest.fixture
def aws_env(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a user whose AWS variables point at the test's moto server."""
    for name in [n for n in os.environ if n.startswith(("AWS_", "PHASEDOIT_"))]:
        monkeypatch.delenv(name)
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": moto.url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def copy_app(source: Path, destination: Path) -> Path:
    """A copy of an app with the repo's dodo.py beside its phases.yml, as a user would have it."""
    shutil.copytree(
        source, destination, ignore=shutil.ignore_patterns(".phasedoit", "__pycache__", ".doit.db*")
    )
    shutil.copy(REPO / "dodo.py", destination / "dodo.py")
    return destination


def doit(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doit", *args],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
