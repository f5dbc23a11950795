"""`doit` run as a user runs it, in a temporary copy of an app, against the session's moto server."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from phasedoit import local
from tests.conftest import REPO, UP_TO_DATE, Moto, copy_app, doit, sample_app
from tests.faults import Layer
from tests.sample import HIDDEN_IMPORT


@pytest.fixture
def shop(tmp_path: Path, layer: Layer) -> Path:
    """The repo's sample app, alone in a folder; CloudFormation is moto behind the fault layer."""
    source = sample_app(tmp_path / "source")
    return copy_app(source, tmp_path / "shop")


def stacks(moto: Moto) -> dict[str, str]:
    return {s["StackName"]: s["StackStatus"] for s in moto.client().describe_stacks()["Stacks"]}


def lines(text: str, *starts: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(starts)]


def test_list_shows_the_phases(shop: Path) -> None:
    result = doit(shop, "list")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "deploy     deploy shop to stage dev: 2 phases, 3 services, phase by phase",
        "deploy-1   deploy phase 1 'api': checkout-api",
        "deploy-2   deploy phase 2 'jobs': confirmation-job (after checkout-api), reset-cart-job (after checkout-api)",
        "remove     remove shop's stacks of stage dev: 2 phases, 3 services, last phase first",
        "remove-1   remove phase 1 'api': checkout-api",
        "remove-2   remove phase 2 'jobs': confirmation-job, reset-cart-job",
    ]
    every = doit(shop, "list", "--all").stdout
    assert "deploy:confirmation-job   deploy confirmation-job-dev (phase 2 'jobs')" in every.splitlines()


def test_deploy_in_phases_jobs_together(shop: Path, moto: Moto, layer: Layer) -> None:
    layer.together("CreateStack", "confirmation-job-dev", "reset-cart-job-dev")
    result = doit(shop, "-n", "4", "deploy")
    assert result.returncode == 0, result.stderr
    assert stacks(moto) == {
        "checkout-api-dev": "CREATE_COMPLETE",
        "confirmation-job-dev": "CREATE_COMPLETE",
        "reset-cart-job-dev": "CREATE_COMPLETE",
    }
    assert [e["Name"] for e in moto.client().list_exports()["Exports"]] == ["dev-PurchasedTopicArn"]
    job = moto.client().describe_stacks(StackName="reset-cart-job-dev")["Stacks"][0]
    assert job["Outputs"][0]["OutputValue"].endswith("/dev-reset-cart-job")
    assert {"Key": "phasedoit:stage", "Value": "dev"} in job["Tags"]
    api, first, second = sorted(layer.writes(), key=lambda call: call.start)
    assert (api.action, api.stack) == ("CreateStack", "checkout-api-dev")
    assert {first.stack, second.stack} == {"confirmation-job-dev", "reset-cart-job-dev"}
    assert api.end < first.start  # phase 2 starts once phase 1 is done...
    assert second.start < first.end  # ...and its two jobs deploy at the same time (held until both came)


def test_outputs_are_kept_without_account_ids(shop: Path, moto: Moto) -> None:
    assert doit(shop, "-n", "4", "deploy").returncode == 0
    # closing: a connection's own `with` commits but does not close it (Python 3.13 warns of that)
    with contextlib.closing(sqlite3.connect(shop / ".phasedoit" / "doit-dev.db")) as db:
        rows = dict(db.execute("SELECT task_id, task_data FROM doit").fetchall())
    values = json.loads(rows["deploy:checkout-api"])["_values_:"]
    assert values["outputs"] == {
        "PurchasedTopicArn": "arn:aws:sns:us-east-1:<account>:dev-purchased",
        "CheckoutFunction": "dev-checkout",
    }
    assert moto.account() not in json.dumps(rows)


def test_another_stage_deploys_beside(shop: Path, moto: Moto) -> None:
    assert doit(shop, "-n", "4", "deploy").returncode == 0
    result = doit(shop, "-n", "4", "deploy", "stage=prod")
    assert result.returncode == 0, result.stderr
    assert sorted(stacks(moto)) == [
        "checkout-api-dev", "checkout-api-prod", "confirmation-job-dev", "confirmation-job-prod",
        "reset-cart-job-dev", "reset-cart-job-prod",
    ]  # fmt: skip
    assert [e["Name"] for e in moto.client().list_exports()["Exports"]] == [
        "dev-PurchasedTopicArn",
        "prod-PurchasedTopicArn",
    ]


def test_unknown_stage(shop: Path) -> None:
    result = doit(shop, "list", "stage=qa")
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", "phases.yml: stages: no stage 'qa' (known: dev, prod)\n"
    )  # fmt: skip


def test_remove_in_reverse(shop: Path, moto: Moto) -> None:
    assert doit(shop, "-n", "4", "deploy").returncode == 0
    result = doit(shop, "-n", "4", "remove")
    assert result.returncode == 0, result.stderr
    assert stacks(moto) == {}
    done = [line for line in result.stderr.splitlines() if ": removed " in line]
    assert done[-1] == "checkout-api: removed checkout-api-dev", result.stderr
    assert sorted(done[:2]) == [
        "confirmation-job: removed confirmation-job-dev",
        "reset-cart-job: removed reset-cart-job-dev",
    ]
    again = doit(shop, "-n", "4", "remove")
    assert again.returncode == 0
    assert "checkout-api: checkout-api-dev is already gone" in again.stderr.splitlines()


def test_any_app_with_the_same_dodo(tmp_path: Path, layer: Layer, moto: Moto) -> None:
    blog = copy_app(REPO / "tests" / "fixtures" / "blog", tmp_path / "blog")
    assert doit(blog, "list").stdout.splitlines()[:4] == [
        "deploy     deploy blog to stage dev: 3 phases, 5 services, phase by phase",
        "deploy-1   deploy phase 1 'apis': users-api, media-api",
        "deploy-2   deploy phase 2: posts-api (after users-api), search-api (after media-api)",
        "deploy-3   deploy phase 3 'jobs': feed-job (after media-api, posts-api)",
    ]
    result = doit(blog, "-n", "4", "deploy")
    assert result.returncode == 0, result.stderr
    assert sorted(stacks(moto)) == [
        "blog-search-dev",
        "feed-job-dev",
        "media-api-dev",
        "posts-api-dev",
        "users-api-dev",
    ]
    assert doit(blog, "-n", "4", "remove").returncode == 0
    assert stacks(moto) == {}


CLASSIC = """app: shop
phases:
  - name: api
    services: [checkout-api, confirmation-job]
  - [reset-cart-job]
"""


def test_phases_that_contradict_the_imports_stop_before_aws(shop: Path, moto: Moto) -> None:
    (shop / "phases.yml").write_text(CLASSIC)
    result = doit(shop, "-n", "4", "deploy")
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "phases.yml: phases: confirmation-job (phase 1 'api') imports dev-PurchasedTopicArn from checkout-api"
        " (phase 1 'api'): move confirmation-job to a phase after 1\n",
    )
    assert stacks(moto) == {}


def test_a_failure_stops_later_phases(shop: Path, moto: Moto) -> None:
    # an import phasedoit cannot resolve statically gets past its checks, to fail in CloudFormation
    (shop / "phases.yml").write_text(CLASSIC)
    (shop / "services" / "confirmation-job" / "template.yml").write_text(HIDDEN_IMPORT)
    result = doit(shop, "-n", "4", "deploy")
    assert result.returncode == 1
    assert (
        "warning: services/confirmation-job/template.yml: Resources.TopicParameter.Properties.Value:"
        " cannot resolve Fn::ImportValue"
    ) in result.stderr
    assert (
        "confirmation-job: No export named dev-CartTableArn found. [ROLLBACK_COMPLETE]"
        in result.stderr.splitlines()
    )
    *_, because, summary = result.stdout.splitlines()
    assert because == "not started because confirmation-job failed: reset-cart-job"
    assert summary.startswith("1 deployed, 1 failed, 1 not started (")
    assert "reset-cart-job" not in result.stderr
    assert "reset-cart-job-dev" not in stacks(moto)


def test_an_import_from_outside_the_app_must_exist(shop: Path, moto: Moto) -> None:
    template = shop / "services" / "reset-cart-job" / "template.yml"
    template.write_text(
        template.read_text().replace("${Stage}-PurchasedTopicArn", "${Stage}-CartTableArn", 1)
    )
    result = doit(shop, "-n", "4", "deploy")
    assert result.returncode == 1
    assert (
        "reset-cart-job imports dev-CartTableArn, which no service of this app exports"
        " and which does not exist in the target account/region"
    ) in result.stderr.splitlines()
    assert stacks(moto) == {}
    # only the imports of the services being deployed are checked: checkout-api imports nothing
    alone = doit(shop, "deploy:checkout-api")
    assert alone.returncode == 0, alone.stderr
    assert stacks(moto) == {"checkout-api-dev": "CREATE_COMPLETE"}
    assert doit(shop, "deploy:reset-cart-job").returncode == 1
    (shop / "phases.yml").write_text(
        (shop / "phases.yml").read_text() + "external_exports: ['{stage}-CartTableArn']\n"
    )
    assert "check-exports" not in doit(shop, "list").stdout


def test_first_deploy_on_the_local_endpoint(shop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new user's first run: no AWS account; the sample app's dev stage deploys to the embedded endpoint."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    state = shop / ".phasedoit"
    try:
        first = doit(shop, "-n", "4", "deploy")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "checkout-api: created checkout-api-dev" in first.stderr
        assert local.endpoint_status(state).stacks == 3
        assert local.stop_endpoint(state) is True
        again = doit(shop, "-n", "4", "deploy")  # starts the endpoint again, its stacks restored
        assert again.returncode == 0, again.stdout + again.stderr
        assert sorted(again.stdout.splitlines()[:-1]) == sorted(UP_TO_DATE)
    finally:
        local.stop_endpoint(state)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "app: shop\nphases:\n  - [checkout-api\n",
            "phases.yml: line 4, column 1: expected ',' or ']', but got '<stream end>'",
        ),
        (
            "app: shop\nphases: [[checkout-api, nope]]\n",
            "phases.yml: phases[0][1]: unknown service 'nope' (no folder services/nope)",
        ),
    ],
)
def test_user_errors_reach_the_user_as_one_line(shop: Path, config: str, message: str) -> None:
    (shop / "phases.yml").write_text(config)
    for command in (["list"], ["-n", "4", "deploy"], ["plan"]):
        result = doit(shop, *command)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", message + "\n")


def test_stage_from_the_environment(shop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHASEDOIT_STAGE", "prod")
    assert (
        doit(shop, "list").stdout.splitlines()[0]
        == "deploy     deploy shop to stage prod: 2 phases, 3 services, phase by phase"
    )
    # the command line beats the environment
    assert (
        doit(shop, "list", "stage=dev")
        .stdout.splitlines()[0]
        .startswith("deploy     deploy shop to stage dev:")
    )


def test_a_template_that_does_not_parse(shop: Path) -> None:
    (shop / "services" / "reset-cart-job" / "template.yml").write_text("Resources:\n  Queue: {Type: [\n")
    result = doit(shop, "-n", "4", "deploy")
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", "services/reset-cart-job/template.yml: line 3, column 1: expected the node content, but found '<stream end>'\n"
    )  # fmt: skip


SPAWNED_DOIT = """
import multiprocessing, sys
from doit.cmd_base import DodoTaskLoader
from doit.doit_cmd import DoitMain
multiprocessing.set_start_method("spawn")  # as on macOS, Windows, and Linux from Python 3.14
sys.exit(DoitMain(DodoTaskLoader()).run(sys.argv[1:]))
"""


def test_workers_that_are_spawned_not_forked(shop: Path, moto: Moto) -> None:
    deploy = [sys.executable, "-c", SPAWNED_DOIT, "-n", "4", "deploy"]
    first = subprocess.run(deploy, cwd=shop, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines()[-1].startswith("3 deployed (")
    again = subprocess.run(deploy, cwd=shop, capture_output=True, text=True, timeout=120, check=False)
    assert again.stdout.splitlines()[-1].startswith("3 up to date (")  # the fingerprints crossed over


def test_a_stage_bound_to_an_account(shop: Path, moto: Moto) -> None:
    config = shop / "phases.yml"
    config.write_text(
        config.read_text().replace(
            "    region: us-east-1", "    region: us-east-1\n    account: '000000000000'"
        )
    )
    result = doit(shop, "-n", "4", "deploy", "stage=prod")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [  # the check of the exports in use is the first to ask
        "deploy: the AWS credentials in use are for another account than phases.yml's stages.prod.account"
    ]
    assert stacks(moto) == {}
    config.write_text(config.read_text().replace("000000000000", moto.account()))
    assert doit(shop, "-n", "4", "deploy", "stage=prod").returncode == 0
    assert len(stacks(moto)) == 3


def test_one_service_with_its_earlier_phases(shop: Path, moto: Moto) -> None:
    result = doit(shop, "-n", "4", "deploy:reset-cart-job")
    assert result.returncode == 0, result.stderr
    assert sorted(stacks(moto)) == ["checkout-api-dev", "reset-cart-job-dev"]
    again = doit(shop, "deploy:reset-cart-job")
    assert again.stdout.splitlines()[-1].startswith("2 up to date (")


def test_computed_phases(tmp_path: Path, aws_env: dict[str, str], moto: Moto) -> None:
    blog = copy_app(REPO / "tests" / "fixtures" / "blog", tmp_path / "blog")
    config = blog / "phases.yml"
    config.write_text(config.read_text().split("phases:")[0] + "phases: auto\n")
    assert doit(blog, "list").stdout.splitlines()[1:4] == [
        "deploy-1   deploy phase 1: media-api, users-api",
        "deploy-2   deploy phase 2: posts-api (after users-api), search-api (after media-api)",
        "deploy-3   deploy phase 3: feed-job (after media-api, posts-api)",
    ]
    assert doit(blog, "-n", "4", "deploy").returncode == 0
    assert len(stacks(moto)) == 5
