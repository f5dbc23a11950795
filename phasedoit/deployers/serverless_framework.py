"""Serverless Framework services with `deploy_with: framework`: the framework deploys them itself.

For services that need the framework's own deploy steps: plugins that act at deploy time. The framework
builds their template, packages their code and tags their stack, not phasedoit: their fingerprint is their
folder, the files their serverless.yml includes, the stage and the paths listed in `watch:`, and the local
state says what was deployed last.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from phasedoit import serverless
from phasedoit.deployers import FORMAT, Context, Rendered, Say, Watched, pseudo_parameters
from phasedoit.errors import PhasedoitError
from phasedoit.serverless_package import find_framework, run_streamed
from phasedoit.stack import APP_TAG, SERVICE_TAG, STAGE_TAG, Deployed, OnProgress, Target, digest

if TYPE_CHECKING:
    from phasedoit.config import Service
    from phasedoit.planning import ServicePlan

FINGERPRINT_ON_STACK = False
# the framework takes no endpoint: on the local endpoint its services (and their importers) are skipped
LOCAL = "the Serverless Framework deploys to AWS only, not to the local endpoint"
INSTALL = "npm install -g serverless"


@dataclass(frozen=True)
class ServerlessRun:
    """Where and how to run the framework for one service."""

    folder: str  # the folder of its serverless.yml: the framework finds it there
    config: str  # its serverless.yml as the user knows it, for messages
    stack_name: str  # as the framework names it
    stage: str
    root: str = ""  # the app folder: a project's node_modules/.bin is searched up to it
    framework: str | None = None  # phases.yml's `framework:`
    # for phasedoit's own deploy of the packaged template:
    tags: Mapping[str, str] = field(default_factory=dict)  # phasedoit's ownership tags
    imports: tuple[str, ...] = ()  # what phasedoit's reading of serverless.yml found it imports
    bucket: str | None = None  # the stage's artifacts_bucket


def render(context: Context, service: Service) -> Rendered:
    """Both Serverless deployers render alike: serverless.yml read for the plan; `deploy_with` picks one."""
    app, stage, where = context.app, context.stage, context.target
    shown = app.shown(service.template)
    values = pseudo_parameters(None, where.region, context.settings.account)
    found = serverless.read_serverless(
        service.template, shown, stage=stage, values=values, env=context.environ
    )
    folder = service.folder
    included = tuple(
        Watched(str(path), Path(os.path.relpath(path, folder)).as_posix(), (), str(app.root))
        for path in found.files
        if not path.resolve().is_relative_to(folder.resolve())
    )
    by_framework = service.settings.deploy_with == "framework"
    tags = {APP_TAG: app.name, STAGE_TAG: stage, SERVICE_TAG: service.name}
    bucket = context.settings.artifacts_bucket
    run = ServerlessRun(
        str(folder),
        shown,
        found.stack_name,
        stage,
        root=str(app.root),
        framework=app.framework,
        tags={} if by_framework else tags,
        imports=tuple(sorted(found.dependencies.imports)),
        bucket=None if by_framework else bucket,
    )
    how = "framework" if by_framework else ["package", tags, bucket]
    return Rendered(
        deployer="serverless_framework" if by_framework else "serverless",
        stack=found.stack_name,
        request=run,
        dependencies=found.dependencies,
        files={},
        settings=digest([FORMAT, stage, where.region, where.account, how]),
        skip=LOCAL if by_framework and where.local else None,
        watched=(Watched(str(folder), "", tuple(service.settings.exclude), str(app.root)), *included),
    )


def guard(plan: ServicePlan, target: Target, verb: str) -> None:
    """The framework takes no endpoint: run with one, it would reach the real AWS account instead.

    Nor does it know the stage's account: phasedoit checks the credentials it will inherit.
    """
    from phasedoit import aws

    run: ServerlessRun = plan.request
    if target.local or target.endpoint:
        where = "the embedded local endpoint" if target.local else f"endpoint {target.endpoint}"
        why = "the Serverless Framework works on AWS only"
        raise PhasedoitError(f"cannot {verb} {run.config} at {where}: {why}")
    aws.check_account(target)


def deploy(
    plan: ServicePlan, target: Target, fingerprint: str, say: Say, on_progress: OnProgress | None = None
) -> Deployed:
    run: ServerlessRun = plan.request
    started = time.monotonic()
    _framework("deploy", run, target, say)
    say(f"deployed {run.stack_name} with the Serverless Framework in {time.monotonic() - started:.1f}s")
    return Deployed("deployed", {}, {})


def remove(
    plan: ServicePlan, target: Target, say: Say, alone: bool, on_progress: OnProgress | None = None
) -> bool:
    run: ServerlessRun = plan.request
    _framework("remove", run, target, say)
    return True


def executable(run: ServerlessRun, verb: str) -> Path:
    """The framework the service runs (serverless_package.find_framework), or a one-line error."""
    found = find_framework(Path(run.folder), Path(run.root or run.folder), run.framework)
    if found is None:
        raise PhasedoitError(
            f"the Serverless Framework is not installed ({INSTALL}), needed to {verb} {run.config}"
        )
    return found


def _framework(verb: str, run: ServerlessRun, target: Target, say: Say) -> None:
    """Run `<framework> <verb> --stage S [--region R]` in the service's folder; a failure is one line."""
    program = executable(run, verb)
    argv = [str(program), verb, "--stage", run.stage, *(["--region", target.region] if target.region else [])]
    status = run_streamed(argv, Path(run.folder), say)
    if status:
        raise PhasedoitError(f"{program.name} {verb} failed (exit {status})")
