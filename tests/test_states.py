"""Every stack status and refusal as CloudFormation means it: doit as a user runs it, against the fault layer.

Each scenario asserts the calls phasedoit made (the layer records them), its one-line message and its exit
code. The app is one service, `api`, whose stack is api-dev.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from phasedoit import cloudformation, states
from phasedoit.changes import Fingerprint
from phasedoit.cloudformation import Waiting
from phasedoit.config import load_config
from phasedoit.deployers import cloudformation as cloudformation_deployer
from phasedoit.errors import PhasedoitError
from phasedoit.planning import plan_stage
from phasedoit.stack import Target
from tests.conftest import copy_app, doit
from tests.faults import Layer

TEMPLATE = {
    "Parameters": {"Stage": {"Type": "String"}},
    "Resources": {
        "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": {"Fn::Sub": "${Stage}-tiny"}}},
        "Queue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {"QueueName": {"Fn::Sub": "${Stage}-tiny"}, "VisibilityTimeout": 30},
        },
    },
    "Outputs": {
        "TopicArn": {"Value": {"Ref": "Topic"}, "Export": {"Name": {"Fn::Sub": "${Stage}-TinyTopicArn"}}}
    },
}
CALLS = ("CreateStack", "UpdateStack", "DeleteStack", "CancelUpdateStack", "ContinueUpdateRollback")
OURS = {"phasedoit:app": "tiny", "phasedoit:stage": "dev", "phasedoit:service": "api"}


@pytest.fixture
def app(tmp_path: Path, layer: Layer) -> Path:
    """The one-service app, not deployed yet."""
    source = tmp_path / "source"
    (source / "services" / "api").mkdir(parents=True)
    (source / "phases.yml").write_text("app: tiny\nphases:\n  - [api]\n")
    (source / "services" / "api" / "template.json").write_text(json.dumps(TEMPLATE))
    return copy_app(source, tmp_path / "tiny")


@pytest.fixture
def tiny(app: Path, layer: Layer) -> Path:
    """The app with its stack, deployed in this process by phasedoit's deployer (a doit run costs seconds)."""
    plan = plan_stage(load_config(app / "phases.yml"), "dev", dict(os.environ)).services["api"]
    fingerprint = Fingerprint(dict(plan.files), plan.settings, {}).value  # as doit's check computes it
    deployed = cloudformation_deployer.deploy(plan, Target("us-east-1", layer.url), fingerprint, print)
    assert deployed.action == "created"
    assert calls(layer) == [("CreateStack", "api-dev", "ok")]
    return app


def run(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return doit(app, "-n", "2", *(args or ("deploy",)))


def calls(layer: Layer) -> list[tuple[str, str, str]]:
    """The writes since the last look: (action, stack, outcome)."""
    found = layer.outcomes(*CALLS)
    layer.calls.clear()
    return found


def edit(app: Path, timeout: int = 60) -> None:
    """A change of the queue: an update that changes one resource."""
    changed = json.loads(json.dumps(TEMPLATE))
    changed["Resources"]["Queue"]["Properties"]["VisibilityTimeout"] = timeout
    (app / "services" / "api" / "template.json").write_text(json.dumps(changed))


STACK_EVENT = re.compile(r"[\w-]+: \S+ \(AWS::[\w:]+\) [A-Z_]+(: .*)?")


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What a run said on stderr, its timings masked, less its stack events' lines (tests/test_reporter.py)."""
    said = [line for line in result.stderr.splitlines() if not STACK_EVENT.fullmatch(line)]
    return [re.sub(r" in [0-9.]+s$", " in <t>", line) for line in said]


# ---- the status of a stack, each with what phasedoit does with it -------------------------------------


def test_an_update_that_rolled_back_leaves_the_previous_template_deployed(tiny: Path, layer: Layer) -> None:
    layer.resource_fails("api-dev", "UpdateStack", "Queue", "Resource handler returned message: Queue busy")
    edit(tiny)
    result = run(tiny)
    assert (result.returncode, errors(result)) == (
        1,
        ["api: updating api-dev", "api: Queue (AWS::SQS::Queue): Resource handler returned message: Queue busy [UPDATE_ROLLBACK_COMPLETE]"],
    )  # fmt: skip
    assert calls(layer) == [("UpdateStack", "api-dev", "ok")]
    # the template reverted: the stack runs it already, its fingerprint tag says so
    edit(tiny, 30)
    result = run(tiny)
    assert (result.returncode, result.stdout.splitlines()[1], errors(result)) == (0, "api: up to date", [])
    result = run(tiny, "deploy", "force=api")
    assert (result.returncode, errors(result)) == (
        0,
        ["api: updating api-dev", "api: unchanged api-dev in <t>"],
    )
    assert calls(layer) == [("UpdateStack", "api-dev", "ValidationError: No updates are to be performed.")]


def test_an_import_that_rolled_back_is_deployed(tiny: Path, layer: Layer) -> None:
    layer.set_status("api-dev", "IMPORT_ROLLBACK_COMPLETE")
    edit(tiny)
    result = run(tiny)
    assert (result.returncode, errors(result)) == (
        0,
        ["api: updating api-dev", "api: updated api-dev in <t>"],
    )
    assert calls(layer) == [("UpdateStack", "api-dev", "ok")]


def test_a_stack_deleted_by_someone_else_while_phasedoit_waits_is_created(tiny: Path, layer: Layer) -> None:
    layer.other_actor("api-dev", "DELETE_IN_PROGRESS", 0.3)
    result = run(tiny)
    assert (result.returncode, errors(result)) == (
        0,
        [
            "api: waiting for api-dev: another operation is in progress (DELETE_IN_PROGRESS)",
            "api: creating api-dev",
            "api: created api-dev in <t>",
        ],
    )
    assert calls(layer) == [("CreateStack", "api-dev", "ok")]


def test_another_actors_update_is_waited_for_once(tiny: Path, layer: Layer) -> None:
    layer.other_actor("api-dev", "UPDATE_IN_PROGRESS", 0.3)
    edit(tiny)
    result = run(tiny)
    assert (result.returncode, errors(result)) == (
        0,
        [
            "api: waiting for api-dev: another operation is in progress (UPDATE_IN_PROGRESS)",
            "api: updating api-dev",
            "api: updated api-dev in <t>",
        ],
    )
    assert calls(layer) == [("UpdateStack", "api-dev", "ok")]


def test_another_actors_operation_that_outlasts_the_wait(
    tiny: Path, layer: Layer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHASEDOIT_STACK_TIMEOUT", "0.5")
    layer.other_actor("api-dev", "UPDATE_IN_PROGRESS", 30)
    edit(tiny)
    result = run(tiny)
    assert (result.returncode, errors(result)) == (
        1,
        [
            "api: waiting for api-dev: another operation is in progress (UPDATE_IN_PROGRESS)",
            "api: api-dev is still UPDATE_IN_PROGRESS after 0.5 s (PHASEDOIT_STACK_TIMEOUT): another operation is in progress; nothing was done",
        ],
    )  # fmt: skip
    assert calls(layer) == []  # never another actor's update cancelled


def test_another_actors_change_set_is_never_deleted(app: Path, layer: Layer) -> None:
    layer.review_in_progress("api-dev", {"owner": "someone else"})
    result = run(app)
    assert (result.returncode, errors(result)) == (
        1,
        ["api: api-dev is REVIEW_IN_PROGRESS: another actor's change set creates it; execute or delete that change set first"],
    )  # fmt: skip
    assert calls(layer) == []


def test_a_change_set_stack_of_its_own_is_created_again(app: Path, layer: Layer) -> None:
    layer.review_in_progress("api-dev", OURS)
    result = run(app)
    assert (result.returncode, errors(result)) == (
        0,
        [
            "api: deleting api-dev (REVIEW_IN_PROGRESS) to create it again",
            "api: creating api-dev",
            "api: created api-dev in <t>",
        ],
    )
    assert calls(layer) == [("DeleteStack", "api-dev", "ok"), ("CreateStack", "api-dev", "ok")]


def test_an_update_that_outlasts_the_wait_is_cancelled(
    tiny: Path, layer: Layer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHASEDOIT_STACK_TIMEOUT", "0.5")
    layer.duration(30, "UpdateStack")
    edit(tiny)
    result = run(tiny)
    assert (result.returncode, errors(result)) == (
        1,
        [
            "api: updating api-dev",
            "api: api-dev was still UPDATE_IN_PROGRESS after 0.5 s (PHASEDOIT_STACK_TIMEOUT): the update is cancelled, CloudFormation rolls it back",
        ],
    )  # fmt: skip
    assert calls(layer) == [("UpdateStack", "api-dev", "ok"), ("CancelUpdateStack", "api-dev", "ok")]
    layer.duration(0, "UpdateStack")
    result = run(tiny)
    assert (result.returncode, result.stdout.splitlines()[1]) == (
        0,
        "api: deploying (last update rolled back)",
    )
    assert calls(layer) == [("UpdateStack", "api-dev", "ok")]


def test_a_rollback_that_failed_names_the_stuck_resources_and_the_way_out(tiny: Path, layer: Layer) -> None:
    layer.resource_fails(
        "api-dev", "UpdateStack", "Queue", "Queue busy", rollback_fails="Topic was deleted", rollback_resource="Topic"
    )  # fmt: skip
    edit(tiny)
    stuck = (
        "api: api-dev is UPDATE_ROLLBACK_FAILED: Topic could not be rolled back (Topic: Topic was deleted);"
        " fix that, then run `aws cloudformation continue-update-rollback --stack-name api-dev` and deploy again"
    )
    result = run(tiny)
    assert (result.returncode, errors(result)) == (1, ["api: updating api-dev", stuck])
    assert calls(layer) == [("UpdateStack", "api-dev", "ok")]
    again = run(tiny)  # nothing to do but say it again
    assert (again.returncode, errors(again)) == (1, [stuck])
    assert calls(layer) == []


def test_a_delete_that_failed_names_the_resources_and_the_retry(tiny: Path, layer: Layer) -> None:
    layer.resource_fails("api-dev", "DeleteStack", "Topic", "Topic has subscriptions")
    result = run(tiny, "remove")
    assert (result.returncode, errors(result)) == (
        1,
        [
            "api: deleting api-dev",
            "api: api-dev is DELETE_FAILED: Topic could not be deleted (Topic: Topic has subscriptions); remove what blocks that and remove again, or keep them: `aws cloudformation delete-stack --stack-name api-dev --retain-resources Topic`",
        ],
    )  # fmt: skip
    assert calls(layer) == [("DeleteStack", "api-dev", "ok")]
    layer.client().delete_stack(StackName="api-dev", RetainResources=["Topic"])  # the way out, as said
    result = run(tiny, "remove")
    assert (result.returncode, errors(result)) == (0, ["api: api-dev is already gone"])


def test_a_failed_create_names_its_first_failed_resource_then_is_created_again(
    app: Path, layer: Layer
) -> None:
    layer.resource_fails("api-dev", "CreateStack", "Queue", "Resource handler returned message: quota")
    result = run(app)
    assert (result.returncode, errors(result)) == (
        1,
        ["api: creating api-dev", "api: Queue (AWS::SQS::Queue): Resource handler returned message: quota [ROLLBACK_COMPLETE]"],
    )  # fmt: skip
    assert calls(layer) == [("CreateStack", "api-dev", "ok")]
    result = run(app)
    assert result.returncode == 0
    assert errors(result)[0] == "api: deleting api-dev (ROLLBACK_COMPLETE) to create it again"
    assert calls(layer) == [("DeleteStack", "api-dev", "ok"), ("CreateStack", "api-dev", "ok")]


def test_a_stack_whose_create_never_started_is_created_again(tiny: Path, layer: Layer) -> None:
    layer.set_status("api-dev", "CREATE_PENDING")  # moto's, after refusing a create
    result = run(tiny)
    assert result.returncode == 0
    assert errors(result)[0] == "api: deleting api-dev (CREATE_PENDING) to create it again"
    assert calls(layer) == [("DeleteStack", "api-dev", "ok"), ("CreateStack", "api-dev", "ok")]


def test_an_unknown_status_is_named_and_nothing_is_done(tiny: Path, layer: Layer) -> None:
    layer.set_status("api-dev", "UPDATE_PAUSED")
    result = run(tiny)
    assert (result.returncode, errors(result)) == (
        1,
        ["api: api-dev is UPDATE_PAUSED, a status phasedoit does not know: nothing was done"],
    )
    assert calls(layer) == []


def test_a_wrong_stack_timeout_stops_the_run_before_anything(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHASEDOIT_STACK_TIMEOUT", "soon")
    result = run(app)
    assert (result.returncode, errors(result)) == (
        1,
        ["deploy: PHASEDOIT_STACK_TIMEOUT: expected a positive number, got 'soon'"],
    )


# ---- refusals -----------------------------------------------------------------------------------------


def test_an_exporter_in_use_is_not_deleted(tiny: Path, layer: Layer) -> None:
    value = {"Fn::ImportValue": "dev-TinyTopicArn"}
    param = {"Type": "AWS::SSM::Parameter", "Properties": {"Name": "/t", "Type": "String", "Value": value}}
    layer.client().create_stack(StackName="another-app", TemplateBody=json.dumps({"Resources": {"P": param}}))
    calls(layer)
    result = run(tiny, "remove")  # phasedoit asks ListImports first
    assert (result.returncode, errors(result)) == (
        1,
        ["remove: api's export dev-TinyTopicArn is imported by another-app, outside tiny: remove that import first; nothing was removed"],
    )  # fmt: skip
    assert calls(layer) == []
    # an import made after that look: CloudFormation refuses the delete itself, and phasedoit says why
    cfn = cloudformation.client(Target("us-east-1", layer.url))
    with pytest.raises(PhasedoitError) as e:
        cloudformation.remove_stack(cfn, "api-dev", OURS, print, Waiting(first=0.05))
    assert (
        str(e.value)
        == "Export dev-TinyTopicArn cannot be deleted as it is in use by another-app [CREATE_COMPLETE]"
    )
    assert calls(layer) == [("DeleteStack", "api-dev", "ok")]


# ---- the one lines, from literal events -------------------------------------------------------------


def event(logical: str, status: str, reason: str = "", kind: str = "AWS::SQS::Queue") -> dict[str, str]:
    return {
        "StackName": "api-dev",
        "LogicalResourceId": logical,
        "ResourceType": kind,
        "ResourceStatus": status,
        "ResourceStatusReason": reason,
    }


@pytest.mark.parametrize(
    ("status", "action"),
    [
        ("CREATE_COMPLETE", states.UPDATE), ("UPDATE_ROLLBACK_COMPLETE", states.UPDATE),
        ("IMPORT_ROLLBACK_COMPLETE", states.UPDATE), ("UPDATE_FAILED", states.UPDATE),
        ("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", states.WAIT), ("DELETE_IN_PROGRESS", states.WAIT),
        ("REVIEW_IN_PROGRESS", states.REVIEW), ("ROLLBACK_FAILED", states.RECREATE),
        ("CREATE_PENDING", states.RECREATE), ("IMPORT_ROLLBACK_FAILED", states.STUCK_ROLLBACK),
        ("DELETE_FAILED", states.DELETE_FAILED), ("DELETE_COMPLETE", states.UNKNOWN), ("", states.UNKNOWN),
    ],
)  # fmt: skip
def test_what_each_status_means(status: str, action: str) -> None:
    assert states.action(status) == action


def test_a_failure_is_the_first_failed_resource_else_the_stack_reason() -> None:
    ran = [
        event("api-dev", "UPDATE_IN_PROGRESS", "User Initiated"),
        event("Queue", "UPDATE_FAILED", "first"),
        event("Topic", "UPDATE_FAILED", "second", "AWS::SNS::Topic"),
    ]
    assert (
        states.failure("UPDATE_ROLLBACK_COMPLETE", ran, None)
        == "Queue (AWS::SQS::Queue): first [UPDATE_ROLLBACK_COMPLETE]"
    )
    refused = [
        event("api-dev", "CREATE_IN_PROGRESS", "User Initiated"),
        event("api-dev", "ROLLBACK_IN_PROGRESS", "No export named dev-X found. Rollback requested by user."),
        event("api-dev", "ROLLBACK_COMPLETE"),
    ]
    assert (
        states.failure("ROLLBACK_COMPLETE", refused, None)
        == "No export named dev-X found. [ROLLBACK_COMPLETE]"
    )
    assert states.failure("ROLLBACK_COMPLETE", [], "its reason") == "its reason [ROLLBACK_COMPLETE]"
    assert states.failure("ROLLBACK_COMPLETE", [], None) == "failed [ROLLBACK_COMPLETE]"
