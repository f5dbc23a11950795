"""Parameter values as phasedoit sends them: read from the environment when asked, and none missing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from phasedoit.config import CONFIG_NAME, FromEnv
from phasedoit.errors import PhasedoitError


class Secret(str):
    """A value read from the environment: sent to CloudFormation as it is, shown and saved only as a hash.

    Its repr (tracebacks, dataclass reprs) shows the hash; `fingerprinted` puts the hash in fingerprints.
    """

    __slots__ = ()

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Secret({self.digest!r})"


def resolve_parameter(value: str | FromEnv, environ: Mapping[str, str], where: str) -> str:
    """The value to send; `where` names its key: `phases.yml: services.db.parameters.DbPassword`."""
    if isinstance(value, str):
        return value
    if value.env not in environ:
        raise PhasedoitError(f"{where}: environment variable {value.env} is not set")
    return Secret(environ[value.env])


def fingerprinted(parameters: Mapping[str, str]) -> dict[str, str]:
    """`parameters` as a fingerprint may hold them: a value read from the environment only as its hash."""
    return {name: value.digest if isinstance(value, Secret) else value for name, value in parameters.items()}


def missing_parameters_message(missing: Iterable[tuple[str, str, str]]) -> str:
    """One line for each (service, parameter, stage) whose parameter has no value and no default."""
    return "\n".join(
        f"{CONFIG_NAME}: services.{service}: parameter {name} has no value and no default:"
        f" set services.{service}.parameters.{name} or stages.{stage}.parameters.{name}"
        for service, name, stage in missing
    )
