"""What a run prints as plain lines, and what it records: the run record is how workers' events reach it."""

from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path

import pytest
from doit.task import Task

from phasedoit import runrecord
from phasedoit.errors import PhasedoitError
from phasedoit.reporter import progress_mode, run_services
from phasedoit.runrecord import Follower, Record, Recorder
from phasedoit.runstate import Event, RunState, fold, line, not_started
from phasedoit.stack import Packaging, StackEvent, Verdict
from tests.conftest import Moto, doit
from tests.faults import Layer
from tests.sample import doit_merged, failing, last_run, shop

RUN: Event = {
    "t": 100.0,
    "event": "run",
    "app": "shop",
    "stage": "dev",
    "run": "0123456789abcdef",
    "verb": "deploy",
    "phases": [
        {"label": "phase 1 'api'", "services": [{"service": "users-api", "upstreams": []}]},
        {
            "label": "phase 2",
            "services": [
                {"service": "orders-api", "upstreams": ["users-api"]},
                {"service": "billing-job", "upstreams": ["users-api"]},
            ],
        },
        {"label": "phase 3", "services": [{"service": "audit-job", "upstreams": ["billing-job"]}]},
    ],
}


def event(t: float, kind: str, service: str = "", **fields: object) -> Event:
    return {"t": t, "event": kind, **({"service": service} if service else {}), **fields}


def test_each_event_as_a_plain_line() -> None:
    created = {"action": "created", "stack": "users-api-dev", "seconds": 3.21}
    resource = {"logical_id": "Fn", "type": "AWS::Lambda::Function", "status": "CREATE_FAILED"}
    assert [
        line(event(1, "started", "users-api", verb="deploy", reasons=["never deployed", "forced"])),
        line(event(1, "started", "users-api", verb="deploy", reasons=[])),
        line(event(1, "started", "users-api", verb="remove", reasons=[])),
        line(event(1, "message", "users-api", text="creating users-api-dev")),
        line(event(1, "resource", "users-api", **resource, reason="Role is invalid", timestamp="")),
        line(event(1, "packaging", "users-api", text="uploading 2 artifacts (1.2 MB)")),
        line(event(1, "packaged", "users-api", text="uploaded 2 artifacts")),
        line(event(1, "finished", "users-api", **created)),
        line(event(1, "finished", "users-api", action="removed", stack="users-api-dev", seconds=1.0)),
        line(event(1, "finished", "users-api", action="gone", stack="users-api-dev", seconds=0.1)),
        line(event(1, "skipped", "users-api", phase="phase 1", reason="up to date")),
        line(
            event(1, "skipped", "users-api", phase="phase 1", reason="Serverless services deploy to AWS only")
        ),
        line(event(1, "failed", "users-api", message="No export named dev-X found.\nsecond line")),
        line(event(1, "not started", "users-api", reason="orders-api failed")),
    ] == [
        ("out", "users-api: deploying (never deployed; forced)"),
        None,
        None,
        ("err", "users-api: creating users-api-dev"),
        ("err", "users-api: Fn (AWS::Lambda::Function) CREATE_FAILED: Role is invalid"),
        ("err", "users-api: uploading 2 artifacts (1.2 MB)"),
        None,  # the end of packaging moves the board on; its steps were said
        ("err", "users-api: created users-api-dev in 3.2s"),
        ("err", "users-api: removed users-api-dev"),
        ("err", "users-api: users-api-dev is already gone"),
        ("out", "users-api: up to date"),
        ("out", "users-api: skipped (Serverless services deploy to AWS only)"),
        ("out", "users-api: failed: No export named dev-X found."),
        None,
    ]


def test_a_run_as_its_events_tell_it() -> None:
    state = RunState()
    for item in [
        RUN,
        event(101, "started", "users-api", verb="deploy", reasons=["never deployed"]),
        event(
            101.5,
            "resource",
            "users-api",
            logical_id="T",
            type="AWS::SNS::Topic",
            status="CREATE_IN_PROGRESS",
        ),
    ]:
        state.apply(item)
    assert state.footer(102.25) == "0/4 done, 1 deploying, 3 waiting · 2.2s"
    assert state.services["users-api"].latest == "T (AWS::SNS::Topic) CREATE_IN_PROGRESS"
    for item in [
        event(103, "finished", "users-api", action="created", stack="users-api-dev", seconds=2.0),
        event(103.5, "started", "orders-api", verb="deploy", reasons=["changed files: template.yml"]),
        event(103.5, "started", "billing-job", verb="deploy", reasons=["forced"]),
        event(104, "finished", "orders-api", action="updated", stack="orders-api-dev", seconds=0.5),
    ]:
        state.apply(item)
    assert state.footer(104.25) == "2/4 done, 1 deploying, 1 waiting · 4.2s"
    state.apply(
        event(105, "failed", "billing-job", message="Fn (AWS::Lambda::Function): bad [ROLLBACK_COMPLETE]")
    )
    assert state.footer(105) == "3/4 done, 1 waiting, 1 failed · 5.0s"
    assert not_started(state) == ["not started because billing-job failed: audit-job"]
    state.apply(event(105.1, "not started", "audit-job", reason="billing-job failed"))
    state.apply(event(105.3, "end", seconds=5.3))
    assert state.summary(999) == "2 deployed, 1 failed, 1 not started (5.3s)"
    assert [(s.name, s.state, s.seconds) for s in state.services.values()] == [
        ("users-api", "created", 2.0),
        ("orders-api", "updated", 0.5),
        ("billing-job", "failed", 1.5),
        ("audit-job", "not started", None),
    ]


def test_an_interrupted_run() -> None:
    state = fold([RUN, event(101, "started", "users-api", verb="deploy", reasons=["x"]), event(102, "end")])
    assert state.summary(999) == "1 interrupted (2.0s)"
    assert not_started(state) == []  # nothing failed: the summary's count says it


@pytest.mark.parametrize(
    ("environ", "terminal", "mode"),
    [
        ({}, True, "live"),
        ({}, False, "plain"),
        ({"CI": "true"}, True, "plain"),
        ({"CI": "false"}, True, "live"),
        ({"TERM": "dumb"}, True, "plain"),
        ({"CI": "1", "PHASEDOIT_PROGRESS": "live"}, False, "live"),
        ({"PHASEDOIT_PROGRESS": "plain"}, True, "plain"),
    ],
)
def test_which_progress(environ: dict[str, str], terminal: bool, mode: str) -> None:
    class Stream:
        def isatty(self) -> bool:
            return terminal

    assert progress_mode(environ, Stream()) == mode


def test_a_wrong_progress_setting_is_one_line(tmp_path: Path, aws_env: dict[str, str], moto: Moto) -> None:
    app = shop(tmp_path)
    result = doit(app, "-n", "4", "deploy", env={**aws_env, "PHASEDOIT_PROGRESS": "fancy"})
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "PHASEDOIT_PROGRESS: expected 'plain' or 'live', got 'fancy'\n",
    )
    with pytest.raises(PhasedoitError):
        progress_mode({"PHASEDOIT_PROGRESS": "Live"}, None)


def _append_many(path: str, writer: int) -> None:
    for i in range(200):
        runrecord.append(path, {"event": "message", "service": f"s{writer}", "text": f"{i} " + "x" * 900})


def test_appends_of_concurrent_processes_stay_whole_lines(tmp_path: Path) -> None:
    record = Record(str(tmp_path / "runs" / "dev" / "r.jsonl"), "shop", "dev", "r")
    runrecord.start(record, {"event": "run"})
    spawn = multiprocessing.get_context("spawn")  # as doit's workers start on macOS and Windows
    writers = [spawn.Process(target=_append_many, args=(record.path, w)) for w in range(4)]
    follower = Follower(record.path)
    for writer in writers:
        writer.start()
    seen = follower.read()
    for writer in writers:
        writer.join(60)
    seen += follower.read()
    follower.close()
    assert len(seen) == 1 + 4 * 200
    for w in range(4):
        assert [int(e["text"].split()[0]) for e in seen if e.get("service") == f"s{w}"] == list(range(200))
    assert seen == runrecord.load(Path(record.path))


def test_a_long_event_is_cut_to_one_atomic_write(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.touch()
    reasons = ["changed files: " + "a/" * 2500, "forced"]
    assert runrecord.append(str(path), {"event": "started", "service": "s", "reasons": reasons})
    assert runrecord.append(str(path), {"event": "failed", "service": "s", "message": "é" * 5000})
    lines = path.read_bytes().splitlines(keepends=True)
    assert [len(line) <= runrecord.LINE_LIMIT for line in lines] == [True, True]
    started, failed = (json.loads(line) for line in lines)
    assert started["reasons"][0].startswith("changed files: a/a/")
    assert started["reasons"][0].endswith("…")
    assert started["reasons"][1] == "forced"
    assert failed["message"].startswith("éé")
    assert failed["message"].endswith("…")


def test_a_record_keeps_the_last_runs_and_is_found_by_its_id(tmp_path: Path) -> None:
    state = tmp_path / ".phasedoit"
    for i in range(runrecord.KEEP + 3):  # ten a second: each run's file name still says which came first
        path = runrecord.record_path(state, "dev", f"{i:04d}{'f' * 28}", 1_700_000_000 + i / 10)
        runrecord.start(Record(str(path), "shop", "dev", f"{i:04d}"), {"event": "run"})
    kept = runrecord.runs(state, "dev")
    assert len(kept) == runrecord.KEEP
    assert kept[0].name == "20231114T221320.300Z-0003ffff.jsonl"
    assert [p.name[:19] for p in kept[6:9]] == [
        "20231114T221320.900",
        "20231114T221321.000",
        "20231114T221321.100",
    ]
    assert runrecord.find(state, "dev", None) == kept[-1]
    assert runrecord.find(state, "dev", "0004") == kept[1]
    assert runrecord.find(state, "dev", "20231114T221320.4") == kept[1]
    with pytest.raises(PhasedoitError) as e:
        runrecord.find(state, "dev", "00")
    assert str(e.value) == "--run 00: 50 runs of stage dev have such an id: give more of it"
    with pytest.raises(PhasedoitError) as e:
        runrecord.find(state, "dev", "beef")
    assert str(e.value) == "--run beef: no recorded run of stage dev has that id (see .phasedoit/runs/dev/)"
    with pytest.raises(PhasedoitError) as e:
        runrecord.find(state, "prod", None)
    assert str(e.value) == "no run of stage prod recorded in .phasedoit/runs/prod/ (run `doit deploy` first)"


def test_without_a_record_a_worker_says_its_lines_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    recorder = Recorder(None, "users-api")
    recorder.emit("started", phase="phase 1", verb="deploy", reasons=["forced"])
    recorder.say("creating users-api-dev")
    recorder.progress(StackEvent("users-api-dev", "AWS::CloudFormation::Stack", "CREATE_COMPLETE"))
    recorder.progress(Packaging("uploading 1 artifact", done=False))
    recorder.progress(Packaging("packaged: 1 artifact uploaded", done=True))  # no line of its own
    assert capfd.readouterr() == (
        "",
        "users-api: creating users-api-dev\n"
        "users-api: users-api-dev (AWS::CloudFormation::Stack) CREATE_COMPLETE\n"
        "users-api: uploading 1 artifact\n",
    )


EVENT = re.compile(r"[\w-]+: (\S+) \((AWS::[\w:]+)\) ([A-Z_]+)(: .*)?")


def said(lines: list[str], service: str) -> list[str]:
    return [text for text in lines if text.startswith(f"{service}: ")]


def in_order(lines: list[str], service: str) -> None:
    """A first deploy's lines: why, what it uploads, creating; the stack's events from its start to its
    end, each resource created (begun, then done); the outcome."""
    stack = f"{service}: {service}-dev (AWS::CloudFormation::Stack)"
    events = [text for text in lines if EVENT.fullmatch(text)]
    said_before = lines[: lines.index(events[0])]
    assert said_before[0] == f"{service}: deploying (never deployed)"
    assert said_before[-1] == f"{service}: creating {service}-dev"
    assert all(text.startswith(f"{service}: uploading ") for text in said_before[1:-1])
    assert lines[len(said_before) : len(said_before) + len(events)] == events  # no other line among them
    assert (events[0], events[-1]) == (f"{stack} CREATE_IN_PROGRESS", f"{stack} CREATE_COMPLETE")
    resources = [EVENT.fullmatch(text) for text in events[1:-1]]
    begun = [m[1] for m in resources if m and m[3] == "CREATE_IN_PROGRESS"]
    done = [m[1] for m in resources if m and m[3] == "CREATE_COMPLETE"]
    assert sorted(begun) == sorted(done)
    assert len(begun) >= 1
    assert lines[len(said_before) + len(events) :] == [f"{service}: created {service}-dev in Ns"]


def _lines(output: str) -> list[str]:
    return [
        re.sub(r" in \d+\.\ds$", " in Ns", re.sub(r"\(\d+\.\ds\)$", "(Ns)", text))
        for text in output.splitlines()
    ]


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_plain_lines_in_order_for_each_service(tmp_path: Path, layer: Layer, pool: str) -> None:
    app = shop(tmp_path)
    result = doit_merged(app, "-n", "4", "-P", pool, "deploy")
    assert result.returncode == 0, result.stdout
    assert "\x1b" not in result.stdout  # no colour, no cursor moves
    assert "\r" not in result.stdout  # no line drawn over
    lines = _lines(result.stdout)
    assert lines[0] == "phase 1 'api'"
    assert lines.index("phase 2 'jobs'") == 1 + len(said(lines, "checkout-api"))  # phase 1 first, whole
    for service in ("checkout-api", "confirmation-job", "reset-cart-job"):  # the jobs' lines mix
        in_order(said(lines, service), service)
    assert (
        len(lines)
        == 2 + sum(len(said(lines, s)) for s in ("checkout-api", "confirmation-job", "reset-cart-job")) + 1
    )
    assert lines[-1] == "3 deployed (Ns)"
    # the record tells the same run
    record = last_run(app)
    kinds = [e["event"] for e in record if e.get("service") == "checkout-api"]
    assert (kinds[0], kinds[-1]) == ("started", "finished")
    assert len(kinds) == len(said(lines, "checkout-api")) + 1  # `packaged`: a step of the board, not a line
    assert (record[0]["event"], record[-1]["event"]) == ("run", "end")


def test_the_record_of_a_failed_deploy_with_continue(tmp_path: Path, layer: Layer) -> None:
    app = failing(shop(tmp_path))
    result = doit_merged(app, "-n", "4", "-c", "deploy")
    assert result.returncode == 2  # doit's status for a run that went on after a failure
    lines = _lines(result.stdout)
    failure = "No export named dev-CartTableArn found."
    assert f"confirmation-job: failed: {failure} [ROLLBACK_COMPLETE]" in lines
    rollback = f"{failure} Rollback requested by user."  # as the stack's event says it
    assert (
        f"confirmation-job: confirmation-job-dev (AWS::CloudFormation::Stack) ROLLBACK_IN_PROGRESS: {rollback}"
        in lines
    )
    assert lines[-3:] == [
        f"confirmation-job: {failure} [ROLLBACK_COMPLETE]",
        "not started because confirmation-job failed: reset-cart-job",
        "1 deployed, 1 failed, 1 not started (Ns)",
    ]
    record = last_run(app)
    assert record[0] | {"t": 0, "run": ""} == {
        "t": 0,
        "event": "run",
        "app": "shop",
        "stage": "dev",
        "run": "",
        "verb": "deploy",
        "schedule": "phases",
        "phases": [
            {
                "label": "phase 1 'api'",
                "services": [
                    {"service": "checkout-api", "upstreams": [], "after": []},
                    {"service": "confirmation-job", "upstreams": [], "after": []},
                ],
            },
            {
                "label": "phase 2",
                "services": [{"service": "reset-cart-job", "upstreams": ["checkout-api"], "after": []}],
            },
        ],
    }
    by_service = {
        name: [
            {k: v for k, v in e.items() if k not in ("t", "service", "timestamp")}
            for e in record
            if e.get("service") == name
        ]
        for name in ("checkout-api", "confirmation-job", "reset-cart-job")
    }
    created = by_service["checkout-api"].pop()
    assert created.pop("seconds") > 0
    job = {"logical_id": "confirmation-job-dev", "type": "AWS::CloudFormation::Stack"}
    deployed = by_service.pop("checkout-api")
    assert deployed[:4] == [
        {"event": "started", "phase": "phase 1 'api'", "verb": "deploy", "reasons": ["never deployed"]},
        {"event": "packaging", "text": "uploading src/ (485 B)"},
        {"event": "packaged", "text": "packaged: 1 artifact uploaded"},
        {"event": "message", "text": "creating checkout-api-dev"},
    ]
    assert {e["event"] for e in deployed[4:]} == {"resource"}  # its stack's events, after `creating`
    assert by_service == {
        "confirmation-job": [
            {"event": "started", "phase": "phase 1 'api'", "verb": "deploy", "reasons": ["never deployed"]},
            {"event": "message", "text": "creating confirmation-job-dev"},
            {"event": "resource", **job, "status": "CREATE_IN_PROGRESS", "reason": "User Initiated"},
            {"event": "resource", **job, "status": "ROLLBACK_IN_PROGRESS", "reason": rollback},
            {"event": "resource", **job, "status": "ROLLBACK_COMPLETE", "reason": ""},
            {"event": "failed", "message": f"{failure} [ROLLBACK_COMPLETE]"},
        ],
        "reset-cart-job": [{"event": "not started", "reason": "confirmation-job failed"}],
    }
    assert created == {"event": "finished", "action": "created", "stack": "checkout-api-dev"}
    assert record[-1]["event"] == "end"
    assert fold(record).summary(0).startswith("1 deployed, 1 failed, 1 not started (")


def test_list_and_plan_record_no_run(tmp_path: Path, aws_env: dict[str, str]) -> None:
    app = shop(tmp_path)
    assert doit(app, "list").returncode == 0
    assert doit(app, "plan").returncode == 0
    assert runrecord.runs(app / ".phasedoit", "dev") == []


def test_a_run_that_cannot_be_recorded_still_says_everything(tmp_path: Path, layer: Layer) -> None:
    app = shop(tmp_path)
    (app / ".phasedoit").mkdir()
    (app / ".phasedoit" / "runs").write_text("not a folder")
    result = doit(app, "-n", "4", "deploy")
    assert result.returncode == 0, result.stderr
    shown = _lines(result.stdout)
    assert shown[:3] == ["phase 1 'api'", "checkout-api: deploying (never deployed)", "phase 2 'jobs'"]
    assert sorted(shown[3:5]) == [
        "confirmation-job: deploying (never deployed)",
        "reset-cart-job: deploying (never deployed)",
    ]
    assert shown[5:] == ["3 deployed (Ns)"]
    said = _lines(result.stderr)
    assert (
        said[0]
        == f"warning: cannot record this run in {app / '.phasedoit' / 'runs' / 'dev'}: Not a directory"
    )
    assert "checkout-api: checkout-api-dev (AWS::CloudFormation::Stack) CREATE_COMPLETE" in said
    assert "reset-cart-job: created reset-cart-job-dev in Ns" in said


def test_a_run_shows_the_services_of_the_tasks_asked_for_and_of_those_they_wait_for() -> None:
    def service(name: str, phase: str, *after: str) -> Task:
        return Task(f"deploy:{name}", None, task_dep=list(after), meta={"phasedoit": Verdict(name, phase)})

    tasks = {
        task.name: task
        for task in [
            service("a", "phase 1"),
            service("b", "phase 1"),
            Task("deploy-1", None, task_dep=["deploy:a", "deploy:b"]),
            service("c", "phase 2", "deploy-1"),
            service("d", "phase 2", "deploy-1"),
            Task("deploy", None, task_dep=["deploy:a", "deploy:b", "deploy:c", "deploy:d"]),
        ]
    }
    assert [t.name for t in run_services(tasks, ["deploy:c"])] == ["deploy:a", "deploy:b", "deploy:c"]
    assert [t.name for t in run_services(tasks, ["deploy"])] == [
        "deploy:a",
        "deploy:b",
        "deploy:c",
        "deploy:d",
    ]
    assert run_services(tasks, ["deploy-1"]) == [tasks["deploy:a"], tasks["deploy:b"]]
