"""boto3 sessions and clients: one per target and service, shared by threads; AWS errors as one line.

boto3 clients are thread-safe, sessions are not: a session is made under a lock, once per target. Each
takes 45-50 ms of CPU (the service model is read again), so deploying 30 services must not make 30.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers

from phasedoit.errors import PhasedoitError
from phasedoit.stack import Target

NO_REGION = "no AWS region: set AWS_REGION, or a region for the stage in phases.yml"
# The CloudFormation API answers in seconds (the waiting is done by polling): an endpoint that accepts
# and never answers ends the run in about two minutes (attempts x read timeout), not after eleven.
# Both can be changed, for a slow network or for tests of faults.
TIMEOUT_ENV, DEFAULT_TIMEOUT = "PHASEDOIT_API_TIMEOUT", 10.0
ATTEMPTS_ENV, DEFAULT_ATTEMPTS = "PHASEDOIT_API_ATTEMPTS", 7
MAX_CONNECTIONS = 100  # connections are opened only as they are needed

_lock = threading.Lock()
_sessions: dict[Target, boto3.session.Session] = {}
_clients: dict[tuple[Target, str], Any] = {}
# How many sessions ("session") and clients (by service) this process made for each target: one of each.
created: collections.Counter[tuple[Target, str]] = collections.Counter()


def _forget() -> None:
    """In a forked child (doit's `-P process` workers): a client made before the fork holds the parent's
    open connections, and two processes reading one socket take each other's answers. Start afresh.

    (doit forks from its main thread, which holds `_lock` only inside `client`.)"""
    _sessions.clear()
    _clients.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_forget)


def client(target: Target, service: str) -> Any:
    """The client of `service` for `target`, made once; the account of a stage bound to one is checked."""
    with _lock, translated():
        key = (target, service)
        if key not in _clients:
            make: Any = _session(target).client  # typed per service name; the name is a variable here
            _clients[key] = make(service, endpoint_url=_endpoint(target, service), config=config())
            created[key] += 1
        return _clients[key]


def check_account(target: Target) -> None:
    """A stage bound to an account never deploys with another account's credentials (prod with dev's)."""
    client(target, "sts")


def config() -> botocore.config.Config:
    timeout = positive_number(TIMEOUT_ENV, DEFAULT_TIMEOUT)
    # standard mode retries throttling and transient errors with jittered backoff
    retries: Any = {"mode": "standard", "max_attempts": int(positive_number(ATTEMPTS_ENV, DEFAULT_ATTEMPTS))}
    return botocore.config.Config(
        retries=retries,
        connect_timeout=timeout,
        read_timeout=timeout,
        user_agent_extra="phasedoit",
        # one client serves every thread of `doit -n N` (and the reads of the listing): its pool of
        # connections must not be smaller, or urllib3 drops connections and warns on stderr
        max_pool_connections=MAX_CONNECTIONS,
    )


def positive_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise PhasedoitError(f"{name}: expected a positive number, got {value!r}")
    return number


def _session(target: Target) -> boto3.session.Session:
    if target not in _sessions:
        key = secret = None
        if target.local is not None:
            from phasedoit import local

            key, secret = local.credentials(target.local)
        session = boto3.session.Session(
            aws_access_key_id=key, aws_secret_access_key=secret, region_name=target.region
        )
        if target.account and target.local is None:
            sts = session.client("sts", endpoint_url=_endpoint(target, "sts"), config=config())
            if sts.get_caller_identity()["Account"] != target.account:
                # no account id in the message: it ends up in CI logs
                where = f"stages.{target.stage}.account"
                raise PhasedoitError(
                    f"the AWS credentials in use are for another account than phases.yml's {where}"
                )
        _sessions[target] = session
        created[(target, "session")] += 1
    return _sessions[target]


def _endpoint(target: Target, service: str) -> str | None:
    """A stage's endpoint serves every service; AWS_ENDPOINT_URL_<SERVICE> variables boto3 reads itself."""
    if target.local is None and any(name.startswith("AWS_ENDPOINT_URL") for name in os.environ):
        return None
    return target.endpoint


def message(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", error))


def code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def translated(name: str = "CloudFormation") -> Iterator[None]:
    """AWS errors and transport faults become one-line PhasedoitErrors; `name`: the service called."""
    try:
        yield
    except botocore.exceptions.ClientError as e:
        raise PhasedoitError(message(e)) from None
    except botocore.exceptions.EndpointConnectionError as e:
        raise PhasedoitError(f"cannot reach {name} at {e.kwargs.get('endpoint_url')}") from None
    except botocore.parsers.ResponseParserError:
        raise PhasedoitError(f"{name} answered with an error page, not an API response (HTTP 500)") from None
    except botocore.exceptions.NoCredentialsError:
        raise PhasedoitError("no AWS credentials: set AWS_PROFILE, or run `aws configure`") from None
    except botocore.exceptions.NoRegionError:
        raise PhasedoitError(NO_REGION) from None
    except (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError) as e:
        raise PhasedoitError(f"{name} did not answer in time at {e.kwargs.get('endpoint_url')}") from None
    except botocore.exceptions.BotoCoreError as e:
        raise PhasedoitError(f"{name} request failed: {e}") from None
