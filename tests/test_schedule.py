"""Scheduling: `schedule: dependencies`, `after:`, threads with one client per target, and reading the app's
stacks without listing a whole region. Order is asserted from the fault layer's call times."""

from __future__ import annotations

import gc
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phasedoit import aws, cloudformation, graph, timeline
from phasedoit.config import Phase, load_config
from phasedoit.errors import PhasedoitError
from phasedoit.planning import plan_stage
from phasedoit.stack import Target
from phasedoit.templates import Dependencies
from tests.conftest import REPO, Moto, copy_app, doit, sample_app
from tests.faults import Call, Layer, running_layer
from tests.sample import last_state

SLOW_API = """Parameters:
  Stage: {Type: String}
Resources:
  Audit:
    Type: AWS::SSM::Parameter
    Properties: {Name: !Sub '/${Stage}/slow-api', Type: String, Value: slow}
"""
# checkout-api and an unrelated slow service first; then the jobs, which import from checkout-api only
PHASES = """app: shop
phases:
  - name: api
    services: [checkout-api, slow-api]
  - name: jobs
    services: [confirmation-job, reset-cart-job]
"""


@pytest.fixture
def shop(tmp_path: Path, aws_env: dict[str, str]) -> Path:
    source = sample_app(tmp_path / "source")  # without its Serverless service: no Node.js needed
    (source / "services" / "slow-api").mkdir()
    (source / "services" / "slow-api" / "template.yml").write_text(SLOW_API)
    (source / "phases.yml").write_text(PHASES)
    return copy_app(source, tmp_path / "shop")


def creates(layer: Layer) -> dict[str, Call]:
    return {c.stack.removesuffix("-dev"): c for c in layer.writes() if c.action == "CreateStack"}


# ---- phases.yml ----------------------------------------------------------------------------------------


def error_of(shop: Path, text: str) -> str:
    (shop / "phases.yml").write_text(text)
    with pytest.raises(PhasedoitError) as e:
        plan_stage(load_config(shop / "phases.yml"), "dev", {})
    return str(e.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            "schedule: fast\n",
            "phases.yml: schedule: expected 'phases' or 'dependencies', got 'fast'",
        ),
        (
            "services:\n  reset-cart-job: {after: [checkout-api, nope-api]}\n",
            "phases.yml: services.reset-cart-job.after[1]: unknown service 'nope-api'",
        ),
        (
            "services:\n  reset-cart-job: {after: [checkout-api, spare-api]}\n",
            "phases.yml: services.reset-cart-job.after[1]: 'spare-api' is in no phase"
            " (add it to one, or leave it out of after:)",
        ),
        (
            "services:\n  reset-cart-job: {after: [reset-cart-job]}\n",
            "phases.yml: services.reset-cart-job.after[0]: a service cannot deploy after itself",
        ),
        (
            "services:\n  reset-cart-job: {after: slow-api}\n",
            "phases.yml: services.reset-cart-job.after: input should be a valid list, got 'slow-api'",
        ),
        (
            "services:\n  reset-cart-job: {after: [confirmation-job]}\n",
            "phases.yml: phases: reset-cart-job (phase 2 'jobs') deploys after confirmation-job (phase 2 'jobs')"
            " by services.reset-cart-job.after: move reset-cart-job to a phase after 2",
        ),
        (
            "services:\n  checkout-api: {after: [reset-cart-job]}\n",
            "phases.yml: phases: dependency cycle: checkout-api -> reset-cart-job -> checkout-api"
            " (checkout-api deploys after reset-cart-job by services.checkout-api.after,"
            " reset-cart-job imports dev-PurchasedTopicArn from checkout-api)",
        ),
    ],
)
def test_settings_of_the_schedule_are_checked(shop: Path, settings: str, message: str) -> None:
    (shop / "services" / "spare-api").mkdir()  # a service's folder, in no phase yet
    (shop / "services" / "spare-api" / "template.yml").write_text(SLOW_API.replace("slow-api", "spare-api"))
    assert error_of(shop, PHASES + settings) == message


def test_a_cycle_through_after_names_phases_yml_when_phases_are_computed(shop: Path) -> None:
    assert error_of(shop, "app: shop\nservices:\n  checkout-api: {after: [reset-cart-job]}\n") == (
        "phases.yml: phases: dependency cycle: checkout-api -> reset-cart-job -> checkout-api"
        " (checkout-api deploys after reset-cart-job by services.checkout-api.after,"
        " reset-cart-job imports dev-PurchasedTopicArn from checkout-api)"
    )


def test_the_command_line_beats_phases_yml(shop: Path) -> None:
    (shop / "phases.yml").write_text(PHASES + "schedule: dependencies\n")
    app = load_config(shop / "phases.yml")
    assert plan_stage(app, "dev", {}).schedule == "dependencies"
    assert plan_stage(app, "dev", {}, schedule="phases").schedule == "phases"
    with pytest.raises(PhasedoitError) as e:
        plan_stage(app, "dev", {}, schedule="")
    assert str(e.value) == "schedule=: expected 'phases' or 'dependencies'"


def test_after_orders_computed_phases(shop: Path) -> None:
    (shop / "phases.yml").write_text("app: shop\nservices:\n  slow-api: {after: [confirmation-job]}\n")
    plan = plan_stage(load_config(shop / "phases.yml"), "dev", {})
    assert [phase.services for phase in plan.phases] == [
        ("checkout-api",),
        ("confirmation-job", "reset-cart-job"),
        ("slow-api",),  # it imports nothing: without `after:`, it would be in the first phase
    ]
    assert plan.services["slow-api"].after == ("confirmation-job",)
    assert plan.services["slow-api"].upstreams == ()


def test_after_edges_are_drawn() -> None:
    deps = {"a": Dependencies(frozenset({"dev-A"}), frozenset()), "b": Dependencies(frozenset(), frozenset())}
    drawn = graph.build_graph(deps, {"b": ["a"]})
    phases = [Phase(1, None, ("a",)), Phase(2, None, ("b",))]
    assert graph.validate(drawn, phases) == []
    assert graph.validate(drawn, [Phase(1, None, ("a", "b"))]) == [
        "b (phase 1) deploys after a (phase 1) by services.b.after: move b to a phase after 1"
    ]
    assert '  "a" -> "b" [style=dotted, label="after"];' in graph.to_dot(drawn, phases).splitlines()
    assert "  s0 -.->|after| s1" in graph.to_mermaid(drawn, phases).splitlines()


# ---- deploying -----------------------------------------------------------------------------------------


def test_an_importer_does_not_wait_for_an_unrelated_slow_service(shop: Path, layer: Layer) -> None:
    config = shop / "phases.yml"
    config.write_text(PHASES + "services:\n  reset-cart-job: {after: [slow-api]}\n")
    layer.latency(0.3)
    layer.latency(3.0, "CreateStack", stack="slow-api-dev")
    result = doit(shop, "-n", "4", "deploy", "schedule=dependencies")
    assert result.returncode == 0, result.stderr
    done = creates(layer)
    assert sorted(done) == ["checkout-api", "confirmation-job", "reset-cart-job", "slow-api"]
    job, api, slow = done["confirmation-job"], done["checkout-api"], done["slow-api"]
    assert api.end < job.start < slow.end  # after its exporter, while the earlier phase still deploys
    assert slow.end < done["reset-cart-job"].start  # `after:` is honoured
    # no phase headers: the phases interleave, and each line names its service
    assert not [line for line in result.stdout.splitlines() if line.startswith("phase ")]
    assert result.stdout.splitlines()[-1].startswith("4 deployed (")
    # the run's record says which schedule ran, and its timeline's critical path follows it
    state = last_state(shop)
    assert (state.schedule, timeline.critical_path(state)) == ("dependencies", ["slow-api", "reset-cart-job"])
    listed = doit(shop, "list", "schedule=dependencies").stdout.splitlines()
    assert listed[2] == (
        "deploy-2   deploy phase 2 'jobs': confirmation-job (after checkout-api),"
        " reset-cart-job (after checkout-api, slow-api)"
    )


def test_a_contradiction_is_refused_in_either_schedule(shop: Path, moto: Moto) -> None:
    (shop / "phases.yml").write_text(
        PHASES.replace("[checkout-api, slow-api]", "[slow-api]") + "  - [checkout-api]\n"
    )
    for schedule in ("schedule=phases", "schedule=dependencies"):
        result = doit(shop, "-n", "4", "deploy", schedule)
        assert (result.returncode, result.stdout, result.stderr) == (
            1,
            "",
            "phases.yml: phases: confirmation-job (phase 2 'jobs') imports dev-PurchasedTopicArn from"
            " checkout-api (phase 3): move confirmation-job to a phase after 3\n"
            "phases.yml: phases: reset-cart-job (phase 2 'jobs') imports dev-PurchasedTopicArn from"
            " checkout-api (phase 3): move reset-cart-job to a phase after 3\n",
        )
    assert moto.client().describe_stacks()["Stacks"] == []


def test_one_service_deploys_what_it_waits_for_first(shop: Path, layer: Layer) -> None:
    (shop / "phases.yml").write_text(PHASES + "schedule: dependencies\n")
    result = doit(shop, "-n", "4", "deploy:confirmation-job")
    assert result.returncode == 0, result.stderr
    assert layer.written() == [("CreateStack", "checkout-api-dev"), ("CreateStack", "confirmation-job-dev")]


def test_list_and_plan_say_which_schedule(shop: Path, moto: Moto) -> None:
    listed = doit(shop, "list", "schedule=dependencies").stdout.splitlines()
    assert listed[:3] == [
        "deploy     deploy shop to stage dev: 2 phases, 4 services, each service after its upstreams",
        "deploy-1   deploy phase 1 'api': checkout-api, slow-api",
        "deploy-2   deploy phase 2 'jobs': confirmation-job (after checkout-api), reset-cart-job (after checkout-api)",
    ]
    assert doit(shop, "plan", "schedule=dependencies").stdout.splitlines()[0] == (
        "4 of 4 services would deploy (schedule: dependencies)"
    )
    wrong = doit(shop, "list", "schedule=fast")
    assert (wrong.returncode, wrong.stderr) == (
        1,
        "schedule=fast: expected 'phases' or 'dependencies'\n",
    )


# ---- threads -------------------------------------------------------------------------------------------

API = """Parameters:
  Stage: {{Type: String}}
Resources:
  Value:
    Type: AWS::SSM::Parameter
    Properties: {{Name: !Sub '/${{Stage}}/{name}', Type: String, Value: {value}}}
Outputs:
  Value:
    Value: !Ref Value
    Export: {{Name: !Sub '${{Stage}}-{name}'}}
"""


@pytest.fixture
def eight(tmp_path: Path, aws_env: dict[str, str]) -> Path:
    """Eight services that export, then two that import: eight threads at once, then two."""
    apis, jobs = [f"api-{i}" for i in range(8)], ["job-0", "job-1"]
    for name in apis:
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / "template.yml").write_text(API.format(name=name, value=name))
    for name in jobs:
        (tmp_path / "services" / name).mkdir(parents=True)
        value = "!ImportValue {Fn::Sub: '${Stage}-api-0'}"
        (tmp_path / "services" / name / "template.yml").write_text(API.format(name=name, value=value))
    (tmp_path / "phases.yml").write_text(f"app: eight\nphases: [[{', '.join(apis)}], [{', '.join(jobs)}]]\n")
    shutil.copy(REPO / "dodo.py", tmp_path / "dodo.py")
    return tmp_path


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """doit run in this process, as `doit` runs it: its loader sets SIGTERM and SIGINT handlers, imports
    `dodo` and leaves what was alive after planning out of the collector's passes (frozen)."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.delitem(sys.modules, "dodo", raising=False)
    yield
    gc.unfreeze()
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    sys.modules.pop("dodo", None)


@pytest.mark.usefixtures("in_process")
def test_threads_share_one_client_and_ride_out_throttling(
    eight: Path, layer: Layer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from doit.cmd_base import DodoTaskLoader
    from doit.doit_cmd import DoitMain

    stacks = [f"{name}-dev" for name in [*(f"api-{i}" for i in range(8)), "job-0", "job-1"]]
    for stack in stacks:  # each create, and each stack's first look, refused once
        layer.fault("throttle", action="CreateStack", stack=stack)
        layer.fault("throttle", action="DescribeStacks", stack=stack)
    layer.latency(0.2)
    monkeypatch.chdir(eight)
    status = DoitMain(DodoTaskLoader()).run(["-n", "8", "deploy"])
    assert status == 0, capsys.readouterr()  # (doit writes to the sys.stdout it found when imported)
    outcomes = layer.outcomes("CreateStack")
    assert sorted(stack for _, stack, outcome in outcomes if outcome == "ok") == stacks
    assert sorted(stack for _, stack, outcome in outcomes if outcome == "Throttling: Rate exceeded") == stacks
    made = {what: n for (target, what), n in aws.created.items() if target.endpoint == layer.url}
    assert made == {"session": 1, "cloudformation": 1}


def children(pid: int) -> list[int]:
    return [
        int(c)
        for task in Path(f"/proc/{pid}/task").glob("*")
        for c in (task / "children").read_text().split()
    ]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from /proc")
def test_threads_leave_no_worker_behind_a_kill(shop: Path, layer: Layer, moto: Moto) -> None:
    creates = ("checkout-api-dev", "slow-api-dev")
    layer.together("CreateStack", *creates)  # both in flight, then held
    layer.latency(3.0)
    run = subprocess.Popen([sys.executable, "-m", "doit", "-n", "4", "deploy"], cwd=shop, text=True)
    deadline = time.monotonic() + 60
    while layer.meeting is not None and layer.meeting.arrived != set(creates):
        assert time.monotonic() < deadline
        assert run.poll() is None
        time.sleep(0.05)
    assert children(run.pid) == []  # the deploys run in threads of doit's own process
    run.kill()
    run.wait(timeout=30)
    while len(layer.writes()) < 2:  # the held creates, let go
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # they lost their caller with doit: none reached CloudFormation
    assert sorted(layer.outcomes("CreateStack")) == [("CreateStack", stack, "abandoned") for stack in creates]
    assert moto.client().describe_stacks()["Stacks"] == []


def alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, dead but not yet reaped by whoever adopted it, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from /proc")
def test_process_workers_end_with_a_killed_doit(shop: Path, layer: Layer, moto: Moto) -> None:
    creates = ("checkout-api-dev", "slow-api-dev")
    layer.together("CreateStack", *creates)  # both in flight, then held past the kill
    layer.latency(3.0)
    argv = [sys.executable, "-m", "doit", "-n", "4", "-P", "process", "deploy"]
    run = subprocess.Popen(argv, cwd=shop, text=True)
    deadline = time.monotonic() + 60
    while layer.meeting is not None and layer.meeting.arrived != set(creates):
        assert time.monotonic() < deadline
        assert run.poll() is None
        time.sleep(0.05)
    workers = children(run.pid)
    assert len(workers) >= 2  # one per create under way, each waiting on its answer
    run.kill()
    run.wait(timeout=30)
    # Without a watch on their parent they would wait on the held creates, then on doit's job queue for good.
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, [pid for pid in workers if alive(pid)]
        time.sleep(0.05)
    while len(layer.writes()) < 2:  # the held creates, let go
        time.sleep(0.05)
    assert sorted(layer.outcomes("CreateStack")) == [("CreateStack", stack, "abandoned") for stack in creates]


def test_processes_do_not_share_a_connection(
    tmp_path: Path, moto: Moto, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """doit's main process checks the first tasks (reading the stacks, a connection left open) before it
    forks their workers: each worker must make its own client, or they read each other's answers."""
    services = ["a-api", "b-api", "c-api"]  # no exports: no check task runs first, in a worker
    for name in services:
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / "template.yml").write_text(SLOW_API.replace("slow-api", name))
    (tmp_path / "phases.yml").write_text(f"app: plain\nphases: [[{', '.join(services)}]]\n")
    app = copy_app(tmp_path, tmp_path / "plain")
    with running_layer(moto.url, keep_alive=True) as layer:
        monkeypatch.setenv("AWS_ENDPOINT_URL", layer.url)
        layer.latency(0.2)
        result = doit(app, "-n", "4", "-P", "process", "deploy")
    assert result.returncode == 0, result.stderr
    assert sorted(layer.outcomes("CreateStack")) == [("CreateStack", f"{s}-dev", "ok") for s in services]


# ---- reading the app's stacks --------------------------------------------------------------------------


def recorded(layer: Layer, count: int) -> list[Call]:
    """The layer's calls once `count` are recorded: it records a call just after answering it."""
    deadline = time.monotonic() + 10
    while len(layer.calls) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(layer.calls)


def test_the_app_is_read_from_the_listing_or_by_name(moto: Moto, credentials: dict[str, str]) -> None:
    template = '{"Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}'
    app = [f"app-{i:02d}" for i in range(50)]
    # 90 stacks, two pages of the listing: 30 of the app's, 40 others, then 20 more of the app's
    for name in app[:30] + [f"other-{i:02d}" for i in range(40)] + app[30:]:
        moto.client().create_stack(StackName=name, TemplateBody=template)
    with running_layer(moto.url) as proxy:
        cfn = aws.client(Target("us-east-1", proxy.url), "cloudformation")
        # the first page shows 30 of the app's 50 stacks: the other 20 take one more page at that rate
        every = cloudformation.read_stacks(cfn, app)
        assert sorted(every) == app
        assert {stack.status for stack in every.values()} == {"CREATE_COMPLETE"}
        assert [(c.action, c.stack) for c in recorded(proxy, 2)] == [("DescribeStacks", "")] * 2
        proxy.calls.clear()
        # the first page shows none of these two: they are described by name
        assert sorted(cloudformation.read_stacks(cfn, ["app-40", "gone"])) == ["app-40"]
        listing, *by_name = recorded(proxy, 3)
        assert (listing.action, listing.stack) == ("DescribeStacks", "")
        assert sorted((c.action, c.stack) for c in by_name) == [
            ("DescribeStacks", "app-40"),
            ("DescribeStacks", "gone"),
        ]
