"""Faults of the network and of AWS, end to end: one line, the documented exit code, bounded time, and a next
run that redeploys nothing that deployed and skips nothing that did not. Through the CloudFormation fault
layer in front of moto (tests/faults.py), with short timeouts so that a silent endpoint costs seconds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import test_states
from tests.conftest import doit
from tests.faults import Layer
from tests.test_states import calls, edit

# the one-service app of the stack-state tests: `app` not deployed yet, `tiny` deployed
app, tiny = test_states.app, test_states.tiny

SHORT = {"PHASEDOIT_API_TIMEOUT": "1", "PHASEDOIT_API_ATTEMPTS": "2"}


def run(app: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return doit(app, "-n", "2", "deploy", *args, env={**os.environ, **SHORT, **env})


def up_to_date(app: Path, layer: Layer) -> None:
    again = run(app)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith("1 up to date (")
    assert calls(layer) == []


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("error", "deploy: An internal error occurred."),
        (
            "html",
            "deploy: CloudFormation answered with an error page, not an API response (HTTP 500)",
        ),
        (
            "drop",
            'deploy: CloudFormation request failed: Connection was closed before we received a valid response from endpoint URL: "<layer>/".',
        ),
        ("stall", "deploy: CloudFormation did not answer in time at <layer>/"),
    ],
)
def test_a_failed_listing_deploys_nothing_and_strips_no_tag(
    tiny: Path, layer: Layer, kind: str, message: str
) -> None:
    edit(tiny)  # the service has something to deploy: it must still not deploy blind
    # the first to list the stacks is the check of the exports in use, before any deploy starts
    layer.fault(kind, times=None, action="DescribeStacks")
    result = run(tiny)
    layer.faults.clear()
    layer.released.set()
    assert result.returncode == 1
    assert result.stderr.replace(layer.url, "<layer>").splitlines() == [message]
    assert calls(layer) == []
    # the next run deploys the edit, once, and then nothing
    assert run(tiny).returncode == 0
    assert calls(layer) == [("UpdateStack", "api-dev", "ok")]
    up_to_date(tiny, layer)


def test_throttling_is_retried(tiny: Path, layer: Layer) -> None:
    edit(tiny)
    layer.fault("throttle", times=2, action="UpdateStack")
    result = run(tiny, PHASEDOIT_API_ATTEMPTS="4")
    assert result.returncode == 0, result.stderr
    assert calls(layer) == [
        ("UpdateStack", "api-dev", "Throttling: Rate exceeded"),
        ("UpdateStack", "api-dev", "Throttling: Rate exceeded"),
        ("UpdateStack", "api-dev", "ok"),
    ]
    up_to_date(tiny, layer)


def test_a_write_that_went_through_then_failed_is_done_once(app: Path, layer: Layer) -> None:
    """A 5xx after CloudFormation made the stack: botocore retries with the same ClientRequestToken."""
    layer.fault("after_write", action="CreateStack")
    result = run(app, PHASEDOIT_API_ATTEMPTS="3")
    assert result.returncode == 0, result.stderr
    assert calls(layer) == [("CreateStack", "api-dev", "500 after ok"), ("CreateStack", "api-dev", "ok")]
    assert [s["StackName"] for s in layer.client().describe_stacks()["Stacks"]] == ["api-dev"]
    up_to_date(app, layer)


def test_a_write_that_never_answers_is_one_line_in_bounded_time(tiny: Path, layer: Layer) -> None:
    edit(tiny)
    layer.fault("stall", times=None, action="UpdateStack")
    result = run(tiny)  # doit's helper gives up after 120 s: two attempts of one second end it first
    layer.faults.clear()
    layer.released.set()
    assert result.returncode == 1
    assert result.stderr.replace(layer.url, "<layer>").splitlines()[-1] == (
        "api: CloudFormation did not answer in time at <layer>/"
    )
    assert run(tiny).returncode == 0  # not recorded as done: the next run deploys it
    # the stalled calls are recorded when the layer lets them go, whenever that is
    assert [call for call in calls(layer) if call[2] != "stalled"] == [("UpdateStack", "api-dev", "ok")]
