"""What `dodo.py` runs: pick the stage, read phases.yml and the templates, and hand doit the tasks."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from phasedoit import graph, serverless, templates
from phasedoit.changes import DEFAULT_EXCLUDE, Inputs, digest
from phasedoit.config import (
    CONFIG_NAME,
    DEFAULT_STAGE,
    App,
    Service,
    StageSettings,
    check_stage_name,
    load_config,
)
from phasedoit.errors import PhasedoitError
from phasedoit.framework import ServerlessRun
from phasedoit.reporter import Reporter
from phasedoit.stack import StackSpec, Target
from phasedoit.tasks import Plan, Task, deploy_tasks, remove_tasks

STATE_DIR = ".phasedoit"


def doit_namespace(dodo_file: str) -> dict[str, Any]:
    """`DOIT_CONFIG` and the task creators for the app beside `dodo_file`; a user error exits 1, untraced."""
    from doit import get_var

    root = Path(dodo_file).resolve().parent
    try:
        plan = plan_stage(load_config(root / CONFIG_NAME), get_var("stage"), os.environ, get_var("force"))
    except PhasedoitError as e:
        sys.exit(str(e))
    (root / STATE_DIR).mkdir(exist_ok=True)
    # doit saves its state at the end of a run, and on Ctrl-C but not on SIGTERM: make them alike
    signal.signal(signal.SIGTERM, _interrupt)
    return {
        "DOIT_CONFIG": {
            "default_tasks": ["deploy"],
            # one state file per stage: deploying prod must not make dev look stale
            "dep_file": str(root / STATE_DIR / f"doit-{plan.stage}.db"),
            "backend": "sqlite3",
            "reporter": Reporter,
        },
        "task_deploy": _creator(deploy_tasks, plan),
        "task_remove": _creator(remove_tasks, plan),
    }


def plan_stage(app: App, stage: str | None, environ: Mapping[str, str], force: str | None = None) -> Plan:
    """The tasks' data for one stage, every check that needs no AWS call done; `force`: `all` or services."""
    stage = select_stage(app, stage or environ.get("PHASEDOIT_STAGE") or DEFAULT_STAGE)
    settings = app.stages.get(stage, StageSettings())
    where = target(stage, settings, environ, app.root / STATE_DIR)
    stacks: dict[str, StackSpec] = {}
    dependencies: dict[str, templates.Dependencies] = {}
    for name, service in app.services.items():
        if service.serverless:
            values = pseudo_parameters(None, where.region, settings.account)
            found = plan_serverless(app, service, stage, values, environ)
        else:
            found = plan_service(app, service, stage, settings, where)
        stacks[name], dependencies[name] = found
    for warning in (w for deps in dependencies.values() for w in deps.warnings):
        print(f"warning: {warning}", file=sys.stderr)
    edges = graph.build_graph(dependencies)
    phases = app.phases or tuple(graph.as_phases(graph.computed_phases(edges)))
    problems = graph.validate(edges, phases)
    if problems:
        raise PhasedoitError("\n".join(f"{CONFIG_NAME}: phases: {problem}" for problem in problems))
    known = {name.format(stage=stage) for name in app.external_exports}
    imports: dict[str, tuple[tuple[str, str], ...]] = dict.fromkeys(stacks, ())
    for edge in edges.edges:
        imports[edge.importer] += ((edge.export, edge.exporter),)
    return Plan(
        app.name,
        stage,
        phases,
        stacks,
        where,
        run=uuid.uuid4().hex,
        upstreams={name: tuple(dict.fromkeys(exporter for _, exporter in imports[name])) for name in stacks},
        external_imports=tuple((imp, exp) for imp, exp in edges.external if exp not in known),
        inputs={name: inputs(app.services[name], stacks[name], where, imports[name]) for name in stacks},
        force=select_forced(app, force),
        graph=edges,
        serverless={
            name: ServerlessRun(
                str(service.template.parent), app.shown(service.template), stacks[name].name, stage
            )
            for name, service in app.services.items()
            if service.serverless
        },
    )


def inputs(service: Service, stack: StackSpec, where: Target, imports: tuple[tuple[str, str], ...]) -> Inputs:
    """What the service's fingerprint covers: its folder's files, and settings that live elsewhere."""
    settings: list[object] = [
        stack.name,
        stack.parameters,
        stack.tags,
        stack.capabilities,
        where.region,
        where.endpoint,
    ]
    if not service.template.resolve().is_relative_to(service.folder.resolve()):
        settings.append(stack.body)  # a template outside the folder is not among its files
    exclude = DEFAULT_EXCLUDE + tuple(service.settings.exclude)
    return Inputs(str(service.folder), exclude, digest(settings), imports)


def select_forced(app: App, force: str | None) -> frozenset[str]:
    forced = frozenset(name.strip() for name in (force or "").split(",") if name.strip())
    unknown = sorted(forced - set(app.services) - {"all"})
    if unknown:
        raise PhasedoitError(f"force: no service {', '.join(map(repr, unknown))} in {CONFIG_NAME}")
    return forced


def select_stage(app: App, stage: str) -> str:
    try:
        check_stage_name(stage)
    except ValueError as e:
        raise PhasedoitError(f"stage: {e}") from None
    if app.stages and stage not in app.stages:
        known = ", ".join(app.stages)
        raise PhasedoitError(f"{CONFIG_NAME}: stages: no stage {stage!r} (known: {known})")
    return stage


def plan_service(
    app: App, service: Service, stage: str, settings: StageSettings, where: Target
) -> tuple[StackSpec, templates.Dependencies]:
    """The stack to deploy for `service` on `stage`, and the exports and imports it has there."""
    shown = app.shown(service.template)
    template = templates.load_template(service.template, shown)
    declared = templates.parameter_names(template)
    for name in service.settings.parameters:
        if name not in declared:
            raise PhasedoitError(
                f"{CONFIG_NAME}: services.{service.name}.parameters.{name}: not a parameter of {shown}"
            )
    parameters = {"Stage": stage} if "Stage" in declared else {}
    parameters |= {k: v for k, v in settings.parameters.items() if k in declared}
    parameters |= service.settings.parameters
    name = service.stack_name(app.name, stage)
    tags = {**service.settings.tags, "phasedoit:app": app.name, "phasedoit:stage": stage}
    body = templates.template_body(template, shown)
    known = {**parameters, **pseudo_parameters(name, where.region, settings.account)}
    stack = StackSpec(name, body, parameters, tags, tuple(service.settings.capabilities))
    return stack, templates.find_dependencies(template, known, shown)


def plan_serverless(
    app: App, service: Service, stage: str, values: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[StackSpec, templates.Dependencies]:
    """A Serverless Framework service: its stack as Serverless names it; Serverless makes its template.

    `values`: the pseudo parameters known before deploying; `environ`: what its `${env:X}` read.
    """
    found = serverless.read_serverless(
        service.template, app.shown(service.template), stage=stage, values=values, env=environ
    )
    return StackSpec(found.stack_name, body=""), found.dependencies


def pseudo_parameters(stack_name: str | None, region: str | None, account: str | None) -> dict[str, str]:
    """The pseudo parameters known before deploying; an import that needs another one is a warning."""
    known = {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}
    if stack_name:
        known["AWS::StackName"] = stack_name
    if region:
        known["AWS::Region"] = region
    if account:
        known["AWS::AccountId"] = account
    return known


def target(stage: str, settings: StageSettings, environ: Mapping[str, str], state_dir: Path) -> Target:
    """Where CloudFormation is for a stage: as for the AWS CLI, an environment variable beats phases.yml."""
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or settings.region
    if environ.get("AWS_ENDPOINT_URL") or environ.get("AWS_ENDPOINT_URL_CLOUDFORMATION"):
        return Target(region, account=settings.account, stage=stage)  # boto3 reads the endpoint variables
    if settings.endpoint == "local":
        return Target(region or "us-east-1", local=str(state_dir))
    return Target(region, settings.endpoint, account=settings.account, stage=stage)


def _creator(make: Callable[[Plan], Iterator[Task]], plan: Plan) -> Callable[[], Iterator[Task]]:
    def create() -> Iterator[Task]:
        return make(plan)

    create.__doc__ = make.__doc__
    return create


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
