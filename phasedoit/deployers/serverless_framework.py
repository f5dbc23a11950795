"""Serverless Framework services with `deploy_with: framework`: the framework deploys them itself.

For services that need the framework's own deploy steps: plugins that act at deploy time. The framework
builds their template, packages their code and tags their stack, not phasedoit: their fingerprint is their
folder, the files their serverless.yml includes, the stage and the paths listed in `watch:`, and the local
state says what was deployed last. Every subprocess phasedoit starts goes through `run_streamed`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from phasedoit.deployers import Context, Rendered, Say
from phasedoit.errors import PhasedoitError
from phasedoit.stack import Deployed, Target

if TYPE_CHECKING:
    from phasedoit.config import Service
    from phasedoit.planning import ServicePlan

FINGERPRINT_ON_STACK = False
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
    from phasedoit.deployers import serverless

    return serverless.render(context, service)


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


def executable(run: ServerlessRun, verb: str) -> Path:
    """The framework the service runs (serverless_package.find_framework), or a one-line error."""
    from phasedoit.serverless_package import find_framework

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


def run_streamed(
    argv: Sequence[str], cwd: Path, say: Callable[[str], None], env: Mapping[str, str] | None = None
) -> int:
    """Run `argv` in `cwd`, each line of its output (stdout and stderr) passed to `say`; its exit status.

    `env`: the whole environment of the process (the caller's by default).
    """
    import subprocess

    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=None if env is None else dict(env),
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
