"""`phasedoit graph`: the sample app drawn (its Serverless service read with no Node.js on PATH), and user
errors as one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from phasedoit.cli import main
from tests.conftest import REPO, run_module

DOT = """\
digraph phasedoit {
  rankdir=LR;
  node [shape=box];
  subgraph cluster_1 {
    label="phase 1 'api'";
    "checkout-api";
  }
  subgraph cluster_2 {
    label="phase 2 'jobs'";
    "confirmation-job";
    "reset-cart-job";
    "receipt-job";
  }
  "checkout-api" -> "confirmation-job" [label="dev-PurchasedTopicArn"];
  "checkout-api" -> "reset-cart-job" [label="dev-PurchasedTopicArn"];
  "checkout-api" -> "receipt-job" [label="dev-PurchasedTopicArn"];
}
"""
MERMAID = """\
flowchart LR
  subgraph phase1 ["phase 1 'api'"]
    s0["checkout-api"]
  end
  subgraph phase2 ["phase 2 'jobs'"]
    s1["confirmation-job"]
    s2["reset-cart-job"]
    s3["receipt-job"]
  end
  s0 -->|"prod-PurchasedTopicArn"| s1
  s0 -->|"prod-PurchasedTopicArn"| s2
  s0 -->|"prod-PurchasedTopicArn"| s3
"""


def phasedoit(*args: str, cwd: Path = REPO, stage: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **({"PHASEDOIT_STAGE": stage} if stage else {})}
    return run_module("phasedoit.cli", *args, cwd=cwd, env=env)


def test_dot_of_the_sample_app() -> None:
    result = phasedoit("graph")
    assert (result.returncode, result.stdout, result.stderr) == (0, DOT, "")


def test_mermaid_of_the_sample_app(tmp_path: Path) -> None:
    result = phasedoit("graph", "--format", "mermaid", "--stage", "prod", "--app", str(REPO), cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, MERMAID, "")


def test_stage_from_the_environment() -> None:
    assert phasedoit("graph", "--format", "mermaid", stage="prod").stdout == MERMAID


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stage", "qa"], "phases.yml: stages: no stage 'qa' (known: dev, prod)"),
        (
            ["--stage", "Prod"],
            "stage: 'Prod' is not a valid stage name (lowercase letters, digits and '-', starting with a letter)",
        ),
        (["--app", "services"], "phases.yml: cannot read: No such file or directory"),
    ],
)
def test_user_errors(args: list[str], message: str) -> None:
    result = phasedoit("graph", *args)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", message + "\n")


def test_phases_contradicting_imports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "phases.yml").write_text(
        "app: shop\nphases: [[confirmation-job, checkout-api, reset-cart-job]]\n"
    )
    (tmp_path / "services").symlink_to(REPO / "services")
    assert main(["graph", "--app", str(tmp_path)]) == 1
    assert capsys.readouterr() == (
        "",
        "phases.yml: phases: confirmation-job (phase 1) imports dev-PurchasedTopicArn from checkout-api (phase 1):"
        " move confirmation-job to a phase after 1\n"
        "phases.yml: phases: reset-cart-job (phase 1) imports dev-PurchasedTopicArn from checkout-api (phase 1):"
        " move reset-cart-job to a phase after 1\n",
    )


def test_unknown_argument() -> None:
    result = phasedoit("graph", "--colour")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "phasedoit: error: unrecognized arguments: --colour"
