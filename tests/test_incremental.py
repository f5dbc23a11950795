"""Redeploys touch only what changed: counted as CloudFormation write calls through a recording layer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import UP_TO_DATE, Moto, copy_app, doit, sample_app
from tests.faults import Layer, running_layer

JOBS = [("CreateStack", "confirmation-job-dev"), ("CreateStack", "reset-cart-job-dev")]
FIRST = [("CreateStack", "checkout-api-dev"), *JOBS]


@pytest.fixture
def shop(tmp_path: Path, layer: Layer) -> Path:
    source = sample_app(tmp_path / "source")
    app = copy_app(source, tmp_path / "shop")
    deploy(app)
    assert sorted(layer.written()) == FIRST
    return app


def deploy(app: Path, *args: str) -> str:
    result = doit(app, "-n", "4", "deploy", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def edit(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_unchanged_rerun_writes_nothing(shop: Path, layer: Layer) -> None:
    out = deploy(shop)
    assert layer.written() == []
    lines = out.splitlines()
    assert sorted(lines[:-1]) == sorted(UP_TO_DATE)
    assert lines[-1].startswith("3 up to date (")


def test_one_template_edited_deploys_only_its_stack(shop: Path, layer: Layer) -> None:
    template = shop / "services" / "reset-cart-job" / "template.yml"
    template.write_text(template.read_text().replace("Empties the shopping cart", "Empties the cart"))
    deploy(shop)
    assert layer.written() == [("UpdateStack", "reset-cart-job-dev")]


def test_touch_and_caches_are_not_changes(shop: Path, layer: Layer) -> None:
    for path in (shop / "services").rglob("*"):
        os.utime(path, (time.time() + 60, time.time() + 60))
    (shop / "services" / "checkout-api" / "__pycache__").mkdir()
    (shop / "services" / "checkout-api" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (shop / "services" / "checkout-api" / "node_modules").mkdir()
    deploy(shop)
    assert layer.written() == []


def test_a_fresh_checkout_without_local_state_deploys_nothing(shop: Path, layer: Layer) -> None:
    shutil.rmtree(shop / ".phasedoit")
    deploy(shop)
    assert layer.written() == []


def test_a_stack_deleted_behind_our_back_is_created_again(shop: Path, layer: Layer, moto: Moto) -> None:
    moto.client().delete_stack(StackName="confirmation-job-dev")
    result = doit(shop, "plan")
    assert result.stdout.splitlines() == [
        "1 of 3 services would deploy (schedule: phases)",
        "phase 1 'api'",
        "  checkout-api           up to date",
        "phase 2 'jobs'",
        "  confirmation-job       deploys: stack missing",
        "                         adds CAPABILITY_AUTO_EXPAND (Transform AWS::Serverless-2016-10-31)",
        "  reset-cart-job         up to date",
    ]
    deploy(shop)
    assert layer.written() == [("CreateStack", "confirmation-job-dev")]


def test_a_changed_export_in_use_is_refused_by_cloudformation(shop: Path, layer: Layer) -> None:
    template = shop / "services" / "checkout-api" / "template.yml"
    template.write_text(
        template.read_text().replace("TopicName: !Sub ${Stage}-purchased", "TopicName: !Sub ${Stage}-bought")
    )
    assert doit(shop, "plan").stdout.splitlines()[1:] == [
        "phase 1 'api'",
        "  checkout-api           deploys: changed files: template.yml",
        "phase 2 'jobs'",
        "  confirmation-job       up to date, unless the exports of checkout-api change",
        "  reset-cart-job         up to date, unless the exports of checkout-api change",
    ]
    result = doit(shop, "-n", "4", "deploy")
    # the topic's ARN is the value of an export both jobs import: CloudFormation rolls the update back
    in_use = "Cannot update export dev-PurchasedTopicArn as it is in use by confirmation-job-dev and reset-cart-job-dev"
    said = result.stderr.splitlines()
    assert (result.returncode, said[0], said[-1]) == (
        1,
        "checkout-api: updating checkout-api-dev",
        f"checkout-api: {in_use} [UPDATE_ROLLBACK_COMPLETE]",
    )
    assert (
        f"checkout-api: checkout-api-dev (AWS::CloudFormation::Stack) UPDATE_ROLLBACK_IN_PROGRESS: {in_use}"
        in said
    )
    assert layer.written() == [("UpdateStack", "checkout-api-dev")]
    events = layer.client().describe_stack_events(StackName="checkout-api-dev")["StackEvents"]
    assert [(e["ResourceStatus"], e.get("ResourceStatusReason")) for e in events if e["LogicalResourceId"] == "checkout-api-dev"][:4] == [
        ("UPDATE_ROLLBACK_COMPLETE", None),
        ("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", None),
        ("UPDATE_ROLLBACK_IN_PROGRESS", "Cannot update export dev-PurchasedTopicArn as it is in use by confirmation-job-dev and reset-cart-job-dev"),
        ("UPDATE_IN_PROGRESS", "User Initiated"),
    ]  # fmt: skip


def test_a_failure_then_the_fix_deploys_only_the_failed_service(shop: Path, layer: Layer, moto: Moto) -> None:
    moto.client().delete_stack(StackName="reset-cart-job-dev")
    template = shop / "services" / "reset-cart-job" / "template.yml"
    good = template.read_text()
    template.write_text(
        good.replace("QueueName: !Sub ${Stage}-reset-cart-job", "QueueName: !Sub ${Stage} jobs")
    )
    edit(shop / "services" / "confirmation-job" / "template.yml", "# changed too\n")
    layer.written()
    result = doit(shop, "-n", "4", "deploy")
    assert result.returncode == 1
    assert (
        "reset-cart-job: Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length"
        " [ROLLBACK_COMPLETE]"
    ) in result.stderr.splitlines()
    assert layer.written() == [("CreateStack", "reset-cart-job-dev")]  # a comment is not sent
    template.write_text(good)
    deploy(shop)
    # a stack whose create rolled back can only be deleted, and created again
    assert layer.written() == [
        ("DeleteStack", "reset-cart-job-dev"),
        ("CreateStack", "reset-cart-job-dev"),
    ]


def test_force(shop: Path, layer: Layer) -> None:
    assert (
        doit(shop, "plan", "force=reset-cart-job").stdout.splitlines()[-1]
        == "  reset-cart-job         deploys: forced"
    )
    deploy(shop, "force=reset-cart-job")
    assert layer.written() == [("UpdateStack", "reset-cart-job-dev")]
    deploy(shop, "force=all")
    assert sorted(layer.written()) == [
        ("UpdateStack", "checkout-api-dev"), ("UpdateStack", "confirmation-job-dev"), ("UpdateStack", "reset-cart-job-dev"),
    ]  # fmt: skip
    result = doit(shop, "plan", "force=nope")
    assert (result.returncode, result.stderr) == (1, "force: no service 'nope' in phases.yml\n")


def test_stages_have_their_own_state(shop: Path, layer: Layer) -> None:
    deploy(shop, "stage=prod")
    assert sorted(layer.written()) == sorted(
        ("CreateStack", name.replace("-dev", "-prod")) for _, name in FIRST
    )
    deploy(shop)
    deploy(shop, "stage=prod")
    assert layer.written() == []


@contextmanager
def first_run_under_way(
    tmp_path: Path, moto: Moto, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> Iterator[tuple[Path, Layer, subprocess.Popen[str]]]:
    """`doit -n 4 deploy` of the sample app started, through a network that holds each write `seconds`."""
    shop = copy_app(sample_app(tmp_path / "source"), tmp_path / "shop")
    with running_layer(moto.url) as slow:
        slow.latency(seconds)
        monkeypatch.setenv("AWS_ENDPOINT_URL", slow.url)
        argv = [sys.executable, "-m", "doit", "-n", "4", "deploy"]
        with subprocess.Popen(
            argv, cwd=shop, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as run:
            yield shop, slow, run
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)


def test_sigterm_keeps_what_finished(
    tmp_path: Path, moto: Moto, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with first_run_under_way(tmp_path, moto, monkeypatch, 2.0) as (shop, slow, run):
        deadline = time.monotonic() + 30
        while len(slow.calls) < 1 or not any(c.stack == "checkout-api-dev" for c in slow.writes()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # the jobs' creates are under way, held by the slow network
        run.send_signal(signal.SIGTERM)
        run.communicate(timeout=30)
        assert run.returncode != 0
    with running_layer(moto.url) as layer:
        monkeypatch.setenv("AWS_ENDPOINT_URL", layer.url)
        deploy(shop)
        assert sorted(layer.written()) == JOBS


def test_a_file_that_is_not_sent_is_not_a_change(shop: Path, layer: Layer) -> None:
    (shop / "services" / "checkout-api" / "README.md").write_text("# Checkout API\n")
    edit(shop / "services" / "reset-cart-job" / "template.yml", "# a comment is not sent either\n")
    deploy(shop)
    assert layer.written() == []


def test_an_edit_made_during_a_run_is_deployed_by_the_next(
    tmp_path: Path, moto: Moto, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with first_run_under_way(tmp_path, moto, monkeypatch, 1.0) as (shop, _, run):
        template = shop / "services" / "reset-cart-job" / "template.yml"
        assert run.stderr is not None
        for line in run.stderr:  # phase 1 is under way: the jobs' templates were read when doit started
            if line.startswith("checkout-api: creating"):
                break
        template.write_text(template.read_text().replace("Description:", "Description: during the run,"))
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, out + err
    sent = moto.client().get_template(StackName="reset-cart-job-dev")["TemplateBody"]
    assert "during the run" not in json.dumps(sent)
    assert (
        doit(shop, "plan").stdout.splitlines()[-1]
        == "  reset-cart-job         deploys: changed files: template.yml"
    )


def test_values_read_at_deploy_time_deploy_every_run(shop: Path, layer: Layer) -> None:
    template = shop / "services" / "reset-cart-job" / "template.yml"
    template.write_text(
        template.read_text().replace("Description:", "Description: '{{resolve:ssm:/shop/owner}}'\n#", 1)
    )
    phases = shop / "phases.yml"
    deploy(shop)
    layer.written()
    reason = "  reset-cart-job         deploys: {{resolve:ssm:/shop/owner}} is read when it deploys"
    assert doit(shop, "plan").stdout.splitlines()[-1] == reason
    deploy(shop)
    assert layer.written() == [("UpdateStack", "reset-cart-job-dev")]
    setting = "\nservices:\n  reset-cart-job: {deploy_time_values: ignore}\n"
    phases.write_text(phases.read_text().replace("\nservices:\n", setting, 1))
    deploy(shop)  # the setting is part of no request: only the check changes
    assert layer.written() == []


def test_services_sharing_one_folder_deploy_alone(tmp_path: Path, layer: Layer) -> None:
    """A CDK app's cdk.out holds every stack's template and a tree.json: one edit redeploys one stack."""
    out = tmp_path / "app" / "cdk.out"
    out.mkdir(parents=True)
    for name in ("Network", "Api"):
        topic = {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": f"{name}-t"}}
        (out / f"{name}.template.json").write_text(json.dumps({"Resources": {"T": topic}}))
    (out / "tree.json").write_text('{"version": "1"}')
    (tmp_path / "app" / "phases.yml").write_text(
        "app: cdk\nphases: [[network, api]]\n"
        "services:\n"
        "  network: {path: cdk.out, template: Network.template.json}\n"
        "  api: {path: cdk.out, template: Api.template.json}\n"
    )
    app = copy_app(tmp_path / "app", tmp_path / "copy")
    deploy(app)
    assert sorted(layer.written()) == [("CreateStack", "api-dev"), ("CreateStack", "network-dev")]
    (app / "cdk.out" / "tree.json").write_text('{"version": "2"}')
    template = app / "cdk.out" / "Api.template.json"
    template.write_text(template.read_text().replace("Api-t", "Api-topic"))
    deploy(app)
    assert layer.written() == [("UpdateStack", "api-dev")]
