"""What to deploy, and where: plain data, shared by planning (no boto3) and the AWS boundary."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

FINGERPRINT_TAG = "phasedoit:fingerprint"
# The statuses of a stack whose last operation succeeded.
DEPLOYED = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"})


@dataclass(frozen=True)
class Target:
    """Where CloudFormation is: None means what the standard AWS variables and files say."""

    region: str | None = None
    endpoint: str | None = None
    local: str | None = None  # the embedded endpoint of the app whose state folder this is
    account: str | None = None  # the only account the stage may deploy to
    stage: str = ""


@dataclass(frozen=True)
class StackSpec:
    name: str
    body: str
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoteStack:
    """A deployed stack as one listing shows it."""

    status: str
    fingerprint: str | None  # phasedoit's tag: what it deployed there last
    exports: dict[str, str]  # export name -> value_hash(value)


def value_hash(value: str) -> str:
    """Export values are compared by hash: they hold account ids, which stay out of doit's state file."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]
