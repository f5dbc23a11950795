"""What to deploy, and where: plain data shared by planning (no boto3), the deployers and the AWS boundary."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from phasedoit.runrecord import Record

FINGERPRINT_TAG = "phasedoit:fingerprint"
EXPORTS_TAG = "phasedoit:exports"  # digest of the definitions of the stack's exports, as last deployed
APP_TAG, STAGE_TAG, SERVICE_TAG = "phasedoit:app", "phasedoit:stage", "phasedoit:service"
# The statuses of a stack whose last operation succeeded.
DEPLOYED = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"})
# The statuses of a stack whose last update (or import) rolled back: it runs its previous template, and its
# tags are the previous ones too (its fingerprint says what it runs).
ROLLED_BACK = frozenset({"UPDATE_ROLLBACK_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"})


@dataclass(frozen=True)
class Target:
    """Where CloudFormation is: None means what the standard AWS variables and files say."""

    region: str | None = None
    endpoint: str | None = None  # from phases.yml or AWS_ENDPOINT_URL(_CLOUDFORMATION)
    local: str | None = None  # the embedded endpoint of the app whose state folder this is
    account: str | None = None  # the only account the stage may deploy to
    stage: str = ""


@dataclass(frozen=True)
class StackSpec:
    """The request a CloudFormation deploy sends, exactly."""

    name: str
    body: str
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    template_url: str = ""  # instead of the body, for a template over 51,200 bytes: in the artifacts bucket


@dataclass(frozen=True)
class RemoteStack:
    """A deployed stack as one listing shows it."""

    status: str
    fingerprint: str | None  # phasedoit's tag: what it deployed there last
    exports: dict[str, str]  # export name -> value_hash(value)
    exports_tag: str | None = None  # phasedoit's tag: the digest of its exports' definitions


@dataclass(frozen=True)
class Deployed:
    """What a deploy did, and the stack's outputs after it."""

    action: str  # created, updated, unchanged (CloudFormation), deployed (a framework)
    outputs: dict[str, str]
    exports: dict[str, str]


@dataclass(frozen=True)
class StackEvent:
    """One CloudFormation stack event, as DescribeStackEvents shows it while a stack deploys."""

    logical_id: str
    resource_type: str
    status: str
    reason: str = ""
    timestamp: str = ""  # ISO 8601, as CloudFormation stamped it

    @property
    def text(self) -> str:
        """`Fn (AWS::Lambda::Function) CREATE_COMPLETE`; a failure or a rollback's start with its reason."""
        shown = f"{self.logical_id} ({self.resource_type}) {self.status}"
        failing = self.status.endswith("FAILED") or self.status.endswith("ROLLBACK_IN_PROGRESS")
        return f"{shown}: {self.reason}" if failing and self.reason else shown


@dataclass(frozen=True)
class Packaging:
    """A deployer's packaging step: begun (`done` False, e.g. `uploading 2 artifacts`), then done."""

    text: str
    done: bool = False


# What a deployer reports while it works, besides its lines (`say`): one callback receives both kinds.
Progress: TypeAlias = StackEvent | Packaging
OnProgress: TypeAlias = Callable[[Progress], None]


@dataclass
class Verdict:
    """What a service's uptodate check found: read by its action, the reporter and `doit plan`.

    doit keeps it in `task.meta["phasedoit"]`, and pickles it to a worker with the task.
    """

    service: str
    phase: str
    upstreams: tuple[str, ...] = ()
    fingerprint: str | None = None  # the tag the deploy puts on the stack
    reasons: list[str] = field(default_factory=list)  # why it deploys; none when up to date
    error: str | None = None  # the check could not run (the listing failed): the deploy reports it
    skipped: str | None = None  # why it is not deployed to this target at all
    conditional: tuple[str, ...] = ()  # the upstreams it imports from only under conditions unknown yet
    after: tuple[str, ...] = ()  # the services phases.yml's `after:` deploys it after, beyond its upstreams
    notes: tuple[str, ...] = ()  # what rendering decided that the user did not write, for `doit plan`
    record: Record | None = None  # the run's record, where its action appends its events


def value_hash(value: str) -> str:
    """Export values are compared by hash: they hold account ids, which stay out of doit's state file."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def digest(value: object) -> str:
    """A stable hash of plain data (JSON-able)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
