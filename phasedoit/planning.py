"""A stage's plan: each service's phase, upstreams, deployer, and the exact request it will send.

Pure (no boto3): phases.yml and the templates in, one `StagePlan` out. Each service's request is rendered
here, once, and its fingerprint covers that rendered request: the deploy sends exactly it, so an edit made
during a run is never deployed under a fingerprint that does not describe it (the next run sees it).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phasedoit import deployers, graph, runrecord
from phasedoit.config import (
    CONFIG_NAME,
    DEFAULT_STAGE,
    SCHEDULES,
    App,
    Phase,
    Schedule,
    StageSettings,
    check_region_from_env,
    check_stage_name,
)
from phasedoit.deployers import Context, Watched
from phasedoit.errors import PhasedoitError
from phasedoit.parameters import missing_parameters_message
from phasedoit.stack import Target

STATE_DIR = ".phasedoit"


@dataclass(frozen=True)
class ServicePlan:
    """One service on one stage: everything its tasks need, as plain data (doit pickles it to workers)."""

    name: str
    phase: Phase
    deployer: str  # the module of phasedoit.deployers that deploys it
    stack: str  # its stack's name
    config: str  # its template (or serverless.yml) as the user knows it
    request: Any  # what its deployer sends, rendered: a StackSpec, a ServerlessRun
    files: Mapping[str, str]  # digests of what is sent, by the file it comes from
    settings: str  # digest of the rest of what is sent: parameters, tags, capabilities, target, format
    watched: tuple[Watched, ...] = ()
    imports: tuple[tuple[str, str], ...] = ()  # (export, the service of this app exporting it)
    upstreams: tuple[str, ...] = ()  # the services it imports from, in the user's order
    # those of `upstreams` it imports from only under conditions that cannot be known before deploy
    conditional_upstreams: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # the services it deploys after by `after:`, beyond its upstreams
    always: str | None = None  # why it deploys on every run (values read at deploy time)
    adopt: bool = False  # take over its stack if it exists without phasedoit's tags (`adopt=<service>`)
    exports: Mapping[str, str] = field(default_factory=dict)  # export name -> digest of its definition
    skip: str | None = None  # why it is not deployed to this target (nor are its importers)
    resource_types: tuple[str, ...] = ()  # its template's resource types (what the local endpoint may skip)
    notes: tuple[str, ...] = ()  # what rendering decided that the user did not write


@dataclass(frozen=True)
class StagePlan:
    app: str
    stage: str
    phases: tuple[Phase, ...]
    services: dict[str, ServicePlan]  # in the user's order
    target: Target
    graph: graph.Graph = field(default_factory=lambda: graph.Graph((), (), ()))
    external_imports: tuple[tuple[str, str], ...] = ()  # (importer, export) no service of the app exports
    force: frozenset[str] = frozenset()  # services deployed even if up to date; "all" for every one
    adopt: frozenset[str] = frozenset()  # services whose existing stack, not made by phasedoit, it takes over
    protected: bool = False  # `remove` asks first
    confirmed: bool = False  # yes=1: a protected stage's `remove` needs no question
    run: str = ""  # this run's id: an exporter's values tell its importers' checks it deployed in this run
    record: str = ""  # the path of this run's record (see runrecord), made when the run starts
    schedule: Schedule = "phases"


def plan_stage(
    app: App,
    stage: str | None,
    environ: Mapping[str, str],
    force: str | None = None,
    *,
    adopt: str | None = None,
    yes: str | None = None,
    schedule: str | None = None,
) -> StagePlan:
    """The plan of one stage, every check that needs no AWS call done.

    `force` and `adopt`: `all` or services, as given on the command line; `yes`: `1` confirms a removal;
    `schedule`: the command line's, which beats phases.yml's.
    """
    stage = select_stage(app, stage or environ.get("PHASEDOIT_STAGE") or DEFAULT_STAGE)
    chosen = select_schedule(schedule) if schedule is not None else app.schedule
    check_region_from_env(environ)
    settings = app.stage_settings(stage) or StageSettings()
    context = Context(app, stage, settings, target(stage, settings, environ, app.root / STATE_DIR), environ)
    rendered = {name: deployers.for_service(s).render(context, s) for name, s in app.services.items()}
    missing = [(name, parameter, stage) for name, r in rendered.items() for parameter in r.missing]
    if missing:  # before any warning: what they leave unresolved would only repeat them
        raise PhasedoitError(missing_parameters_message(missing))
    known = {name.format(stage=stage) for name in app.external_exports}
    after = {name: service.settings.after for name, service in app.services.items()}
    edges = graph.build_graph({name: r.dependencies for name, r in rendered.items()}, after)
    warnings = [w for r in rendered.values() for w in r.dependencies.warnings]
    for warning in dict.fromkeys(warnings + graph.unchecked_imports(edges, known)):
        print(f"warning: {warning}", file=sys.stderr)
    cycles = graph.find_cycles(edges)  # phases.yml's to mend (an import or `after:`), listed phases or not
    phases = app.phases or (() if cycles else tuple(graph.as_phases(graph.computed_phases(edges))))
    problems = cycles or graph.check_phases(edges, phases)
    if problems:
        raise PhasedoitError("\n".join(f"{CONFIG_NAME}: phases: {problem}" for problem in problems))
    _check_stack_names(rendered)
    imports: dict[str, tuple[tuple[str, str], ...]] = dict.fromkeys(rendered, ())
    for edge in edges.edges:
        imports[edge.importer] += ((edge.export, edge.exporter),)
    phase_of = {service: phase for phase in phases for service in phase.services}
    upstreams = graph.upstreams(edges)
    adopted = select_services(app, "adopt", adopt)
    skipped = _skipped(phases, {name: r.skip for name, r in rendered.items()}, imports)
    services = {
        name: ServicePlan(
            name=name,
            phase=phase_of[name],
            deployer=r.deployer,
            stack=r.stack,
            config=app.shown(app.services[name].template),
            request=r.request,
            files=r.files,
            settings=r.settings,
            watched=r.watched + _watched(app, app.services[name].settings.watch),
            imports=imports[name],
            upstreams=tuple(upstream.service for upstream in upstreams[name]),
            conditional_upstreams=tuple(u.service for u in upstreams[name] if u.conditional),
            after=tuple(after[name]),
            always=r.always,
            adopt=bool({name, "all"} & adopted),
            exports=r.exports,
            skip=skipped.get(name),
            resource_types=r.resource_types,
            notes=r.notes,
        )
        for name, r in rendered.items()
    }
    run = uuid.uuid4().hex
    return StagePlan(
        app.name,
        stage,
        tuple(phases),
        services,
        context.target,
        graph=edges,
        external_imports=tuple((imp, exp) for imp, exp in edges.external if exp not in known),
        force=select_services(app, "force", force),
        adopt=adopted,
        protected=settings.is_protected,
        confirmed=yes == "1",
        run=run,
        record=str(runrecord.record_path(app.root / STATE_DIR, stage, run, time.time())),
        schedule=chosen,
    )


def _skipped(
    phases: tuple[Phase, ...],
    skips: Mapping[str, str | None],
    imports: Mapping[str, tuple[tuple[str, str], ...]],
) -> dict[str, str]:
    """The services that cannot deploy to the target, and those that import from them, with why."""
    skipped = {name: why for name, why in skips.items() if why}
    for phase in phases:  # exporters come first
        for name in phase.services:
            upstream = next((exporter for _, exporter in imports[name] if exporter in skipped), None)
            if upstream and name not in skipped:
                skipped[name] = f"it imports from {upstream}, which is skipped"
    return skipped


def _check_stack_names(rendered: Mapping[str, Any]) -> None:
    """Two services of one stage never share a stack: each would overwrite the other's."""
    owners: dict[str, str] = {}
    for name, r in rendered.items():
        if r.stack in owners:
            raise PhasedoitError(
                f"{CONFIG_NAME}: services.{name}: its stack {r.stack} is also the stack of {owners[r.stack]}"
            )
        owners[r.stack] = name


def _watched(app: App, paths: list[str]) -> tuple[Watched, ...]:
    """`watch:` paths, from the app folder: shared code (`libs/`) that a service's deploy includes."""
    return tuple(
        Watched(
            str(app.root / path),
            path if (app.root / path).is_file() else f"{path.rstrip('/')}/",
            (),
            str(app.root),
        )
        for path in paths
    )


def select_services(app: App, variable: str, value: str | None) -> frozenset[str]:
    """`all`, or services of the app, as a command-line variable names them: `force=a,b`."""
    named = frozenset(name.strip() for name in (value or "").split(",") if name.strip())
    unknown = sorted(named - set(app.services) - {"all"})
    if unknown:
        raise PhasedoitError(f"{variable}: no service {', '.join(map(repr, unknown))} in {CONFIG_NAME}")
    return named


def select_schedule(schedule: str) -> Schedule:
    for known in SCHEDULES:
        if schedule == known:
            return known
    expected = " or ".join(map(repr, SCHEDULES))
    raise PhasedoitError(f"schedule={schedule}: expected {expected}")


def select_stage(app: App, stage: str) -> str:
    try:
        check_stage_name(stage)
    except ValueError as e:
        raise PhasedoitError(f"stage: {e}") from None
    if app.stages and app.stage_settings(stage) is None:
        known = ", ".join(app.stages)
        raise PhasedoitError(f"{CONFIG_NAME}: stages: no stage {stage!r} (known: {known})")
    return stage


def target(stage: str, settings: StageSettings, environ: Mapping[str, str], state_dir: Path) -> Target:
    """Where CloudFormation is for a stage: as for the AWS CLI, an environment variable beats phases.yml."""
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or settings.region
    endpoint = environ.get("AWS_ENDPOINT_URL_CLOUDFORMATION") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        return Target(region, endpoint, account=settings.account, stage=stage)
    if settings.endpoint == "local":
        return Target(region or "us-east-1", local=str(state_dir), stage=stage)
    return Target(region, settings.endpoint, account=settings.account, stage=stage)
