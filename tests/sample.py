"""The repo's sample app in a temporary folder, and a run of it that fails in its first phase."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from phasedoit import runrecord, runstate
from phasedoit.runstate import Event
from tests.conftest import copy_app, sample_app

# checkout-api and confirmation-job in one phase: confirmation-job's import of an export no service has
# gets past phasedoit's checks (it cannot be resolved statically) and fails in CloudFormation
FAILING_PHASES = """app: shop
phases:
  - name: api
    services: [checkout-api, confirmation-job]
  - [reset-cart-job]
"""
HIDDEN_IMPORT = """Parameters:
  Stage: {Type: String}
Resources:
  TopicParameter:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub /${Stage}/confirmation-job/purchased-topic-arn
      Type: String
      Value: !ImportValue
        Fn::Select: [0, [!Sub '${Stage}-CartTableArn']]
"""


def shop(tmp_path: Path) -> Path:
    """The sample app without its Serverless service (no Node.js needed), alone in a folder."""
    return copy_app(sample_app(tmp_path / "source"), tmp_path / "shop")


def failing(app: Path) -> Path:
    (app / "phases.yml").write_text(FAILING_PHASES)
    (app / "services" / "confirmation-job" / "template.yml").write_text(HIDDEN_IMPORT)
    return app


def doit_merged(app: Path, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """doit with stdout and stderr in one pipe, as a CI log shows them."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PHASEDOIT_PROGRESS")} | environ
    return subprocess.run(
        [sys.executable, "-m", "doit", *args],
        cwd=app,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )


def last_run(app: Path, stage: str = "dev") -> list[Event]:
    return runrecord.load(runrecord.runs(app / ".phasedoit", stage)[-1])


def last_state(app: Path, stage: str = "dev") -> runstate.RunState:
    return runstate.fold(last_run(app, stage))
