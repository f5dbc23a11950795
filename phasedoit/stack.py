"""What to deploy, and where: plain data, shared by planning (no boto3) and the AWS boundary."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """Where CloudFormation is: None means what the standard AWS variables and files say."""

    region: str | None = None
    endpoint: str | None = None
    local: bool = False


@dataclass(frozen=True)
class StackSpec:
    name: str
    body: str
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
