"""The local endpoint's saved state under faults: kept, set aside whole, reported in one line, never lost."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from phasedoit.local import (
    endpoint_status,
    ensure_endpoint,
    format_status,
    local_paths,
    notices,
    stop_endpoint,
)
from phasedoit.local_files import private_dir
from tests.test_local import EXPORTER, IMPORTER, STAGE, TOPIC, deployed, server_pids, signed_client

SECRET = "s3cr3t-value-4242"
NO_ECHO_EXPORTER = EXPORTER.replace(
    "Resources:",
    """Parameters:
  Password:
    Type: String
    NoEcho: true
Resources:
  Secret:
    Type: AWS::SSM::Parameter
    Properties:
      Name: db-password
      Type: String
      Value: !Ref Password""",
)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / ".phasedoit"
    yield state
    stop_endpoint(state)
    for pid in server_pids(state):
        os.kill(pid, signal.SIGKILL)


def started_line(url: str) -> str:
    return f"local endpoint: started at {url} (stop it with `phasedoit local stop`)"


def test_restored_in_dependency_order_with_no_echo_values_kept_secret(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ensure_endpoint(state)
    client = signed_client(url, state)
    client.create_stack(StackName="first-dev", TemplateBody=TOPIC)
    client.create_stack(
        StackName="api-dev",
        TemplateBody=NO_ECHO_EXPORTER,
        Parameters=[{"ParameterKey": "Password", "ParameterValue": SECRET}],
    )
    client.create_stack(StackName="plain-dev", TemplateBody=TOPIC)
    # created first, it imports from a stack created after it: restored in creation order, it would fail
    client.update_stack(StackName="first-dev", TemplateBody=IMPORTER, Parameters=STAGE)
    before = deployed(client)
    assert signed_client(url, state, "ssm").get_parameter(Name="db-password")["Parameter"]["Value"] == SECRET
    assert stop_endpoint(state) is True

    paths = local_paths(state)
    saved = paths.snapshot.read_text()
    assert SECRET not in saved
    assert SECRET not in paths.log.read_text()
    api = next(entry for entry in json.loads(saved)["stacks"] if entry["name"] == "api-dev")
    assert (api["parameters"], sorted(api["secret_parameters"])) == ({}, ["Password"])

    capsys.readouterr()
    url = ensure_endpoint(state)
    assert capsys.readouterr().err == started_line(url) + "\n"
    client = signed_client(url, state)
    assert deployed(client) == before
    assert signed_client(url, state, "ssm").get_parameter(Name="db-password")["Parameter"]["Value"] == SECRET
    assert stop_endpoint(state) is True

    # new credentials: the NoEcho value cannot be decrypted, and what imports from its stack fails too
    paths.credentials.unlink()
    url = ensure_endpoint(state)
    [aside] = paths.set_aside()
    not_restored = (
        "local endpoint: 2 stacks could not be restored and are not there: api-dev (its NoEcho parameter values"
        " cannot be decrypted (the endpoint's credentials were replaced)), first-dev (ExportNotFound: No export"
        f" named dev-PurchasedTopicArn found.); their saved entries are kept in {aside}"
        " (deploy them again, then delete the file)"
    )
    assert capsys.readouterr().err == f"{started_line(url)}\n{not_restored}\n"
    client = signed_client(url, state)
    assert [stack["StackName"] for stack in client.describe_stacks()["Stacks"]] == ["plain-dev"]
    status = endpoint_status(state)
    assert status.stacks == 1
    assert format_status(status).splitlines()[1:] == [not_restored]
    kept = json.loads(aside.read_text())["stacks"]
    assert [entry["name"] for entry in kept] == ["api-dev", "first-dev"]
    assert SECRET not in aside.read_text()
    assert json.loads(paths.snapshot.read_text())["stacks"][0]["name"] == "plain-dev"


TRUNCATED = '{"stacks": [{"account": "123456789012", "name": "api-d'


def test_an_unreadable_snapshot_is_set_aside_and_said(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = local_paths(state)
    private_dir(paths.dir)
    paths.snapshot.write_text(TRUNCATED)
    try:
        json.loads(TRUNCATED)
    except ValueError as error:
        problem = f"not JSON: {error}"
    assert format_status(endpoint_status(state)) == (
        f"local endpoint: not running (saved state: 0 stacks, {len(TRUNCATED)} B)\n"
        f"local endpoint: {paths.snapshot} cannot be restored ({problem}); the next start keeps it aside and"
        " starts with no stacks"
    )

    url = ensure_endpoint(state)  # what a deploy does first
    [aside] = paths.set_aside()
    said = (
        f"local endpoint: a snapshot that could not be restored ({problem}) is kept as {aside};"
        " its stacks were not restored (delete the file once read)"
    )
    assert capsys.readouterr().err == f"{started_line(url)}\n{said}\n"
    assert aside.read_text() == TRUNCATED  # renamed, not rewritten
    assert aside.name.startswith("stacks.json.unreadable-")

    signed_client(url, state).create_stack(StackName="api-dev", TemplateBody=TOPIC)
    assert [entry["name"] for entry in json.loads(paths.snapshot.read_text())["stacks"]] == ["api-dev"]
    assert aside.read_text() == TRUNCATED
    assert notices(state) == [said]


def test_a_snapshot_that_cannot_be_written_keeps_the_last_one(state: Path) -> None:
    url = ensure_endpoint(state)
    client = signed_client(url, state)
    paths = local_paths(state)
    client.create_stack(StackName="api-dev", TemplateBody=EXPORTER)
    saved = paths.snapshot.read_bytes()
    pid = endpoint_status(state).pid
    # the endpoint writes a temporary file, then renames it: here that file is the disk-full device
    temporary = paths.dir / f".stacks.json.{pid}.tmp"
    temporary.symlink_to("/dev/full")
    client.create_stack(StackName="job-dev", TemplateBody=IMPORTER, Parameters=STAGE)
    full = (
        f"local endpoint: cannot save its stacks to {paths.snapshot} (No space left on device); the last saved"
        " state is kept, and what changed since is lost if it stops before a save succeeds"
    )
    assert notices(state) == [full]
    assert paths.snapshot.read_bytes() == saved
    assert not temporary.exists()  # nothing half-written left behind

    client.describe_stacks()  # space again: the next request saves
    assert notices(state) == []
    assert [entry["name"] for entry in json.loads(paths.snapshot.read_text())["stacks"]] == [
        "api-dev",
        "job-dev",
    ]

    saved = paths.snapshot.read_bytes()
    temporary.symlink_to("/dev/full")
    client.create_stack(StackName="plain-dev", TemplateBody=TOPIC)
    assert notices(state) == [full]
    temporary.symlink_to("/dev/full")
    assert stop_endpoint(state) is True  # its last try fails too: the last saved state stays whole
    assert paths.snapshot.read_bytes() == saved
    assert f"cannot save {paths.snapshot}: [Errno 28] No space left on device" in paths.log.read_text()
