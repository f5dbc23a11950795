"""Serverless Framework services: the framework packages them, phasedoit deploys what it packaged.

At deploy time (in the worker: `doit list` runs no Node.js), the project's framework runs
`package --stage <stage>` into a temporary folder; its zips go to the stage's artifacts bucket, keyed by
their content, and its template, pointing at them, deploys like any CloudFormation template (ownership
tags, fingerprint tag, ClientRequestToken, stack events), to the stack the framework names, on AWS or on
the local endpoint. The framework zips again on every run, so the fingerprint is taken at plan time from
what the framework reads: the service's folder, the files its serverless.yml includes (`${file(...)}`), the
stage and the paths listed in `watch:`. It is on the stack: an unchanged service is skipped on a fresh
checkout. `deploy_with: framework` keeps `serverless deploy` (serverless_framework.py).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from phasedoit.deployers import Packager, Say, no_guard, pseudo_parameters, serverless_framework
from phasedoit.deployers.serverless_framework import ServerlessRun, executable
from phasedoit.errors import PhasedoitError
from phasedoit.stack import (
    FINGERPRINT_TAG,
    Deployed,
    OnProgress,
    StackSpec,
    Target,
)

if TYPE_CHECKING:
    from phasedoit.planning import ServicePlan
    from phasedoit.serverless_package import Packaged

FINGERPRINT_ON_STACK = True
guard = no_guard  # its client checks the account of a stage bound to one
render = serverless_framework.render  # both read serverless.yml alike; `deploy_with` picks the deployer


def deploy(
    plan: ServicePlan, target: Target, fingerprint: str, say: Say, on_progress: OnProgress | None = None
) -> Deployed:
    from phasedoit import artifacts, cloudformation, packaging, serverless_package

    run: ServerlessRun = plan.request
    cfn = cloudformation.client(target)  # first: it checks the account of a stage bound to one
    program = executable(run, "deploy")
    packager = Packager(say, on_progress)
    with tempfile.TemporaryDirectory(prefix="phasedoit-package-") as temporary:
        packager.say(f"packaging with {program.name}")
        packaged = serverless_package.package(
            [str(program)],
            Path(run.folder),
            run.config,
            stage=run.stage,
            region=target.region,
            output=Path(temporary) / "package",
            env=framework_environment(target),
        )
        check_packaged(run, packaged, pseudo_parameters(None, target.region, target.account))
        store = packaging.Store(run.bucket, target.region)
        package = serverless_package.as_package(packaged, run.config, store)
        template = artifacts.prepare(target, package, packager.say, f"stages.{run.stage}.artifacts_bucket")
    packager.done(f"packaged with {program.name}")
    spec = StackSpec(
        run.stack_name,
        template.get("TemplateBody", ""),
        {},
        {**packaged.tags, **run.tags, FINGERPRINT_TAG: fingerprint},
        package.capabilities,
        template_url=template.get("TemplateURL", ""),
    )
    return cloudformation.deploy_stack(cfn, spec, say, adopt=plan.adopt, on_event=on_progress)


def check_packaged(run: ServerlessRun, packaged: Packaged, values: Mapping[str, str]) -> None:
    """The framework's template must be the one the plan ordered: its stack, and no import it did not know."""
    from phasedoit.serverless_package import template_dependencies

    if packaged.stack_name != run.stack_name:
        raise PhasedoitError(
            f"{run.config}: the framework names its stack {packaged.stack_name}, phasedoit read"
            f" {run.stack_name}: nothing was deployed"
        )
    unknown = sorted(template_dependencies(packaged, values, run.config).imports - set(run.imports))
    if unknown:
        raise PhasedoitError(
            f"{run.config}: its packaged template imports {', '.join(unknown)}, which phasedoit did not find"
            " in serverless.yml, so its phase is not checked: nothing was deployed"
        )


def framework_environment(target: Target) -> dict[str, str]:
    """The framework's environment: what it reads of AWS at package time (`${cf:...}`, `${ssm:...}`)
    comes from the stage's endpoint, with the local endpoint's own credentials there, never from AWS."""
    env = dict(os.environ)
    if target.endpoint:
        env["AWS_ENDPOINT_URL"] = target.endpoint
    if target.region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = target.region
    if target.local:
        from phasedoit import local

        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.pop(name, None)
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = local.credentials(target.local)
    return env


def remove(
    plan: ServicePlan, target: Target, say: Say, alone: bool, on_progress: OnProgress | None = None
) -> bool:
    from phasedoit import cloudformation

    run: ServerlessRun = plan.request
    cfn = cloudformation.client(target)
    return cloudformation.remove_stack(
        cfn, plan.stack, run.tags, say, adopt=plan.adopt, alone=alone, on_event=on_progress
    )
