"""Deployers: one module per kind of service, each providing the functions of `Deployer`.

The rest of phasedoit never asks which kind a service is: planning looks its deployer up once, by the
service's definition file, and from then on the plan carries the deployer's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from phasedoit.stack import OnProgress, Packaging, Target
from phasedoit.templates import Dependencies

if TYPE_CHECKING:
    from phasedoit.config import App, Service, StageSettings
    from phasedoit.planning import ServicePlan
    from phasedoit.stack import Deployed, OnProgress

# Part of every fingerprint: a phasedoit that renders requests differently redeploys what it rendered.
FORMAT = "2"


@dataclass(frozen=True)
class Context:
    """What a deployer's `render` knows of the stage."""

    app: App
    stage: str
    settings: StageSettings
    target: Target
    environ: Mapping[str, str]


@dataclass(frozen=True)
class Watched:
    """Files whose content is part of what a service sends, hashed by its uptodate check."""

    folder: str
    prefix: str  # how their paths are shown: `` for the service's folder, `../libs/` for a watched one
    exclude: tuple[str, ...]
    root: str = ""  # the app folder: symlinks are followed within it, never out of it


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


Say = Callable[[str], None]


@dataclass(frozen=True)
class Rendered:
    """A service's request, rendered at plan time, with what its fingerprint and the graph need."""

    deployer: str
    stack: str
    request: Any
    dependencies: Dependencies
    files: Mapping[str, str]  # digests of what is sent, by the file it comes from
    settings: str  # digest of the rest of what is sent
    watched: tuple[Watched, ...] = ()
    always: str | None = None
    exports: Mapping[str, str] = field(default_factory=dict)  # export name -> digest of its definition
    skip: str | None = None  # why it cannot deploy to the stage's target (and is skipped, with its importers)
    missing: tuple[str, ...] = ()  # parameters it declares that get neither a value nor a default
    notes: tuple[str, ...] = ()  # what rendering decided that the user did not write (`doit plan` says it)
    resource_types: tuple[str, ...] = ()  # the template's resource types, sorted


class Deployer(Protocol):
    # whether its stacks carry phasedoit's fingerprint tag; if not, the local state says what was deployed
    @property
    def FINGERPRINT_ON_STACK(self) -> bool: ...

    # render the service's request for the stage; no AWS call (`doit list` runs it)
    def render(self, context: Context, service: Service) -> Rendered: ...

    # raise a PhasedoitError if this service must not `verb` (deploy, remove) at `target`
    def guard(self, plan: ServicePlan, target: Target, verb: str) -> None: ...

    # send the rendered request, tagged with `fingerprint`; wait for the outcome, passing its progress
    # (stack events, packaging) to `on_progress` as it goes
    def deploy(
        self,
        plan: ServicePlan,
        target: Target,
        fingerprint: str,
        say: Say,
        on_progress: OnProgress | None = None,
    ) -> Deployed: ...

    # delete the service's stack and wait until it is gone; False if there was none; `alone`: refuse
    # while another stack imports its exports (a whole stage's removal checks that once, for all)
    def remove(
        self, plan: ServicePlan, target: Target, say: Say, alone: bool, on_progress: OnProgress | None = None
    ) -> bool: ...


class Packager:
    """A deploy's packaging steps, said as packaging progress (the board shows the service packaging), then
    done once the stack's request is ready: `say` (plain lines, nothing else) without `on_progress`."""

    def __init__(self, say: Say, on_progress: OnProgress | None) -> None:
        self.said, self.on_progress, self.steps = say, on_progress, 0

    def say(self, text: str) -> None:
        self.steps += 1
        if self.on_progress is None:
            self.said(text)
        else:
            self.on_progress(Packaging(text))

    def done(self, text: str) -> None:
        """`text` says what was packaged; nothing when no step was said (a template that packages nothing)."""
        if self.steps and self.on_progress is not None:
            self.on_progress(Packaging(text, done=True))


def get(name: str) -> Deployer:
    from phasedoit.deployers import cloudformation, serverless, serverless_framework

    found: dict[str, Deployer] = {
        "cloudformation": cloudformation,
        "serverless": serverless,  # packaged by the framework, deployed by phasedoit
        "serverless_framework": serverless_framework,  # `deploy_with: framework`
    }
    return found[name]


def for_service(service: Service) -> Deployer:
    return get("serverless" if service.serverless else "cloudformation")


def no_guard(plan: ServicePlan, target: Target, verb: str) -> None:
    """For a deployer whose every AWS call goes through phasedoit's clients, which guard the target."""
