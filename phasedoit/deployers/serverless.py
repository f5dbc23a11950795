"""Serverless Framework services: phasedoit orders them, the framework (`serverless deploy`) deploys them.

The framework builds their template and packages their code, so what they send is their folder, the files
their serverless.yml includes (`${file(...)}`), the stage and the paths listed in `watch:`; those are their
fingerprint. The framework tags their stack, not phasedoit: the local state says what was deployed last.
Every subprocess phasedoit starts goes through `run_streamed`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phasedoit import serverless
from phasedoit.deployers import FORMAT, Context, Rendered, Say, Watched, pseudo_parameters
from phasedoit.errors import PhasedoitError
from phasedoit.stack import Deployed, Target, digest

if TYPE_CHECKING:
    from phasedoit.config import Service
    from phasedoit.planning import ServicePlan

FINGERPRINT_ON_STACK = False
LOCAL = "the Serverless Framework deploys to AWS only, not to the local endpoint"
INSTALL = "npm install -g serverless"


@dataclass(frozen=True)
class ServerlessRun:
    """Where to run `serverless` for one service."""

    folder: str  # the folder of its serverless.yml: `serverless` finds it there
    config: str  # its serverless.yml as the user knows it, for messages
    stack_name: str  # as the framework names it
    stage: str


def render(context: Context, service: Service) -> Rendered:
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
    return Rendered(
        deployer="serverless",
        stack=found.stack_name,
        request=ServerlessRun(str(folder), shown, found.stack_name, stage),
        dependencies=found.dependencies,
        files={},
        settings=digest([FORMAT, stage, where.region, where.account]),
        skip=LOCAL if where.local else None,
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


def deploy(plan: ServicePlan, target: Target, fingerprint: str, say: Say) -> Deployed:
    run: ServerlessRun = plan.request
    started = time.monotonic()
    _framework("deploy", run, target, say)
    say(f"deployed {run.stack_name} with the Serverless Framework in {time.monotonic() - started:.1f}s")
    return Deployed("deployed", {}, {})


def remove(plan: ServicePlan, target: Target, say: Say, alone: bool) -> bool:
    run: ServerlessRun = plan.request
    _framework("remove", run, target, say)
    return True


def _framework(verb: str, run: ServerlessRun, target: Target, say: Say) -> None:
    """Run `serverless <verb> --stage S [--region R]` in the service's folder; a failure is one line."""
    executable = shutil.which("serverless")
    if executable is None:
        raise PhasedoitError(
            f"the Serverless Framework is not installed ({INSTALL}), needed to {verb} {run.config}"
        )
    argv = [executable, verb, "--stage", run.stage, *(["--region", target.region] if target.region else [])]
    status = run_streamed(argv, Path(run.folder), say)
    if status:
        raise PhasedoitError(f"serverless {verb} failed (exit {status})")


def run_streamed(argv: Sequence[str], cwd: Path, say: Callable[[str], None]) -> int:
    """Run `argv` in `cwd`, each line of its output (stdout and stderr) passed to `say`; its exit status."""
    with subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,  # a prompt must not wait for input that never comes
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None  # stdout=PIPE
        for line in process.stdout:
            say(line.rstrip("\r\n"))
    return process.returncode
