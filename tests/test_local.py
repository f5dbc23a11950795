"""The local endpoint, through real server processes and the real boto3 client over HTTP.

Also the helpers of the other tests/test_local_*.py modules: a server shared by a module (its tests keep
apart by using a region each) and clients signed with the endpoint's own credentials.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from phasedoit import cli
from phasedoit.errors import PhasedoitError
from phasedoit.local import (
    IDLE_TIMEOUT_ENV,
    credentials,
    endpoint_status,
    ensure_endpoint,
    format_status,
    local_paths,
    main,
    stop_endpoint,
)

REPO = Path(__file__).resolve().parent.parent

EXPORTER = """
Resources:
  Topic:
    Type: AWS::SNS::Topic
Outputs:
  TopicArn:
    Value: !Ref Topic
    Export:
      Name: dev-PurchasedTopicArn
"""

IMPORTER = """
Parameters:
  Stage:
    Type: String
Resources:
  Copy:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "${Stage}-purchased-topic"
      Type: String
      Value: !ImportValue dev-PurchasedTopicArn
Outputs:
  CopyName:
    Value: !Ref Copy
"""

TOPIC = """
Resources:
  Topic:
    Type: AWS::SNS::Topic
"""
STAGE = [{"ParameterKey": "Stage", "ParameterValue": "dev"}]
# one region per test on a shared server: moto keeps each region's stacks and exports apart
_REGIONS = itertools.cycle(
    [
        "us-east-2",
        "us-west-1",
        "us-west-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "eu-central-1",
        "eu-north-1",
        "ap-south-1",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ca-central-1",
        "sa-east-1",
        "af-south-1",
        "me-south-1",
        "il-central-1",
        "eu-south-1",
        "ap-east-1",
        "ap-northeast-3",
    ]
)


@dataclass(frozen=True)
class Endpoint:
    state: Path
    url: str

    def client(self, service: str = "cloudformation", region: str = "us-east-1") -> Any:
        return signed_client(self.url, self.state, service, region)


def signed_client(url: str, state: Path, service: str = "cloudformation", region: str = "us-east-1") -> Any:
    # a session of its own: clients are created from several threads at once
    key, secret = credentials(state)
    session: Any = boto3.session.Session()  # any service: the stubs' overloads want a literal name
    return session.client(
        service, endpoint_url=url, aws_access_key_id=key, aws_secret_access_key=secret, region_name=region
    )


def started(state: Path) -> Iterator[Endpoint]:
    """A server of its own for a test module: stopped, and any stray server killed, at the end."""
    try:
        yield Endpoint(state, ensure_endpoint(state))
    finally:
        stop_endpoint(state)
        for pid in server_pids(state):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    yield from started(tmp_path_factory.mktemp("shared") / ".phasedoit")


def next_region() -> str:
    return next(_REGIONS)


@pytest.fixture
def region() -> str:
    return next_region()


def server_pids(state_dir: Path) -> list[int]:
    """Every server process serving this state dir (Linux /proc), however it was started."""
    wanted = str(state_dir.resolve())
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"phasedoit.local_server" in argv and b"serve" in argv and wanted.encode() in argv:
            pids.append(int(cmdline.parent.name))
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / ".phasedoit"
    yield state
    stop_endpoint(state)
    for pid in server_pids(state):  # a second server, if a test failed to prevent one
        os.kill(pid, signal.SIGKILL)


def cloudformation(url: str, state: Path, region: str = "us-east-1") -> Any:
    return signed_client(url, state, "cloudformation", region)


def deployed(client: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    keys = ("StackName", "StackId", "StackStatus", "Outputs", "Parameters", "Tags", "CreationTime")
    stacks = [{key: stack.get(key) for key in keys} for stack in client.describe_stacks()["Stacks"]]
    return stacks, client.list_exports()["Exports"]


def test_start_reuse_status_stop(state_dir: Path) -> None:
    assert (
        format_status(endpoint_status(state_dir))
        == "local endpoint: not running (saved state: 0 stacks, 0 B)"
    )

    url = ensure_endpoint(state_dir)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    status = endpoint_status(state_dir)
    assert (status.running, status.url, status.stacks, status.notices) == (True, url, 0, ())
    assert status.pid is not None
    assert alive(status.pid)
    assert re.fullmatch(
        rf"local endpoint: running at {url} \(pid {status.pid}\), up \d+s, 0 stacks, saved state 0 B",
        format_status(status),
    )
    # how fast it answers, is found and stops is measured by bench/local_endpoint.py, not asserted here
    assert cloudformation(url, state_dir).list_stacks()["StackSummaries"] == []
    assert ensure_endpoint(state_dir) == url
    assert endpoint_status(state_dir).pid == status.pid
    assert server_pids(state_dir) == [status.pid]

    assert stop_endpoint(state_dir) is True
    assert not alive(status.pid)
    assert not local_paths(state_dir).endpoint.exists()
    assert endpoint_status(state_dir).running is False
    assert stop_endpoint(state_dir) is False


def test_listens_on_loopback_only(shared: Endpoint) -> None:
    port = int(shared.url.rsplit(":", 1)[1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian; nothing on 0.0.0.0 or ::


def test_restart_restores_stacks_and_exports_status_and_stop(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ensure_endpoint(state_dir)
    client = cloudformation(url, state_dir)
    client.create_stack(StackName="api-dev", TemplateBody=EXPORTER, Tags=[{"Key": "app", "Value": "shop"}])
    client.create_stack(StackName="job-dev", TemplateBody=IMPORTER, Parameters=STAGE)
    client.create_stack(StackName="gone-dev", TemplateBody=TOPIC)
    client.update_stack(StackName="gone-dev", TemplateBody=TOPIC.replace("Topic:", "Other:"))
    client.delete_stack(StackName="gone-dev")
    before = deployed(client)
    assert [(stack["StackName"], stack["StackStatus"]) for stack in before[0]] == [
        ("api-dev", "CREATE_COMPLETE"),
        ("job-dev", "CREATE_COMPLETE"),
    ]
    assert [export["Name"] for export in before[1]] == ["dev-PurchasedTopicArn"]

    capsys.readouterr()
    assert main(["--state-dir", str(state_dir), "status"]) == 0
    assert re.fullmatch(
        rf"local endpoint: running at {url} \(pid \d+\), up \d+s, 2 stacks, saved state [\d.]+ KiB\n",
        capsys.readouterr().out,
    )
    assert cli.main(["local", "stop", "--state-dir", str(state_dir)]) == 0
    assert capsys.readouterr().out == "local endpoint: stopped\n"
    assert cli.main(["local", "stop", "--state-dir", str(state_dir)]) == 0
    assert capsys.readouterr().out == "local endpoint: not running\n"
    status = endpoint_status(state_dir)
    assert (status.running, status.stacks) == (False, 2)
    assert status.saved_bytes == local_paths(state_dir).snapshot.stat().st_size
    run = subprocess.run(
        [sys.executable, "-m", "phasedoit.local", "status"],
        cwd=state_dir.parent,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    size = f"{status.saved_bytes / 1024:.1f} KiB"
    assert run.stdout == f"local endpoint: not running (saved state: 2 stacks, {size})\n"

    url = ensure_endpoint(state_dir)
    # one line, and nothing to report about the saved state
    assert (
        capsys.readouterr().err == f"local endpoint: started at {url} (stop it with `phasedoit local stop`)\n"
    )
    # same stack ids, statuses, outputs (the topic's generated name), parameters, tags, exports
    assert deployed(cloudformation(url, state_dir)) == before
    api, job = before[0]
    assert api["Tags"] == [{"Key": "app", "Value": "shop"}]
    assert job["Parameters"] == [{"ParameterKey": "Stage", "ParameterValue": "dev"}]
    assert job["Outputs"] == [{"OutputKey": "CopyName", "OutputValue": "dev-purchased-topic"}]
    assert endpoint_status(state_dir).stacks == 2


def test_refused_create_leaves_no_stack(shared: Endpoint, region: str) -> None:
    client = shared.client(region=region)
    with pytest.raises(client.exceptions.ClientError) as error:
        client.create_stack(StackName="job-dev", TemplateBody=IMPORTER, Parameters=STAGE)
    assert error.value.response["Error"]["Message"] == "No export named dev-PurchasedTopicArn found."
    # without the server's help: the stack stays in CREATE_IN_PROGRESS and this call is an HTML 500
    assert client.describe_stacks()["Stacks"] == []
    client.create_stack(StackName="api-dev", TemplateBody=EXPORTER)
    client.create_stack(StackName="job-dev", TemplateBody=IMPORTER, Parameters=STAGE)  # no AlreadyExists
    assert [stack["StackStatus"] for stack in client.describe_stacks()["Stacks"]] == ["CREATE_COMPLETE"] * 2


def test_an_export_added_by_an_update_can_be_imported(shared: Endpoint, region: str) -> None:
    client = shared.client(region=region)
    client.create_stack(
        StackName="api-dev", TemplateBody=EXPORTER.replace("dev-PurchasedTopicArn", "dev-OldName")
    )
    client.update_stack(StackName="api-dev", TemplateBody=EXPORTER)  # renames its export
    assert [export["Name"] for export in client.list_exports()["Exports"]] == ["dev-PurchasedTopicArn"]
    client.create_stack(StackName="job-dev", TemplateBody=IMPORTER, Parameters=STAGE)
    statuses = {stack["StackName"]: stack["StackStatus"] for stack in client.describe_stacks()["Stacks"]}
    assert statuses == {"api-dev": "UPDATE_COMPLETE", "job-dev": "CREATE_COMPLETE"}


def saved_names(state: Path, region: str) -> list[str]:
    stacks = json.loads(local_paths(state).snapshot.read_text())["stacks"]
    return [stack["name"] for stack in stacks if stack["region"] == region]


def test_saved_state_stays_bounded(shared: Endpoint, region: str) -> None:
    client = shared.client(region=region)
    snapshot = local_paths(shared.state).snapshot
    client.create_stack(StackName="api-dev", TemplateBody=EXPORTER)
    size = snapshot.stat().st_size
    for round_ in range(5):
        client.create_stack(StackName=f"tmp-{round_}", TemplateBody=TOPIC)
        client.delete_stack(StackName=f"tmp-{round_}")
    assert snapshot.stat().st_size == size
    assert saved_names(shared.state, region) == ["api-dev"]


def test_parallel_callers_start_one_server(state_dir: Path) -> None:
    code = "import sys, pathlib, phasedoit.local as l; print(l.ensure_endpoint(pathlib.Path(sys.argv[1])))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    callers = [
        subprocess.Popen([sys.executable, "-c", code, str(state_dir)], stdout=subprocess.PIPE, env=env)
        for _ in range(4)
    ]
    urls = {caller.communicate(timeout=60)[0].decode().strip() for caller in callers}
    assert [caller.returncode for caller in callers] == [0, 0, 0, 0]
    assert len(urls) == 1
    assert len(server_pids(state_dir)) == 1


def test_parallel_requests_are_served(shared: Endpoint, region: str) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        client = shared.client(region=region)
        try:
            for call in range(20):
                if call % 5 == 0:
                    client.create_stack(StackName=f"load-{worker}-{call}", TemplateBody=TOPIC)
                else:
                    client.describe_stacks()  # iterates every stack while others create: moto's race
        except Exception as error:  # collected, and asserted below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(saved_names(shared.state, region)) == 16 * 4


def test_idle_stop(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IDLE_TIMEOUT_ENV, "2")
    ensure_endpoint(state_dir)
    pid = endpoint_status(state_dir).pid
    assert pid is not None
    deadline = time.monotonic() + 15
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)
    assert not local_paths(state_dir).endpoint.exists()
    assert "idle for 2 s: stopping" in local_paths(state_dir).log.read_text()


def test_bad_idle_timeout_is_a_user_error(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IDLE_TIMEOUT_ENV, "soon")
    with pytest.raises(PhasedoitError) as error:
        ensure_endpoint(state_dir)
    assert str(error.value) == "PHASEDOIT_LOCAL_IDLE_TIMEOUT: expected a number of seconds, got 'soon'"


MISSING_MOTO = """
import pathlib, sys
from phasedoit.errors import PhasedoitError
from phasedoit.local import ensure_endpoint
try:
    ensure_endpoint(pathlib.Path(".phasedoit"))
except PhasedoitError as error:
    sys.exit(str(error))
"""


def test_missing_moto_is_one_line(tmp_path: Path) -> None:
    # -S: no site-packages, hence no moto; the standard library and this package (PYTHONPATH) remain
    run = subprocess.run(
        [sys.executable, "-S", "-c", MISSING_MOTO],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert run.stderr == "local endpoint needs moto's server: pip install 'moto[server]>=5.2.5,<5.3'\n"
    assert not (tmp_path / ".phasedoit" / "local" / "server.log").exists()


def test_moto_outside_the_tested_versions_is_one_line(tmp_path: Path) -> None:
    """moto 5.2.1 installed (it lacks what the server imports): one line before any start, not a crash."""
    older = tmp_path / "older"
    (older / "moto-5.2.1.dist-info").mkdir(parents=True)
    (older / "moto-5.2.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: moto\nVersion: 5.2.1\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", MISSING_MOTO],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(older), str(REPO)])},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stderr) == (
        1,
        "local endpoint needs moto[server]>=5.2.5,<5.3, not moto 5.2.1: pip install 'moto[server]>=5.2.5,<5.3'\n",
    )
    assert not (tmp_path / ".phasedoit" / "local" / "server.log").exists()


def test_the_bound_is_what_pyproject_installs() -> None:
    from phasedoit.local import MOTO_REQUIREMENT

    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'local = ["{MOTO_REQUIREMENT}", "cryptography>=35", "aws-sam-translator>=1.80"]' in pyproject
    assert f'    "{MOTO_REQUIREMENT}",' in pyproject
