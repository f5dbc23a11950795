"""Measure the local endpoint: cold start, warm reuse, restart with 50 stacks restored.

Run from the repository root: `python bench/local_endpoint.py`. Prints a Markdown table.
"""

from __future__ import annotations

import functools
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from phasedoit.local import credentials, endpoint_status, ensure_endpoint, stop_endpoint

EXPORTER = """
Resources:
  Topic:
    Type: AWS::SNS::Topic
Outputs:
  TopicArn:
    Value: !Ref Topic
    Export:
      Name: {name}-TopicArn
"""

IMPORTER = """
Resources:
  Copy:
    Type: AWS::SSM::Parameter
    Properties:
      Name: {name}-copy
      Type: String
      Value: !ImportValue {exporter}-TopicArn
"""


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def cloudformation(url: str, state: Path) -> Any:
    key, secret = credentials(state)  # the endpoint answers only requests signed with its own
    return boto3.client(
        "cloudformation",
        endpoint_url=url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )


def cold_start(root: Path) -> float:
    times = []
    for attempt in range(3):
        state = root / f"cold-{attempt}"
        times.append(timed(functools.partial(ensure_endpoint, state)))
        stop_endpoint(state)
    return statistics.median(times)


def warm_reuse(root: Path) -> float:
    state = root / "warm"
    ensure_endpoint(state)
    times = [timed(lambda: ensure_endpoint(state)) for _ in range(20)]
    stop_endpoint(state)
    return statistics.median(times)


def deploy_stacks(url: str, state: Path, count: int) -> None:
    client = cloudformation(url, state)
    exporters = [f"api{index}-dev" for index in range(count // 5)]
    for name in exporters:
        client.create_stack(StackName=name, TemplateBody=EXPORTER.format(name=name))
    for index in range(count - len(exporters)):
        name, exporter = f"job{index}-dev", exporters[index % len(exporters)]
        client.create_stack(StackName=name, TemplateBody=IMPORTER.format(name=name, exporter=exporter))


def restart_with_stacks(root: Path, count: int) -> tuple[float, float, int]:
    """Median restart time, stop time, and saved state size, with `count` stacks to restore."""
    state = root / "restart"
    deploy_stacks(ensure_endpoint(state), state, count)
    restarts, stops = [], []
    for _ in range(3):
        stops.append(timed(lambda: stop_endpoint(state)))
        restarts.append(timed(lambda: ensure_endpoint(state)))
    status = endpoint_status(state)
    assert status.stacks == count, status
    stop_endpoint(state)
    return statistics.median(restarts), statistics.median(stops), status.saved_bytes


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cold = cold_start(root)
        warm = warm_reuse(root)
        restart, stop, saved = restart_with_stacks(root, 50)
    print(f"machine: {platform.machine()}, {platform.system()}, Python {platform.python_version()}\n")
    print("| measure | time |")
    print("|---|---|")
    print(f"| cold start (ensure from nothing, median of 3) | {cold:.2f} s |")
    print(f"| warm reuse (ensure, running server, median of 20) | {warm * 1000:.1f} ms |")
    print(f"| restart with 50 stacks restored (median of 3) | {restart:.2f} s |")
    print(f"| stop (median of 3) | {stop * 1000:.0f} ms |")
    print(f"| saved state for 50 stacks | {saved / 1024:.1f} KiB |")


if __name__ == "__main__":
    main()
