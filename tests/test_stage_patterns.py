"""`stages:` patterns: `pr-*` sets every pull request's stage, so that none needs an edit of phases.yml."""

from __future__ import annotations

from pathlib import Path

import pytest

from phasedoit.config import load_config
from phasedoit.errors import PhasedoitError
from phasedoit.planning import plan_stage
from tests.conftest import Moto, doit
from tests.faults import Layer
from tests.sample import last_state, shop

STAGES = """
stages:
  dev: {endpoint: local}
  "pr-*": {region: eu-west-1, parameters: {Stage: ignored}}
  "pr-1": {region: us-west-2}
  "*-qa": {region: eu-central-1}
"""


def app_with(tmp_path: Path, stages: str) -> Path:
    app = shop(tmp_path)
    config = app / "phases.yml"
    config.write_text(config.read_text().split("stages:")[0] + stages)
    return app


def test_a_stage_takes_its_own_settings_else_the_first_pattern_that_matches(tmp_path: Path) -> None:
    app = load_config(app_with(tmp_path, STAGES) / "phases.yml")
    regions = {
        s: getattr(app.stage_settings(s), "region", None) for s in ("pr-42", "pr-1", "pr-qa", "eu-qa", "qa")
    }
    assert regions == {
        "pr-42": "eu-west-1",
        "pr-1": "us-west-2",  # its own entry wins, wherever it is written
        "pr-qa": "eu-west-1",  # the first pattern that matches
        "eu-qa": "eu-central-1",
        "qa": None,
    }
    assert plan_stage(app, "pr-42", {}).target.region == "eu-west-1"
    with pytest.raises(PhasedoitError) as e:
        plan_stage(app, "qa", {})
    assert str(e.value) == "phases.yml: stages: no stage 'qa' (known: dev, pr-*, pr-1, *-qa)"


def test_a_pattern_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(PhasedoitError) as e:
        load_config(app_with(tmp_path, 'stages:\n  "PR-*": {}\n  "pr_*": {}\n') / "phases.yml")
    assert str(e.value).splitlines() == [
        "phases.yml: stages.PR-*: 'PR-*' is not a valid stage pattern"
        " (lowercase letters, digits, '-' and '*', starting with a letter or '*')",
        "phases.yml: stages.pr_*: 'pr_*' is not a valid stage pattern"
        " (lowercase letters, digits, '-' and '*', starting with a letter or '*')",
    ]


def test_a_pull_request_stage_deploys_and_is_removed(tmp_path: Path, layer: Layer, moto: Moto) -> None:
    app = app_with(tmp_path, 'stages:\n  dev: {endpoint: local}\n  "pr-*": {region: us-east-1}\n')
    deployed = doit(app, "-n", "4", "deploy", "stage=pr-42")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    stacks = {s["StackName"]: s["StackStatus"] for s in moto.client().describe_stacks()["Stacks"]}
    assert stacks == {
        "checkout-api-pr-42": "CREATE_COMPLETE",
        "confirmation-job-pr-42": "CREATE_COMPLETE",
        "reset-cart-job-pr-42": "CREATE_COMPLETE",
    }
    assert [e["Name"] for e in moto.client().list_exports()["Exports"]] == ["pr-42-PurchasedTopicArn"]
    removed = doit(app, "-n", "4", "remove", "stage=pr-42")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert moto.client().describe_stacks()["Stacks"] == []
    assert last_state(app, "pr-42").summary(0).startswith("3 removed (")
