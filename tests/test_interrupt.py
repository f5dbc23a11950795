"""Ctrl-C and SIGTERM in the middle of a deploy: the run ends at once, with its summary and no traceback."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import copy_app, sample_app
from tests.faults import Layer


@pytest.mark.parametrize(
    ("signum", "workers", "status"),
    [
        (signal.SIGINT, "thread", 130),
        (signal.SIGTERM, "thread", 143),
        (signal.SIGINT, "process", 130),
    ],
)
def test_a_signal_ends_the_run_without_a_traceback(
    tmp_path: Path, layer: Layer, signum: signal.Signals, workers: str, status: int
) -> None:
    shop = copy_app(sample_app(tmp_path / "source"), tmp_path / "shop")
    layer.duration(60.0, "CreateStack", stack="checkout-api-dev")  # under way until the signal comes
    run = subprocess.Popen(
        [sys.executable, "-m", "doit", "-n", "4", "-P", workers, "deploy"],
        cwd=shop,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not layer.writes():  # its create answered: the deploy polls the stack
        assert time.monotonic() < deadline
        assert run.poll() is None
        time.sleep(0.05)
    run.send_signal(signum)
    stdout, stderr = run.communicate(timeout=30)
    assert run.returncode == status
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if "(AWS::" not in line] == [  # stack events: as polled
        "checkout-api: uploading src/ (485 B)",
        "checkout-api: creating checkout-api-dev",
    ]
    assert re.sub(r"\(\d+\.\d+s\)", "(…s)", stdout).splitlines() == [
        "phase 1 'api'",
        "checkout-api: deploying (never deployed)",
        "1 interrupted, 2 not started (…s)",
    ]
